"""DICOM-SEG of the lesion segment and a TID 1500 measurement report (SR) referencing it, via highdicom.

Built from typed highdicom parts, validated by their constructors, then written. The mask is
sampled for every source CT instance at that instance's own pixel positions, so the SEG frames are
aligned with the referenced images whatever the orientation of the mask's grid. Used by the Slicer
module and the viewer (after the radiologist's edits) and by ``jcs diagnose|quantify --dicom-seg``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.errors import InvalidDicomError
from pydicom.sr.codedict import codes
from pydicom.uid import UID, generate_uid

from jcs.errors import CorruptFileError, InputError
from jcs.io import CTVolume
from jcs.terminology import Code, lesion_spec

MANUFACTURER = "JCS Diagnosis"
MODEL_NAME = "JCS Diagnosis (Wu et al., IEEE TIP 2021)"
#: Quantities without a standard code carry local codes of this private scheme.
LOCAL_SCHEME = "99JCS"
PERCENT_OF_LUNG = hd.sr.CodedConcept("LUNGPCT", LOCAL_SCHEME, "Lesion volume as percentage of lung volume")
LESION_COUNT = hd.sr.CodedConcept("NLESION", LOCAL_SCHEME, "Number of lesions")
LESION_VOLUME_IN_LUNGS = hd.sr.CodedConcept("LUNGLESVOL", LOCAL_SCHEME, "Lesion volume within the lungs")
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
#: Type 2 Patient/General Study attributes the SEG and SR copy from their source; anonymised series
#: often omit them (COVID-CT-MD has no PatientName or PatientBirthDate), which DICOM reads as empty.
SOURCE_TYPE2_ATTRIBUTES = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "AccessionNumber",
)
#: SNOMED CT values of the case reading.
POSITIVE = hd.sr.CodedConcept("10828004", "SCT", "Positive")
NEGATIVE = hd.sr.CodedConcept("260385009", "SCT", "Negative")


@dataclass
class ReportValues:
    """Measurements of the SR from jcs.quantify and the engine (None when unknown). The segment's own
    volume is not among them: the export measures it on the mask it writes."""

    lesion_volume_in_lungs_ml: float | None
    percent_of_lung: float | None
    lesion_count: int
    positive_slice_count: int | None = None
    threshold: int | None = None
    #: The engine's case decision (positive when more than `threshold` slices are); None when unknown.
    case_positive: bool | None = None
    #: The same segmenter rule on the edited segmentation; None when unedited or decided by the classifier.
    reviewed_positive_slice_count: int | None = None
    reviewed_case_positive: bool | None = None

    @classmethod
    def from_summary(cls, summary: dict[str, Any], **reading: Any) -> ReportValues:
        """From a jcs.quantify summary (the fields of summary.csv) and the case reading's fields."""
        return cls(
            lesion_volume_in_lungs_ml=summary.get("opacification_volume_ml"),
            percent_of_lung=summary.get("opacification_percent"),
            lesion_count=int(summary.get("lesion_count") or 0),
            **reading,
        )


@dataclass
class ExportedFiles:
    """What :func:`export_seg_and_report` wrote, and the SEG frames as written."""

    seg_path: Path
    sr_path: Path
    frame_masks: np.ndarray
    source_sop_instance_uids: list[str]


def _concept(code: Code) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(code.value, code.scheme, code.meaning)


