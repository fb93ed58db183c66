"""The whole reading of one case: :func:`run_case` gives a typed :class:`CaseResult`.

Steps: read the CT (:func:`jcs.io.read_ct`), run the models (:class:`jcs.inference.DiagnosisEngine`),
find the lungs once (:func:`jcs.lung.find_lungs`; the segmenter decision rule gets them before the
engine runs, everything else after), drop predicted opacities far from the lungs (a copy: the engine's
:class:`~jcs.inference.DiagnosisResult` is left as it was), quantify (:func:`jcs.quantify.quantify`)
and assemble the reading. ``jcs diagnose``, its cohort runner, the Slicer module and the viewer all
read cases through here, so the Python API and the command line give the same answer.

:class:`CaseResult` is the ``results.json`` layout as dataclasses: ``to_json()`` / ``from_json()``,
and :meth:`CaseResult.write_tables`, the one writer of the CSV tables.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import jcs
from jcs.decision import scaled_threshold
from jcs.options import DecisionRule, DiagnosisOptions, Precision, SegmentPolicy
from jcs.outputs import write_records_csv, write_summary_csv
from jcs.quantify import LESION_FIELDS, SLICE_FIELDS, Quantification, quantify

if TYPE_CHECKING:
    from jcs.inference import CancelCallback, DiagnosisEngine, DiagnosisResult
    from jcs.io import CTVolume
    from jcs.lung import FoundLungs

#: ``progress(stage, fraction)``: ``fraction`` of the whole reading (0-1), reached at the end of ``stage``.
RunProgress = Callable[[str, float], None]
SummaryValue = bool | int | float | str | None

#: Share of the whole reading taken by each stage (engine stages, then the pipeline's).
STAGE_SPAN = {
    "lungs": (0.0, 0.05),
    "prepare": (0.0, 0.05),
    "classify": (0.05, 0.55),
    "segment": (0.55, 0.85),
    "done": (0.85, 0.85),
    "quantify": (0.85, 1.0),
}
#: Columns of results.csv (one row per axial slice).
RESULTS_CSV_FIELDS = (
    "index",
    "probability",
    "positive",
    "opacification_area_px",
    "opacification_area_mm2",
    "lung_area_mm2",
    "position_z_mm",
    "file",
)
#: The case's fields that open summary.csv (the decision), before the quantification's.
SUMMARY_DECISION_FIELDS = (
    "positive",
    "decision",
    "positive_slice_count",
    "threshold",
    "classifier_positive_slice_count",
    "min_lung_fraction",
    "suggested_threshold",
    "segmented",
    "segment_policy",
)
TABLE_FILES = ("results.csv", "summary.csv", "lesions.csv", "slices.csv")
INTENDED_USE = "Research use only. Not a medical device; not for clinical diagnosis."
SLICE_ORDER = "axial grid, index 0 = most inferior"


def _default_outputs() -> dict[str, Any]:
    return {
        "heatmap": "heatmap.nrrd",
        "lesions": "lesions.nrrd",
        "lungs": "lungs.nrrd (0 outside, 1 right lung, 2 left lung)",
        "tables": list(TABLE_FILES),
    }


# -- the reading as dataclasses ------------------------------------------------------------------


@dataclass(frozen=True)
class InputInfo:
    """The input CT as read (results.json ``input``)."""

    path: str
    is_hu: bool
    size: list[int]
    spacing_mm: list[float]
    origin_mm: list[float]
    direction: list[float]
    series_instance_uid: str | None
    skipped_series: list[str]
    axial_slices: int
    slice_order: str = SLICE_ORDER

    @classmethod
    def from_ct(cls, ct: CTVolume, axial_slices: int) -> InputInfo:
        image = ct.image
        return cls(
            path=str(ct.path),
            is_hu=ct.is_hu,
            size=list(image.GetSize()),
            spacing_mm=list(image.GetSpacing()),
            origin_mm=list(image.GetOrigin()),
            direction=list(image.GetDirection()),
            series_instance_uid=ct.series_instance_uid,
            skipped_series=list(ct.skipped_series),
            axial_slices=axial_slices,
        )


@dataclass(frozen=True)
class CaseDecision:
    """The case's reading (results.json ``case``); ``min_lung_fraction`` only under the segmenter rule."""

    positive: bool
    positive_slice_count: int
    threshold: int
    decision: DecisionRule
    decision_rule: str
    classifier_positive_slice_count: int
    suggested_threshold: int
    segmented: bool
    segment_policy: SegmentPolicy
    min_lung_fraction: float | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "positive": self.positive,
            "positive_slice_count": self.positive_slice_count,
            "threshold": self.threshold,
            "decision": str(self.decision),
            "decision_rule": self.decision_rule,
            "classifier_positive_slice_count": self.classifier_positive_slice_count,
        }
        if self.min_lung_fraction is not None:
            data["min_lung_fraction"] = self.min_lung_fraction
        data.update(
            suggested_threshold=self.suggested_threshold,
            segmented=self.segmented,
            segment_policy=str(self.segment_policy),
        )
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CaseDecision:
        values: dict[str, Any] = {f.name: data.get(f.name) for f in fields(cls)}
        values["decision"] = DecisionRule(values["decision"])
        values["segment_policy"] = SegmentPolicy(values["segment_policy"])
        return cls(**values)


