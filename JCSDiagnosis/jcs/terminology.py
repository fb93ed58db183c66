"""Names, colours and standard codes of the result segments, read from the bundled `*.term.json`.

The terminology file (Slicer/dcmqi segment-context schema) is the single source of the codes: the
segments' Slicer terminology tags and the DICOM-SEG segment descriptions are both built from it.
Codes: lesion = "Abnormal opacity" (DCM 112033, CID 6101) in category "Morphologically abnormal
structure" (SCT 49755003, CID 7150); lungs = "Lung" (SCT 39607008) with laterality Right/Left.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

# Next to this file, so it ships with the package (Slicer module install and Python wheel alike).
TERMINOLOGY_FILE = Path(__file__).with_name("SegmentationCategoryTypeModifier-JCSDiagnosis.term.json")
REGION_CONTEXT = "Anatomic codes - DICOM master list"
LUNG = ("SCT", "39607008", "Lung")


@dataclass(frozen=True)
class Code:
    """A coded concept (scheme designator, value, meaning)."""

    scheme: str
    value: str
    meaning: str

    def serialized(self) -> str:
        return f"{self.scheme}^{self.value}^{self.meaning}"


@dataclass(frozen=True)
class SegmentSpec:
    """Everything that identifies one result segment."""

    segment_id: str
    name: str
    label: int
    color: tuple[float, float, float]
    context: str
    category: Code
    type: Code
    type_modifier: Code | None
    region: Code | None

    def terminology_entry(self) -> str:
        """Slicer's serialized terminology entry (`vtkSegment.SetTerminology`)."""
        modifier = self.type_modifier.serialized() if self.type_modifier else "^^"
        region = self.region.serialized() if self.region else "^^"
        return "~".join(
            [
                self.context,
                self.category.serialized(),
                self.type.serialized(),
                modifier,
                REGION_CONTEXT,
                region,
                "^^",
            ]
        )


def _code(entry: dict) -> Code:
    return Code(entry["CodingSchemeDesignator"], entry["CodeValue"], entry["CodeMeaning"])


@cache
def _context() -> dict:
    with TERMINOLOGY_FILE.open(encoding="utf-8") as file:
        return json.load(file)


def _find(
    type_value: str, modifier_value: str | None = None
) -> tuple[Code, Code, Code | None, tuple[int, ...]]:
    for category in _context()["SegmentationCodes"]["Category"]:
        for segment_type in category["Type"]:
            if segment_type["CodeValue"] != type_value:
                continue
            if modifier_value is None:
                return (
                    _code(category),
                    _code(segment_type),
                    None,
                    tuple(segment_type["recommendedDisplayRGBValue"]),
                )
            for modifier in segment_type.get("Modifier", []):
                if modifier["CodeValue"] == modifier_value:
                    rgb = tuple(modifier["recommendedDisplayRGBValue"])
                    return _code(category), _code(segment_type), _code(modifier), rgb
    raise KeyError(f"code {type_value}/{modifier_value} is not in {TERMINOLOGY_FILE}")


def _spec(
    segment_id: str, name: str, label: int, type_value: str, modifier: str | None, region: bool
) -> SegmentSpec:
    category, segment_type, type_modifier, (red, green, blue) = _find(type_value, modifier)
    return SegmentSpec(
        segment_id=segment_id,
        name=name,
        label=label,
        color=(red / 255.0, green / 255.0, blue / 255.0),
        context=_context()["SegmentationCategoryTypeContextName"],
        category=category,
        type=segment_type,
        type_modifier=type_modifier,
        region=Code(*LUNG) if region else None,
    )


@cache
def lesion_spec() -> SegmentSpec:
    """The lesion segment (ground glass and consolidation together, as in the training masks)."""
    return _spec("lesion", "COVID-19 lesions", 1, "112033", None, region=True)


@cache
def lung_specs() -> tuple[SegmentSpec, SegmentSpec]:
    """Right and left lung segments; labels follow jcs.lung (1 right, 2 left)."""
    return (
        _spec("right_lung", "Right lung", 1, "39607008", "24028007", region=False),
        _spec("left_lung", "Left lung", 2, "39607008", "7771000", region=False),
    )