def read_source_series(files: list[Path], slice_count: int) -> list[pydicom.Dataset]:
    """Headers of the CT series among `files` with `slice_count` instances, sorted along the slice
    normal, checked to be referenceable (:func:`check_referenceable`)."""
    series: dict[str, list[pydicom.Dataset]] = defaultdict(list)
    for path in files:
        try:
            dataset = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, EOFError) as exc:
            raise CorruptFileError(f"cannot read the source DICOM file {path}: {exc}") from exc
        if "ImagePositionPatient" in dataset and "Rows" in dataset:
            for keyword in SOURCE_TYPE2_ATTRIBUTES:
                if keyword not in dataset:
                    setattr(dataset, keyword, "")  # in memory only; the source files are not touched
            series[str(dataset.get("SeriesInstanceUID", ""))].append(dataset)
    matching = [group for group in series.values() if len(group) == slice_count]
    if not matching:
        counts = {uid: len(group) for uid, group in series.items()}
        raise InputError(f"no source series has {slice_count} slices like the volume (found {counts})")
    if len(matching) > 1:
        raise InputError("several source series match the volume; give the folder of one CT series")
    datasets = matching[0]
    check_referenceable(datasets)
    orientation = np.array(datasets[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(orientation[:3], orientation[3:])
    return sorted(
        datasets, key=lambda ds: float(np.dot(normal, np.array(ds.ImagePositionPatient, dtype=float)))
    )


def check_source_series(ct: CTVolume) -> None:
    """Raise InputError unless a DICOM-SEG of `ct` can reference its source: a series of several
    single-frame DICOM files with valid identifiers (reads their headers only)."""
    if ct.dicom_files is None:
        raise InputError(f"DICOM-SEG export needs a DICOM series as input; {ct.path} is not DICOM")
    slices = ct.image.GetSize()[2] if ct.image.GetDimension() == 3 else 1
    if slices < 2 or len(ct.dicom_files) != slices:
        raise InputError(
            f"DICOM-SEG export needs a series of several single-frame CT slices; {ct.path} has "
            f"{len(ct.dicom_files)} file(s) for {slices} slice(s)"
        )
    read_source_series(ct.dicom_files, slices)


def check_referenceable(datasets: list[pydicom.Dataset]) -> None:
    """Refuse a series whose identifiers a SEG/SR cannot reference (over-anonymised or non-conformant
    files: empty or malformed UIDs, instances sharing one SOP Instance UID)."""
    first = datasets[0]
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        value = str(first.get(keyword) or "")
        if not UID(value).is_valid:
            raise InputError(
                f"the source series' {keyword} {value!r} is not a valid DICOM UID, so no DICOM-SEG can "
                "reference the series (was it anonymised by a tool that rewrote its UIDs?)"
            )
    instances = [str(ds.get("SOPInstanceUID") or "") for ds in datasets]
    invalid = [uid for uid in instances if not UID(uid).is_valid]
    if invalid:
        raise InputError(
            f"{len(invalid)} of {len(instances)} source instances have no valid SOP Instance UID "
            f"(e.g. {invalid[0]!r}), so no DICOM-SEG can reference them"
        )
    if len(set(instances)) != len(instances):
        raise InputError(
            "several source instances share one SOP Instance UID; a DICOM-SEG cannot reference them"
        )


def frame_masks(mask: sitk.Image, datasets: list[pydicom.Dataset]) -> np.ndarray:
    """(frames, rows, cols) masks: the 3-D `mask` sampled at each instance's pixel positions (LPS).

    A pixel (r, c) of an instance lies at mask index base + r * row_step + c * column_step; the
    three vectors must be whole voxels (to 0.05 voxel at the farthest pixel), so each frame is an
    exact copy of mask voxels, never interpolated.
    """
    array = sitk.GetArrayViewFromImage(mask)  # (K, J, I)
    index_to_lps = np.array(mask.GetDirection()).reshape(3, 3) @ np.diag(mask.GetSpacing())
    lps_to_index = np.linalg.inv(index_to_lps)
    mask_origin = np.array(mask.GetOrigin())
    frames = np.zeros((len(datasets), int(datasets[0].Rows), int(datasets[0].Columns)), np.uint8)
    for n, dataset in enumerate(datasets):
        rows, cols = int(dataset.Rows), int(dataset.Columns)
        orientation = np.array(dataset.ImageOrientationPatient, dtype=float)
        row_spacing, col_spacing = (float(v) for v in dataset.PixelSpacing)
        # IJK steps: moving down a row follows the column direction cosines (orientation[3:])
        base = lps_to_index @ (np.array(dataset.ImagePositionPatient, dtype=float) - mask_origin)
        row_step = lps_to_index @ (orientation[3:] * row_spacing)
        column_step = lps_to_index @ (orientation[:3] * col_spacing)
        vectors = np.stack([base, row_step, column_step])
        whole = np.rint(vectors)
        error = np.abs(vectors - whole) * np.array([[1.0], [rows - 1.0], [cols - 1.0]])
        if (error.sum(axis=0) > 0.05).any():
            raise InputError(
                f"source image {dataset.SOPInstanceUID} is not on the grid of the segmented volume"
            )
        if (rows, cols) != frames.shape[1:]:
            raise InputError(f"source image {dataset.SOPInstanceUID} differs in size from the series")
        start, down, across = whole.astype(int)
        ijk = (
            start[:, None, None]
            + down[:, None, None] * np.arange(rows)[None, :, None]
            + across[:, None, None] * np.arange(cols)[None, None, :]
        )
        upper = np.array(array.shape[::-1])[:, None, None]
        if (ijk < 0).any() or (ijk >= upper).any():
            raise InputError(f"source image {dataset.SOPInstanceUID} lies outside the segmented volume")
        frames[n] = array[ijk[2], ijk[1], ijk[0]] > 0
    return frames


def build_segmentation(
    datasets: list[pydicom.Dataset], masks: np.ndarray, engine: dict, edited: bool
) -> hd.seg.Segmentation:
    """The DICOM-SEG object (one binary segment, algorithm identification of the engine)."""
    spec = lesion_spec()
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


def _report_measurements(
    segment_volume_ml: float, values: ReportValues, algorithm: hd.sr.AlgorithmIdentification
) -> list[hd.sr.Measurement]:
    """The report's numeric measurements; values that are unknown are left out."""
    # (concept, value, UCUM unit code, unit meaning)
    quantities = [
        (codes.SCT.Volume, float(segment_volume_ml), "ml", "milliliter"),
        (LESION_VOLUME_IN_LUNGS, values.lesion_volume_in_lungs_ml, "ml", "milliliter"),
        (PERCENT_OF_LUNG, None if values.percent_of_lung is None else float(values.percent_of_lung),
         "%", "percent"),
        (LESION_COUNT, int(values.lesion_count), "{lesions}", "lesions"),
        (SLICE_COUNT, None if values.positive_slice_count is None else int(values.positive_slice_count),
         "{slices}", "slices"),
        (SLICE_THRESHOLD, None if values.threshold is None else int(values.threshold), "{slices}", "slices"),
        (REVIEWED_SLICE_COUNT, values.reviewed_positive_slice_count, "{slices}", "slices"),
    ]
    return [
        hd.sr.Measurement(
            name=name, value=value, unit=hd.sr.CodedConcept(unit, "UCUM", meaning), algorithm_id=algorithm
        )
        for name, value, unit, meaning in quantities
        if value is not None
    ]


def _report_readings(values: ReportValues) -> list[hd.sr.QualitativeEvaluation]:
    """The case readings (the engine's, and the segmenter rule's of an edit) that are known."""
    return [
        hd.sr.QualitativeEvaluation(name, POSITIVE if positive else NEGATIVE)
        for name, positive in (
            (CASE_READING, values.case_positive),
            (REVIEWED_CASE_READING, values.reviewed_case_positive),
        )
        if positive is not None
    ]


def build_report(
    datasets: list[pydicom.Dataset],
    segmentation: hd.seg.Segmentation,
    segment_volume_ml: float,
    values: ReportValues,
    engine: dict,
) -> hd.sr.Comprehensive3DSR:
    """TID 1500 measurement report referencing the SEG segment: the segment's volume, its part within
    the lungs and their % of the lung volume, counts, the positive-slice threshold and the engine's
    case reading (a qualitative evaluation); for an edited segmentation decided by the segmenter rule,
    also that rule's count and reading of the edit."""
    spec = lesion_spec()
    algorithm = hd.sr.AlgorithmIdentification(
        name="JCS Diagnosis", version=str(engine.get("engine_version") or "unknown")
    )
    readings = _report_readings(values)
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
        measurements=_report_measurements(segment_volume_ml, values, algorithm),
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


def export_seg_and_report(
    *,
    mask: sitk.Image,
    source_files: list[Path],
    output_dir: Path,
    engine: dict,
    edited: bool,
    values: ReportValues,
) -> ExportedFiles:
    """Write `lesions.seg.dcm` and `lesions.sr.dcm` into `output_dir`.

    ``mask``: the 3-D lesion mask (non-zero = lesion) with the geometry of the CT it was drawn on;
    ``source_files``: that CT's DICOM files (other files among them are ignored); ``engine``: the
    engine version and weights (``results.json`` layout) for the algorithm identification.
    """
    if mask.GetDimension() != 3:
        raise InputError("DICOM-SEG export needs a 3-D lesion mask")
    datasets = read_source_series(source_files, mask.GetSize()[2])
    masks = frame_masks(mask, datasets)
    voxel_ml = float(np.prod(mask.GetSpacing())) / 1000.0
    segment_volume_ml = np.count_nonzero(sitk.GetArrayViewFromImage(mask)) * voxel_ml
    try:
        segmentation = build_segmentation(datasets, masks, engine, edited)
        report = build_report(datasets, segmentation, segment_volume_ml, values, engine)
    except (AttributeError, TypeError, ValueError) as exc:  # highdicom's checks of the source instances
        series = datasets[0].SeriesInstanceUID
        raise InputError(f"no DICOM-SEG/SR can reference the source series {series}: {exc}") from exc
    output_dir.mkdir(parents=True, exist_ok=True)
    seg_path = output_dir / "lesions.seg.dcm"
    sr_path = output_dir / "lesions.sr.dcm"
    segmentation.save_as(seg_path)
    report.save_as(sr_path)
    return ExportedFiles(seg_path, sr_path, masks, [str(ds.SOPInstanceUID) for ds in datasets])