@dataclass(frozen=True)
class SliceRow:
    """One axial slice: the one slice-row schema (results.json ``slices``, results.csv and slices.csv).

    ``positive`` is the slice's decision under the rule the case was decided by; ``file`` the DICOM
    file of the slice (DICOM inputs). Millimetre fields are None when the spacing is unknown.
    """

    index: int
    probability: float
    positive: bool
    position_z_mm: float | None = None
    opacification_area_mm2: float | None = None
    lung_area_mm2: float | None = None
    opacification_area_px: int = 0
    lung_area_px: int = 0
    opacified_lung_fraction: float = 0.0
    file: str | None = None

    #: slices.csv names two columns after the quantification's table (``jcs quantify`` writes it too).
    SLICES_CSV_NAMES = {"slice_index": "index", "classifier_probability": "probability"}

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"index": self.index, "probability": self.probability}
        data["positive"] = self.positive
        if self.file is not None:
            data["file"] = self.file
        data.update((f.name, getattr(self, f.name)) for f in fields(self)[3:] if f.name != "file")
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SliceRow:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})

    def slices_csv_record(self) -> dict[str, Any]:
        """The row of slices.csv (:data:`jcs.quantify.SLICE_FIELDS`)."""
        data = self.to_json()
        return {name: data[self.SLICES_CSV_NAMES.get(name, name)] for name in SLICE_FIELDS}


@dataclass(frozen=True)
class LesionRow:
    """One lesion (3-D connected component); fields and units as in :mod:`jcs.quantify`."""

    lesion_id: int
    volume_ml: float | None
    voxel_count: int
    largest_axial_area_mm2: float | None
    largest_axial_area_px: int
    bbox_size_x_mm: float | None
    bbox_size_y_mm: float | None
    bbox_size_z_mm: float | None
    centroid_lps_x_mm: float | None
    centroid_lps_y_mm: float | None
    centroid_lps_z_mm: float | None
    lung_side: str | None
    zone: str | None
    lobe: str | None
    peripheral_fraction: float | None
    location: str | None
    mean_hu: float | None
    median_hu: float | None
    ground_glass_fraction: float | None
    consolidation_fraction: float | None
    first_slice: int
    last_slice: int
    peak_gradcam: float | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LesionRow:
        values: dict[str, Any] = {f.name: data.get(f.name) for f in fields(cls)}
        return cls(**values)


