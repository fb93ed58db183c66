"""DICOM-SEG of the lesion segment and a TID 1500 measurement report (SR) referencing it, via highdicom.

Built from typed highdicom parts, validated by their constructors, then written. The mask is
sampled for every source CT instance at that instance's own pixel positions, so the SEG frames are
aligned with the referenced images whatever the volume's IJK orientation.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from .terminology import Code, lesionSpec

MANUFACTURER = "JCS Diagnosis"
MODEL_NAME = "JCS Diagnosis (Wu et al., IEEE TIP 2021)"
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])
#: Quantities without a standard code carry local codes of this private scheme.
LOCAL_SCHEME = "99JCS"
PERCENT_OF_LUNG = hd.sr.CodedConcept("LUNGPCT", LOCAL_SCHEME, "Lesion volume as percentage of lung volume")
LESION_COUNT = hd.sr.CodedConcept("NLESION", LOCAL_SCHEME, "Number of lesions")
SLICE_COUNT = hd.sr.CodedConcept("NPOSSLICE", LOCAL_SCHEME, "Number of COVID-19 positive slices")
SLICE_THRESHOLD = hd.sr.CodedConcept(
    "POSSLICETHR", LOCAL_SCHEME, "COVID-19 positive slice threshold (positive case above it)"
)
CASE_READING = hd.sr.CodedConcept("CASEREAD", LOCAL_SCHEME, "Automated COVID-19 case reading")
#: The engine's segmenter rule re-applied to a segmentation a user edited (the exported one).
REVIEWED_SLICE_COUNT = hd.sr.CodedConcept(
    "NPOSSLICEREV", LOCAL_SCHEME, "COVID-19 positive slices of the reviewed segmentation"
)
REVIEWED_CASE_READING = hd.sr.CodedConcept(
    "CASEREADREV", LOCAL_SCHEME, "COVID-19 case reading of the reviewed segmentation"
)
#: SNOMED CT values of the case reading.
POSITIVE = hd.sr.CodedConcept("10828004", "SCT", "Positive")
NEGATIVE = hd.sr.CodedConcept("260385009", "SCT", "Negative")


@dataclass
class ReportValues:
    """Measurements of the SR, each from jcs.quantify / the engine (None when unknown)."""

    lesionVolumeMl: float
    percentOfLung: float | None
    lesionCount: int
    positiveSliceCount: int | None
    threshold: int | None = None
    #: The engine's case decision (positive when more than `threshold` slices are); None when unknown.
    casePositive: bool | None = None
    #: The same segmenter rule on the edited segmentation; None when unedited or decided by the classifier.
    reviewedPositiveSliceCount: int | None = None
    reviewedCasePositive: bool | None = None


@dataclass
class ExportedFiles:
    """Paths written by :func:`exportSegAndReport`."""

    segPath: Path
    srPath: Path
    frameMasks: np.ndarray
    sourceSopInstanceUids: list[str]

    def __getitem__(self, key: str):
        return getattr(self, key)


def _concept(code: Code) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(code.value, code.scheme, code.meaning)


def readSourceSeries(files: list[Path], sliceCount: int) -> list[pydicom.Dataset]:
    """The CT series among `files` with `sliceCount` instances, sorted along the slice normal."""
    series: dict[str, list[pydicom.Dataset]] = defaultdict(list)
    for path in files:
        dataset = pydicom.dcmread(path)
        if "ImagePositionPatient" in dataset and "PixelData" in dataset:
            series[str(dataset.SeriesInstanceUID)].append(dataset)
    matching = [group for group in series.values() if len(group) == sliceCount]
    if not matching:
        counts = {uid: len(group) for uid, group in series.items()}
        raise ValueError(f"no source series has {sliceCount} slices like the volume (found {counts})")
    if len(matching) > 1:
        raise ValueError("several source series match the volume; give the folder of one CT series")
    datasets = matching[0]
    orientation = np.array(datasets[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(orientation[:3], orientation[3:])
    return sorted(
        datasets, key=lambda ds: float(np.dot(normal, np.array(ds.ImagePositionPatient, dtype=float)))
    )


def frameMasks(mask: np.ndarray, volumeIjkToRas: np.ndarray, datasets: list[pydicom.Dataset]) -> np.ndarray:
    """(frames, rows, cols) masks: `mask` (K, J, I on the volume grid) sampled at each instance's pixels."""
    rasToIjk = np.linalg.inv(volumeIjkToRas)
    frames = []
    for dataset in datasets:
        rows, cols = int(dataset.Rows), int(dataset.Columns)
        orientation = np.array(dataset.ImageOrientationPatient, dtype=float)
        rowSpacing, colSpacing = (float(v) for v in dataset.PixelSpacing)
        origin = np.array(dataset.ImagePositionPatient, dtype=float)
        r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        lps = (
            origin[:, None]
            + np.outer(orientation[:3], c.ravel() * colSpacing)
            + np.outer(orientation[3:], r.ravel() * rowSpacing)
        )
        ras = np.vstack([_RAS_TO_LPS @ lps, np.ones(lps.shape[1])])
        ijk = (rasToIjk @ ras)[:3]
        index = np.rint(ijk)
        if np.abs(ijk - index).max() > 0.05:
            raise ValueError(
                f"source image {dataset.SOPInstanceUID} is not on the grid of the segmented volume"
            )
        i, j, k = index.astype(int)
        if (
            i.min() < 0
            or j.min() < 0
            or k.min() < 0
            or i.max() >= mask.shape[2]
            or j.max() >= mask.shape[1]
            or k.max() >= mask.shape[0]
        ):
            raise ValueError(f"source image {dataset.SOPInstanceUID} lies outside the segmented volume")
        frames.append(mask[k, j, i].reshape(rows, cols))
    return np.stack(frames).astype(np.uint8)


