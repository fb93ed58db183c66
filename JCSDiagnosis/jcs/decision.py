"""Case decision rules (paper §IV): which slices count as positive and how many make a positive case.

The paper's rule counts slices whose COVID-19 probability exceeds 0.5 and calls the case positive when
more than T of them are (T = 25 for scans of about 300 slices). The *segmenter* rule counts slices whose
segmented opacification covers more than a share of the slice's lung area instead; it is used when the
classifier's model card says the classifier should not decide (see :mod:`jcs.inference`).

NumPy only (no PyTorch), so the Slicer module and the viewer can apply the segmenter rule to an edited
segmentation with the same definitions the engine used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SLICE_THRESHOLD = 0.5
"""A slice is positive when its COVID-19 probability exceeds this; lesion pixels likewise (paper §III)."""
DEFAULT_THRESHOLD = 25
"""The paper's T: a case is positive when more than T slices are."""
REFERENCE_SLICES = 300
"""Slice count of the scans for which the paper's T = 25 was set."""
REFERENCE_INVOLVEMENT_MM = 25.0
"""Cranio-caudal extent T = 25 stands for, assuming the reference scans have about 1 mm slices."""
OPACIFIED_LUNG_FRACTION = 0.02
"""Segmenter rule: a slice is positive when predicted opacification covers more than this share of its
lung area (unless the classifier card's decision block says otherwise)."""
CHECKED_SLICE_SPACING_MM = 4.0
"""Thickest slices on which the segmenter rule was checked with the bundled segmenter: 2 mm scans, and
the same scans averaged into 4 mm slabs, decided right; averaged into 6 mm slabs a normal scan had 13
of 55 slices over 2 % (T = 4) and was called positive. Thicker scans get a caution note."""


SINGLE_SLICE_MAX_LESION_SHARE = 0.5
"""Single 2-D slices: an opacity component with more pixels than this share of the slice's lung is not
counted as a lesion (:func:`slice_lung_fraction`). Measured with the bundled segmenter on slices read
one at a time: every lesion-free slice it called positive with the plain 2 % rule owed it to such a
component (median 3-9 times the lung's area: liver, heart or diaphragm under a thin section of lung
at a base or apex), while on slices with lesions the largest component was at most a third of the
lung (90th percentile)."""


def slice_lung_fraction(lesion_mask: np.ndarray, lungs: np.ndarray) -> np.ndarray:
    """(Z,) share of each axial slice's lung area covered by the lesion mask (0 on slices without lung).

    For a single 2-D slice (Z = 1) only opacity a reader would take for a lesion counts: components
    larger than :data:`SINGLE_SLICE_MAX_LESION_SHARE` of the slice's lung are left out.
    """
    lung = lungs > 0
    lesion = lesion_mask > 0
    if lesion.shape[0] == 1:
        lesion = lesion & ~oversized_components(lesion[0], int(lung.sum()))[None]
    lung_area = lung.sum(axis=(1, 2))
    covered = (lesion & lung).sum(axis=(1, 2))
    return covered / np.maximum(lung_area, 1)


def oversized_components(lesion: np.ndarray, lung_area_px: int) -> np.ndarray:
    """Boolean (Y, X): the 4-connected components of a 2-D lesion mask with more pixels than
    :data:`SINGLE_SLICE_MAX_LESION_SHARE` of ``lung_area_px``."""
    from scipy import ndimage  # SciPy only for single slices (start-up of the CLI)

    labels, count = ndimage.label(lesion)
    if count == 0:
        return np.zeros(lesion.shape, dtype=bool)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    too_big = sizes > SINGLE_SLICE_MAX_LESION_SHARE * lung_area_px
    too_big[0] = False
    return too_big[labels]


def scaled_threshold(n_slices: int, slice_thickness_mm: float | None = None) -> int:
    """Positive-slice threshold T adapted to a scan, keeping what the paper's T = 25 means.

    T counts slices, so a scan cut into fewer, thicker slices shows the same disease on fewer slices.
    With the slice thickness (or spacing) known, T keeps the cranio-caudal extent of involvement that
    25 slices of about 1 mm represent: ``T = round(25 mm / thickness)``. Otherwise T scales with the
    slice count against the paper's ~300-slice scans: ``T = round(25 * n_slices / 300)``. Either way
    T >= 0; a single slice gets T = 0 (the case is positive when that slice is).
    """
    if n_slices < 1:
        raise ValueError(f"n_slices must be positive, got {n_slices}")
    if n_slices == 1:
        return 0
    if slice_thickness_mm is not None:
        if not slice_thickness_mm > 0:
            raise ValueError(f"slice thickness must be positive, got {slice_thickness_mm}")
        return max(1, round(REFERENCE_INVOLVEMENT_MM / slice_thickness_mm))
    return max(1, round(DEFAULT_THRESHOLD * n_slices / REFERENCE_SLICES))


@dataclass(frozen=True)
class SegmenterReading:
    """The segmenter rule applied to one lesion mask: per-slice evidence, count and case decision."""

    slice_lung_fraction: np.ndarray
    min_lung_fraction: float
    positive_slice_count: int
    threshold: int
    positive: bool

    @classmethod
    def from_fractions(
        cls, fractions: np.ndarray, threshold: int, min_lung_fraction: float = OPACIFIED_LUNG_FRACTION
    ) -> SegmenterReading:
        """A slice counts when its opacified share of the lung exceeds ``min_lung_fraction``; the case
        is positive when more than ``threshold`` slices count."""
        fractions = np.asarray(fractions, dtype=float)
        count = int((fractions > min_lung_fraction).sum())
        return cls(fractions, float(min_lung_fraction), count, int(threshold), count > threshold)


def segmenter_reading(
    lesion_mask: np.ndarray,
    lungs: np.ndarray,
    threshold: int,
    min_lung_fraction: float = OPACIFIED_LUNG_FRACTION,
) -> SegmenterReading:
    """The segmenter rule on a (Z, Y, X) lesion mask and its lung labels (:func:`slice_lung_fraction`)."""
    fractions = slice_lung_fraction(lesion_mask, lungs)
    return SegmenterReading.from_fractions(fractions, threshold, min_lung_fraction)