@dataclass
class CaseResult:
    """One case's reading: the ``results.json`` layout as dataclasses, plus the arrays for writers.

    ``summary`` is the quantification's case summary (:mod:`jcs.quantify` field names, values None when
    not measurable). The arrays (axial grid ``(Z, Y, X)``) and the CT are kept for writers and viewers
    but are not part of the JSON (nor of equality).
    """

    engine_version: str
    input: InputInfo
    case: CaseDecision
    slices: list[SliceRow]
    weights: dict[str, dict[str, str]]
    device: str
    precision: Precision
    timings_s: dict[str, float]
    notes: list[str]
    summary: dict[str, SummaryValue]
    lesions: list[LesionRow]
    outputs: dict[str, Any] = field(default_factory=_default_outputs)
    intended_use: str = INTENDED_USE
    heatmap: np.ndarray | None = field(default=None, compare=False, repr=False)
    lesion_mask: np.ndarray | None = field(default=None, compare=False, repr=False)
    lungs: np.ndarray | None = field(default=None, compare=False, repr=False)
    slice_probabilities: np.ndarray | None = field(default=None, compare=False, repr=False)
    ct: CTVolume | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict in the results.json layout."""
        return {
            "engine_version": self.engine_version,
            "input": asdict(self.input),
            "case": self.case.to_json(),
            "slices": [row.to_json() for row in self.slices],
            "weights": {kind: dict(info) for kind, info in self.weights.items()},
            "device": self.device,
            "precision": str(self.precision),
            "timings_s": dict(self.timings_s),
            "notes": list(self.notes),
            "summary": dict(self.summary),
            "lesions": [row.to_json() for row in self.lesions],
            "outputs": json.loads(json.dumps(self.outputs)),
            "intended_use": self.intended_use,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CaseResult:
        """The reading of a results.json dict (no arrays)."""
        return cls(
            engine_version=data["engine_version"],
            input=InputInfo(**data["input"]),
            case=CaseDecision.from_json(data["case"]),
            slices=[SliceRow.from_json(row) for row in data["slices"]],
            weights={kind: dict(info) for kind, info in data.get("weights", {}).items()},
            device=data["device"],
            precision=Precision(data["precision"]),
            timings_s=dict(data.get("timings_s", {})),
            notes=list(data.get("notes", [])),
            summary=dict(data.get("summary", {})),
            lesions=[LesionRow.from_json(row) for row in data.get("lesions", [])],
            outputs=json.loads(json.dumps(data.get("outputs", _default_outputs()))),
            intended_use=data.get("intended_use", INTENDED_USE),
        )

    @classmethod
    def read(cls, path: str | Path) -> CaseResult:
        """The reading of a results.json file."""
        with open(path, encoding="utf-8") as handle:
            return cls.from_json(json.load(handle))

    def with_quantification(
        self, quantification: Quantification, lesion_mask: np.ndarray, notes: Sequence[str] = ()
    ) -> CaseResult:
        """This reading with the lesions re-measured (an edited mask, :func:`jcs.quantify.quantify`): the
        summary, lesion rows and the slices' measured fields replaced, the case decision and the slice
        probabilities kept, ``notes`` added."""
        data = quantification.to_dict()
        by_index = {row["slice_index"]: row for row in data["slices"]}
        slices = [
            replace(row, **{k: v for k, v in by_index.get(row.index, {}).items() if hasattr(row, k)})
            for row in self.slices
        ]
        return replace(
            self,
            slices=slices,
            summary=data["summary"],
            lesions=[LesionRow.from_json(row) for row in data["lesions"]],
            notes=[*self.notes, *notes],
            timings_s=dict(self.timings_s),
            outputs=json.loads(json.dumps(self.outputs)),
            lesion_mask=lesion_mask,
        )

    def summary_quantities(self) -> dict[str, Any]:
        """The rows of summary.csv: the decision, then the quantification's summary."""
        case = self.case.to_json()
        decision = {key: case[key] for key in SUMMARY_DECISION_FIELDS if key in case}
        return {**decision, **self.summary}

    def write_tables(self, folder: str | Path) -> list[Path]:
        """Write results.csv, summary.csv (``quantity,value,unit``), lesions.csv and slices.csv into
        ``folder``: the one table writer (the CLI and the viewer both use it). Returns the paths."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        slices = [row.to_json() for row in self.slices]
        write_records_csv(out / "results.csv", RESULTS_CSV_FIELDS, slices)
        write_summary_csv(out / "summary.csv", self.summary_quantities())
        write_records_csv(out / "lesions.csv", LESION_FIELDS, (row.to_json() for row in self.lesions))
        write_records_csv(out / "slices.csv", SLICE_FIELDS, (row.slices_csv_record() for row in self.slices))
        return [out / name for name in TABLE_FILES]

    def write_images(self, folder: str | Path) -> None:
        """Write heatmap.nrrd, lesions.nrrd and lungs.nrrd on the input's grid (needs the arrays and CT)."""
        import SimpleITK as sitk

        if self.ct is None or self.heatmap is None or self.lesion_mask is None or self.lungs is None:
            raise ValueError("this reading holds no arrays (read from JSON?): nothing to write as images")
        out = Path(folder)
        for name, array, dtype in (
            ("heatmap", self.heatmap, np.float32),
            ("lesions", self.lesion_mask, np.uint8),
            ("lungs", self.lungs, np.uint8),
        ):
            sitk.WriteImage(self.ct.from_axial(array.astype(dtype)), str(out / f"{name}.nrrd"), True)

    def write_json(self, folder: str | Path) -> Path:
        """Write results.json into ``folder``."""
        path = Path(folder) / "results.json"
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(self.to_json(), handle, indent=2, allow_nan=False)
        return path

    def write_outputs(self, folder: str | Path, *, dicom_seg: bool = False) -> None:
        """Every output of ``jcs diagnose`` into ``folder`` (a staging folder: see :mod:`jcs.outputs`):
        images, tables, with ``dicom_seg`` the DICOM-SEG and SR, and results.json last."""
        out = Path(folder)
        t0 = time.perf_counter()
        self.write_images(out)
        self.write_tables(out)
        self.timings_s["write"] = time.perf_counter() - t0
        if dicom_seg:
            t0 = time.perf_counter()
            self.export_dicom_seg(out)
            self.timings_s["dicom_seg"] = time.perf_counter() - t0
        self.write_json(out)

    def export_dicom_seg(self, folder: Path) -> None:
        """lesions.seg.dcm and lesions.sr.dcm (:mod:`jcs.dicomseg`) of this unedited reading."""
        from jcs.dicomseg import ReportValues, export_seg_and_report

        if self.ct is None or self.lesion_mask is None:
            raise ValueError("this reading holds no lesion mask: nothing to export")
        values = ReportValues.from_summary(
            dict(self.summary),
            positive_slice_count=self.case.positive_slice_count,
            threshold=self.case.threshold,
            case_positive=self.case.positive,
        )
        exported = export_seg_and_report(
            mask=self.ct.from_axial(self.lesion_mask.astype(np.uint8)),
            source_files=list(self.ct.dicom_files or []),
            output_dir=folder,
            engine=self.to_json(),
            edited=False,
            values=values,
        )
        self.outputs["dicom_seg"] = exported.seg_path.name
        self.outputs["dicom_sr"] = exported.sr_path.name