def buildSegmentation(
    datasets: list[pydicom.Dataset], masks: np.ndarray, engine: dict, edited: bool
) -> hd.seg.Segmentation:
    """The DICOM-SEG object (one binary segment, algorithm identification of the engine)."""
    spec = lesionSpec()
    weights = engine.get("weights", {})
    parameters = {
        f"{kind} weights": f"{info.get('name', '')} sha256 {info.get('sha256', '')[:16]}"
        for kind, info in weights.items()
        if isinstance(info, dict)
    }
    algorithm = hd.AlgorithmIdentificationSequence(
        name="JCS Diagnosis",
        family=codes.cid7162.ArtificialIntelligence,
        version=str(engine.get("engine_version") or "unknown"),
        parameters=parameters or None,
    )
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=spec.name,
        segmented_property_category=_concept(spec.category),
        segmented_property_type=_concept(spec.type),
        algorithm_type=(
            hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC
            if edited
            else hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
        ),
        algorithm_identification=algorithm,
        anatomic_regions=[_concept(spec.region)] if spec.region else None,
    )
    return hd.seg.Segmentation(
        source_images=datasets,
        pixel_array=masks,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=generate_uid(),
        series_number=901,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=MODEL_NAME,
        software_versions=str(engine.get("engine_version") or "unknown"),
        device_serial_number="none",
        series_description="JCS COVID-19 lesions" + (" (edited)" if edited else ""),
        content_description="COVID-19 lesion segmentation",
        content_label="JCS_LESIONS",
        omit_empty_frames=bool(masks.any()),
    )


