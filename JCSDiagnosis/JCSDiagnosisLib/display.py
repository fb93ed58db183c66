"""How results look in the slice views: heatmap colour table and layer, segment display, jumps.

Works on any scene with slice views (desktop Slicer, trame-slicer): it only edits slice composite
and slice nodes, which the views observe.
"""

from __future__ import annotations

import numpy as np
import slicer

HEATMAP_COLOR_NAME = "JCS heatmap (inferno)"
HEATMAP_COLOR_ATTRIBUTE = "JCSDiagnosis.heatmapColorTable"

# Inferno (perceptually uniform, luminance increasing monotonically) sampled at 0, 0.1, ..., 1.
_INFERNO_ANCHORS = (
    np.array(
        [
            (0, 0, 4),
            (22, 11, 57),
            (66, 10, 104),
            (106, 23, 110),
            (147, 38, 103),
            (188, 55, 84),
            (221, 81, 58),
            (243, 120, 25),
            (252, 165, 10),
            (246, 215, 70),
            (252, 255, 164),
        ],
        dtype=float,
    )
    / 255.0
)
#: Heat below this is fully transparent, so cold regions leave the CT untouched (paper Fig. 9 look).
TRANSPARENT_BELOW = 0.05
_OPAQUE_FROM = 0.25


def heatmapColors(count: int = 256) -> np.ndarray:
    """(count, 4) RGBA of the heatmap colour table: inferno colours, alpha ramping up from 0."""
    t = np.linspace(0.0, 1.0, count)
    anchors = np.linspace(0.0, 1.0, len(_INFERNO_ANCHORS))
    rgb = np.stack([np.interp(t, anchors, _INFERNO_ANCHORS[:, c]) for c in range(3)], axis=1)
    alpha = np.clip((t - TRANSPARENT_BELOW) / (_OPAQUE_FROM - TRANSPARENT_BELOW), 0.0, 1.0)
    return np.concatenate([rgb, alpha[:, None]], axis=1)


def heatmapColorNode(scene: slicer.vtkMRMLScene) -> slicer.vtkMRMLColorTableNode:
    """The heatmap colour table of this scene, created once."""
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLColorTableNode")):
        node = scene.GetNthNodeByClass(i, "vtkMRMLColorTableNode")
        if node.GetAttribute(HEATMAP_COLOR_ATTRIBUTE) == "1":
            return node
    node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", HEATMAP_COLOR_NAME)
    node.SetTypeToUser()
    colors = heatmapColors()
    node.SetNumberOfColors(len(colors))
    node.GetLookupTable().SetTableRange(0.0, 1.0)
    for index, (r, g, b, a) in enumerate(colors):
        node.SetColor(index, f"{index / (len(colors) - 1):.3f}", r, g, b, a)
    node.SetAttribute(HEATMAP_COLOR_ATTRIBUTE, "1")
    node.SetAttribute("Category", "JCS Diagnosis")
    return node


def styleHeatmap(heatmapNode: slicer.vtkMRMLScalarVolumeNode) -> None:
    """Heatmap display: perceptual colour table, fixed 0-1 window, no interpolation artefacts."""
    scene = heatmapNode.GetScene()
    if heatmapNode.GetDisplayNode() is None:
        heatmapNode.CreateDefaultDisplayNodes()
    display = heatmapNode.GetDisplayNode()
    display.SetAndObserveColorNodeID(heatmapColorNode(scene).GetID())
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0.0, 1.0)
    display.SetInterpolate(True)


def sliceCompositeNodes(scene: slicer.vtkMRMLScene) -> list:
    """All slice composite nodes (one per slice view)."""
    return [
        scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
        for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode"))
    ]


def showHeatmap(
    volumeNode: slicer.vtkMRMLVolumeNode, heatmapNode: slicer.vtkMRMLVolumeNode, opacity: float = 0.4
) -> None:
    """CT as background, heatmap as foreground with `opacity` in every slice view."""
    for composite in sliceCompositeNodes(volumeNode.GetScene()):
        composite.SetBackgroundVolumeID(volumeNode.GetID())
        composite.SetForegroundVolumeID(heatmapNode.GetID())
        composite.SetForegroundOpacity(opacity)


def setHeatmapOpacity(scene: slicer.vtkMRMLScene, opacity: float) -> None:
    """Foreground opacity of every slice view (the heatmap slider)."""
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must lie in 0..1, got {opacity}")
    for composite in sliceCompositeNodes(scene):
        composite.SetForegroundOpacity(opacity)


def jumpToPoint(scene: slicer.vtkMRMLScene, ras: tuple[float, float, float]) -> None:
    """Move every slice view so that it shows the RAS point (centred)."""
    slicer.vtkMRMLSliceNode.JumpAllSlices(scene, *ras, slicer.vtkMRMLSliceNode.CenteredJumpSlice)


def showSegments3D(
    segmentationNode: slicer.vtkMRMLSegmentationNode,
    *,
    lesions: bool = True,
    lungs: bool = False,
    lungOpacity: float = 0.2,
) -> None:
    """Lesion (and lung) surfaces in the 3-D views, as Slicer's "Show 3D": closed surfaces are made from
    the labelmaps; the lungs are translucent and shown in 3-D only, so the slice views keep showing the
    lesions alone and painting a lesion never touches them."""
    from jcs.terminology import lesion_spec, lung_specs

    segmentationNode.CreateClosedSurfaceRepresentation()
    display = segmentationNode.GetDisplayNode()
    display.SetVisibility(True)
    display.SetVisibility3D(True)
    lesionId = lesion_spec().segment_id
    display.SetSegmentVisibility(lesionId, True)
    display.SetSegmentVisibility3D(lesionId, lesions)
    for spec in lung_specs():
        display.SetSegmentVisibility(spec.segment_id, lungs)
        display.SetSegmentVisibility2DFill(spec.segment_id, False)
        display.SetSegmentVisibility2DOutline(spec.segment_id, False)
        display.SetSegmentVisibility3D(spec.segment_id, lungs)
        display.SetSegmentOpacity3D(spec.segment_id, lungOpacity)