# -- running a case --------------------------------------------------------------------------------


@dataclass
class CaseQuantification:
    """The pipeline's step after the engine: the lesion mask kept, its quantification and notes."""

    lesion_mask: np.ndarray
    quantification: Quantification
    notes: list[str]


def quantify_case(
    ct: CTVolume, result: DiagnosisResult, lungs: FoundLungs, lesion_margin_mm: float
) -> CaseQuantification:
    """Quantify the engine's lesions within ``lungs``; ``result`` is not changed.

    On HU volumes, predicted lesion voxels farther than ``lesion_margin_mm`` from the lungs are left
    out of the kept mask (negative: keep all), with a note saying how much.
    """
    from jcs.lung import drop_far_lesions

    notes: list[str] = []
    if lungs.problem is not None:
        notes.append(f"{lungs.problem}; lung-relative fields are empty")
    axial = ct.axial_image()
    sx, sy, sz = axial.GetSpacing()
    lesion_mask = result.lesion_mask.copy()
    dropped = drop_far_lesions(lesion_mask, lungs.labels, (sz, sy, sx), lesion_margin_mm) if ct.is_hu else 0
    if dropped:
        notes.append(
            f"{dropped * sx * sy * sz / 1000:.1f} mL of predicted opacification lay more than "
            f"{lesion_margin_mm:g} mm from the lungs and was dropped (--lesion-margin-mm)"
        )
    quantification = quantify(
        lesion_mask,
        lungs.labels,
        axial,
        hu=ct.axial_array() if ct.is_hu else None,
        slice_probabilities=result.slice_probabilities,
        heatmap=result.heatmap,
        spacing_known=ct.is_hu,
    )
    return CaseQuantification(lesion_mask, quantification, notes)