def buildReport(
    datasets: list[pydicom.Dataset], segmentation: hd.seg.Segmentation, values: ReportValues, engine: dict
) -> hd.sr.Comprehensive3DSR:
    """TID 1500 measurement report referencing the SEG segment: lesion volume, % of lung, counts, the
    positive-slice threshold and the engine's case reading (a qualitative evaluation); for an edited
    segmentation decided by the segmenter rule, also that rule's count and reading of the edit."""
    spec = lesionSpec()
    algorithm = hd.sr.AlgorithmIdentification(
        name="JCS Diagnosis", version=str(engine.get("engine_version") or "unknown")
    )
    # (concept, value, UCUM unit code, unit meaning); values that are unknown are left out
    quantities = [
        (codes.SCT.Volume, float(values.lesionVolumeMl), "ml", "milliliter"),
        (PERCENT_OF_LUNG, None if values.percentOfLung is None else float(values.percentOfLung),
         "%", "percent"),
        (LESION_COUNT, int(values.lesionCount), "{lesions}", "lesions"),
        (SLICE_COUNT, None if values.positiveSliceCount is None else int(values.positiveSliceCount),
         "{slices}", "slices"),
        (SLICE_THRESHOLD, None if values.threshold is None else int(values.threshold), "{slices}", "slices"),
        (REVIEWED_SLICE_COUNT, values.reviewedPositiveSliceCount, "{slices}", "slices"),
    ]
    measurements = [
        hd.sr.Measurement(
            name=name, value=value, unit=hd.sr.CodedConcept(unit, "UCUM", meaning), algorithm_id=algorithm
        )
        for name, value, unit, meaning in quantities
        if value is not None
    ]
    readings = [
        hd.sr.QualitativeEvaluation(name, POSITIVE if positive else NEGATIVE)
        for name, positive in (
            (CASE_READING, values.casePositive),
            (REVIEWED_CASE_READING, values.reviewedCasePositive),
        )
        if positive is not None
    ]
    group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=spec.name),
        referenced_segment=hd.sr.ReferencedSegment(
            sop_class_uid=segmentation.SOPClassUID,
            sop_instance_uid=segmentation.SOPInstanceUID,
            segment_number=1,
            source_series=hd.sr.SourceSeriesForSegmentation(datasets[0].SeriesInstanceUID),
        ),
        finding_type=_concept(spec.type),
        finding_sites=[hd.sr.FindingSite(_concept(spec.region))] if spec.region else None,
        measurements=measurements,
        qualitative_evaluations=readings or None,
    )
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(), name="JCS Diagnosis", manufacturer_name=MANUFACTURER, model_name=MODEL_NAME
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.LN.CTChestReport,
        imaging_measurements=[group],
    )
    document = hd.sr.Comprehensive3DSR(
        evidence=[*datasets, segmentation],
        content=report,
        series_instance_uid=generate_uid(),
        series_number=902,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        series_description="JCS COVID-19 lesion measurements",
    )
    scheme = pydicom.Dataset()
    scheme.CodingSchemeDesignator = LOCAL_SCHEME
    scheme.CodingSchemeName = "JCS Diagnosis local codes"
    scheme.CodingSchemeResponsibleOrganization = MANUFACTURER
    existing = list(document.get("CodingSchemeIdentificationSequence", []))
    document.CodingSchemeIdentificationSequence = [*existing, scheme]
    return document


def exportSegAndReport(
    *,
    mask: np.ndarray,
    volumeIjkToRas: np.ndarray,
    sourceFiles: list[Path],
    outputDir: Path,
    engine: dict,
    edited: bool,
    values: ReportValues,
) -> ExportedFiles:
    """Write `lesions.seg.dcm` and `lesions.sr.dcm` into `outputDir` and return their paths."""
    datasets = readSourceSeries(sourceFiles, mask.shape[0])
    masks = frameMasks(mask, volumeIjkToRas, datasets)
    segmentation = buildSegmentation(datasets, masks, engine, edited)
    report = buildReport(datasets, segmentation, values, engine)
    outputDir.mkdir(parents=True, exist_ok=True)
    segPath = outputDir / "lesions.seg.dcm"
    srPath = outputDir / "lesions.sr.dcm"
    segmentation.save_as(segPath)
    report.save_as(srPath)
    return ExportedFiles(segPath, srPath, masks, [str(ds.SOPInstanceUID) for ds in datasets])
