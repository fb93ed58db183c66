"""MRML helpers of the viewer: CT volume node from a `jcs.io.CTVolume`, window presets, chart SVG."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import SimpleITK as sitk
from jcs.io import CTVolume
from jcs.wording import RuleWording
from JCSDiagnosisLib.volumes import ijkToRasFromImage, setVolumeArray
from numpy.typing import ArrayLike
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLScene

# Display windows (width, level) in HU; "Lung" is the engine's own window (jcs.preprocess.LUNG_WINDOW).
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "Lung": (1500.0, -600.0),
    "Mediastinum": (350.0, 40.0),
}


def as_3d(image: sitk.Image) -> sitk.Image:
    """The image itself if 3-D; a 2-D image (8-bit PNG/JPG or single slice) as a one-slice volume."""
    if image.GetDimension() == 3:
        return image
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError("the viewer shows single-channel images only")
    return sitk.JoinSeries(image)


def add_volume_node(scene: vtkMRMLScene, ct: CTVolume, name: str) -> vtkMRMLScalarVolumeNode:
    """Add the CT in its original geometry (same voxels as `ct.image`) as a scalar volume node."""
    image = as_3d(ct.image)
    array = sitk.GetArrayFromImage(image)
    if array.dtype not in (np.int16, np.uint8, np.float32):
        array = array.astype(np.float32)
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    setVolumeArray(node, array, ijkToRasFromImage(image))
    node.CreateDefaultDisplayNodes()
    return node


def set_window(volume_node: vtkMRMLScalarVolumeNode, preset: str) -> None:
    """Apply a named window preset (see `WINDOW_PRESETS`) to the volume's display node."""
    width, level = WINDOW_PRESETS[preset]
    display = volume_node.GetDisplayNode()
    display.AutoWindowLevelOff()
    display.SetWindowLevel(width, level)


@dataclass(frozen=True)
class SliceChart:
    """What the per-slice chart plots: the evidence of the rule that decides the case."""

    values: np.ndarray
    cutoff: float = 0.5
    top: float = 1.0
    label: str = "p"
    title: str = "Per-slice COVID-19 probability (click to open the slice)"
    legend: str = "dashed: p = 0.5"

    @classmethod
    def for_rule(cls, rule: RuleWording, values: np.ndarray) -> SliceChart:
        """The chart of ``rule``'s evidence: opacified share of the lung (drawn up to 5x its cutoff) or
        the classifier's probability, titled and captioned by `jcs.wording`."""
        if rule.by_segmenter:
            cutoff = rule.min_lung_fraction
            top = 5 * cutoff if cutoff > 0 else 1.0
            return cls(
                np.asarray(values, float), cutoff, top, "share", rule.chart_title(), rule.chart_legend()
            )
        return cls(np.asarray(values, float), title=rule.chart_title(), legend=rule.chart_legend())

    def svg(self, current: int | None = None) -> str:
        return slice_chart_svg(
            self.values, current=current, cutoff=self.cutoff, top=self.top, label=self.label
        )


def slice_chart(case: dict, slices: Sequence[dict], probabilities: ArrayLike) -> SliceChart:
    """Classifier probabilities (paper rule), or under the segmenter rule each slice's opacified share
    of the lung (results.json ``slices[].opacified_lung_fraction``), drawn up to 5x its cutoff."""
    rule = RuleWording.from_case(case)
    if rule.by_segmenter and slices and all("opacified_lung_fraction" in s for s in slices):
        return SliceChart.for_rule(rule, np.array([float(s["opacified_lung_fraction"]) for s in slices]))
    if rule.by_segmenter:  # older results without the per-slice share: the probabilities, said as such
        return SliceChart.for_rule(replace(rule, rule=type(rule.rule).CLASSIFIER), np.asarray(probabilities))
    return SliceChart.for_rule(rule, np.asarray(probabilities, dtype=float))


def slice_chart_svg(
    values: ArrayLike,
    *,
    current: int | None = None,
    cutoff: float = 0.5,
    top: float = 1.0,
    label: str = "p",
    width: int = 400,
    height: int = 120,
) -> str:
    """Per-slice values along z as an SVG bar chart (inferior left, superior right), 0 to `top`.

    By default the values are COVID-19 probabilities and slices above `cutoff` (the classifier's
    per-slice decision, paper Sec. III-A) are drawn red; under the segmenter decision rule they are
    each slice's opacified share of the lung with the rule's cutoff. The current axial slice is
    marked. The SVG spans the full width so a click's x maps to a slice index.
    """
    heights = np.asarray(values, dtype=float)
    count = max(len(heights), 1)
    step = width / count
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%"'
        f' height="{height}" preserveAspectRatio="none" style="display:block;background:#161616">'
    ]
    for index, value in enumerate(heights):
        bar = min(max(value / top, 0.0), 1.0) * (height - 4)
        colour = "#e8504a" if value > cutoff else "#5b8fd9"
        parts.append(
            f'<rect x="{index * step:.2f}" y="{height - bar:.2f}" width="{max(step - 0.3, 0.3):.2f}"'
            f' height="{bar:.2f}" fill="{colour}"><title>slice {index}: {label}={value:.3f}</title></rect>'
        )
    y_cut = height - min(cutoff / top, 1.0) * (height - 4)
    parts.append(
        f'<line x1="0" x2="{width}" y1="{y_cut:.2f}" y2="{y_cut:.2f}" stroke="#bbbbbb"'
        ' stroke-dasharray="4 3" stroke-width="1"/>'
    )
    if current is not None and 0 <= current < count:
        x = (current + 0.5) * step
        parts.append(
            f'<line x1="{x:.2f}" x2="{x:.2f}" y1="0" y2="{height}" stroke="#f3d33a" stroke-width="1.5"/>'
        )
    parts.append("</svg>")
    return "".join(parts)