def _slice_spacing(ct: CTVolume) -> float | None:
    if ct.is_2d or not ct.is_hu:
        return None
    return float(ct.axial_image().GetSpacing()[2])


def _slice_rows(ct: CTVolume, result: DiagnosisResult, quantified: list[dict[str, Any]]) -> list[SliceRow]:
    by_index = {row["slice_index"]: row for row in quantified}
    files = ct.dicom_files or []
    rows = []
    for index, (probability, positive) in enumerate(
        zip(result.slice_probabilities.tolist(), result.slice_positive.tolist(), strict=True)
    ):
        extra = {k: v for k, v in by_index.get(index, {}).items() if k not in SliceRow.SLICES_CSV_NAMES}
        file = files[index].name if index < len(files) else None
        rows.append(SliceRow(index=index, probability=probability, positive=positive, file=file, **extra))
    return rows


def _case_decision(ct: CTVolume, result: DiagnosisResult, engine: DiagnosisEngine) -> CaseDecision:
    from jcs.wording import rule_sentence

    by_segmenter = result.decision == DecisionRule.SEGMENTER
    return CaseDecision(
        positive=bool(result.positive),
        positive_slice_count=int(result.positive_slice_count),
        threshold=int(result.threshold),
        decision=DecisionRule(result.decision),
        decision_rule=rule_sentence(result.decision, result.min_lung_fraction),
        classifier_positive_slice_count=result.classifier_positive_count,
        suggested_threshold=scaled_threshold(len(result.slice_probabilities), _slice_spacing(ct)),
        segmented=bool(result.segmented),
        segment_policy=SegmentPolicy(engine.segment_policy),
        min_lung_fraction=result.min_lung_fraction if by_segmenter else None,
    )


def assemble_case(
    ct: CTVolume,
    result: DiagnosisResult,
    engine: DiagnosisEngine,
    lungs: FoundLungs,
    kept: CaseQuantification,
    timings: dict[str, float],
) -> CaseResult:
    """The :class:`CaseResult` of an engine result and its quantification."""
    data = kept.quantification.to_dict()
    return CaseResult(
        engine_version=jcs.__version__,
        input=InputInfo.from_ct(ct, len(result.slice_probabilities)),
        case=_case_decision(ct, result, engine),
        slices=_slice_rows(ct, result, data["slices"]),
        weights=result.weights,
        device=result.device,
        precision=Precision(result.precision),
        timings_s={**result.timings_s, **timings},
        notes=[*ct.notes, *result.notes, *kept.notes],
        summary=data["summary"],
        lesions=[LesionRow.from_json(row) for row in data["lesions"]],
        heatmap=result.heatmap,
        lesion_mask=kept.lesion_mask,
        lungs=lungs.labels,
        slice_probabilities=result.slice_probabilities,
        ct=ct,
    )


def stage_progress(progress: RunProgress | None) -> Callable[[str, float], None]:
    """An engine progress callback (fraction of a stage) reporting the fraction of the whole reading."""

    def report(stage: str, fraction: float) -> None:
        if progress is not None:
            start, stop = STAGE_SPAN.get(stage, (0.95, 1.0))
            progress(stage, start + (stop - start) * min(max(fraction, 0.0), 1.0))

    return report


def diagnose_ct(
    engine: DiagnosisEngine,
    ct: CTVolume,
    *,
    lesion_margin_mm: float,
    progress: RunProgress | None = None,
    should_cancel: CancelCallback | None = None,
    read_s: float = 0.0,
) -> CaseResult:
    """The reading of a CT already read, with a loaded engine (the cohort runner reuses one engine)."""
    from jcs.lung import find_lungs

    t_start = time.perf_counter() - read_s
    timings: dict[str, float] = {"read": read_s}
    report = stage_progress(progress)
    lungs = None
    t0 = time.perf_counter()
    if engine.decision == DecisionRule.SEGMENTER:  # the rule needs them: found once, before the engine
        lungs = find_lungs(ct)
        report("lungs", 1.0)
    lungs_s = time.perf_counter() - t0
    result = engine.diagnose(ct, progress=report, should_cancel=should_cancel, lungs=lungs)
    report("quantify", 0.0)
    t0 = time.perf_counter()
    if lungs is None:
        lungs = find_lungs(ct)
    kept = quantify_case(ct, result, lungs, lesion_margin_mm)
    timings["quantify"] = time.perf_counter() - t0
    if engine.decision == DecisionRule.SEGMENTER:
        timings["lungs"] = lungs_s
    case = assemble_case(ct, result, engine, lungs, kept, timings)
    case.timings_s["total"] = time.perf_counter() - t_start
    report("quantify", 1.0)
    return case


def load_engine(options: DiagnosisOptions) -> DiagnosisEngine:
    """The engine of ``options`` with registry weights (defaults: the bundled ones)."""
    from jcs.inference import DiagnosisEngine

    return DiagnosisEngine.from_registry(options.classifier, options.segmenter, **options.engine_kwargs())


def run_case(
    source: str | Path | CTVolume,
    *,
    engine: DiagnosisEngine | None = None,
    on_progress: RunProgress | None = None,
    should_cancel: CancelCallback | None = None,
    **options: Any,
) -> CaseResult:
    """Read one case (a CT file, DICOM folder, 2-D slice or a :class:`jcs.io.CTVolume`) as ``jcs
    diagnose`` does; ``options`` are :class:`jcs.options.DiagnosisOptions` fields (the CLI's defaults).

    ``engine`` reuses loaded models (its options then stand for the engine's); ``on_progress(stage,
    fraction)`` reports the fraction of the whole reading; ``should_cancel()`` is polled between batches.
    (The ``progress`` option is the command line's report style and does nothing here.)
    """
    from jcs.io import CTVolume, read_ct

    chosen = DiagnosisOptions(**options)
    engine_options = sorted(set(options) & {"classifier", "segmenter", *chosen.engine_kwargs()})
    if engine is not None and engine_options:
        given = ", ".join(engine_options)
        raise ValueError(f"{given}: options of a new engine; the given engine has its own")
    t0 = time.perf_counter()
    ct = source if isinstance(source, CTVolume) else read_ct(source)
    if chosen.dicom_seg:
        from jcs.dicomseg import check_source_series

        check_source_series(ct)  # before the models load: a refused input costs nothing
    read_s = time.perf_counter() - t0
    if engine is None:
        engine = load_engine(chosen)
    return diagnose_ct(
        engine,
        ct,
        lesion_margin_mm=chosen.lesion_margin_mm,
        progress=on_progress,
        should_cancel=should_cancel,
        read_s=read_s,
    )
