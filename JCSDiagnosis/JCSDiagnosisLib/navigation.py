"""Navigation: show an axial slice or centre the views on a lesion (clicks on table rows and the plot).

Works on any scene with slice views (desktop Slicer, trame-slicer): it moves the slice nodes, which
the views observe, and snaps them onto voxel layers so a 2-D brush paints the slice shown.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import slicer

from . import display, volumes


def axialSliceCenter(volumeNode, axialIndex: int) -> tuple[float, float, float]:
    """RAS centre of axial slice `axialIndex` (inferior to superior, as in the slice table)."""
    matrix = volumes.ijkToRasMatrix(volumeNode)
    dims = volumeNode.GetImageData().GetDimensions()
    axis = volumes.superiorAxis(volumeNode)
    count = dims[axis]
    if not 0 <= axialIndex < count:
        raise IndexError(f"axial slice {axialIndex} is outside 0..{count - 1}")
    ijk = np.array([(d - 1) / 2 for d in dims] + [1.0])
    ijk[axis] = axialIndex if matrix[2, axis] > 0 else count - 1 - axialIndex
    ras = matrix @ ijk
    return (float(ras[0]), float(ras[1]), float(ras[2]))


def lesionCentroidRas(row: Mapping[str, Any]) -> tuple[float, float, float]:
    """RAS centroid of a lesion-table row (jcs.quantify gives it in LPS mm)."""
    try:
        lps = [float(row[f"centroid_lps_{axis}_mm"]) for axis in ("x", "y", "z")]
    except KeyError as exc:
        raise KeyError(f"lesion table has no centroid column {exc}") from None
    return (-lps[0], -lps[1], lps[2])


class Navigator:
    """Moves every slice view of one application's scene."""

    def __init__(self, appLogic) -> None:
        self.appLogic = appLogic
        self.scene: slicer.vtkMRMLScene = appLogic.GetMRMLScene()

    def jumpToSlice(self, volumeNode, axialIndex: int) -> None:
        """Show axial slice `axialIndex` in every slice view."""
        self.jumpToPoint(axialSliceCenter(volumeNode, axialIndex))

    def jumpToLesion(self, lesionRows: list[dict[str, Any]], lesionRow: int) -> tuple[float, float, float]:
        """Centre the views on lesion `lesionRow` of a lesion table's rows; returns its RAS centroid."""
        if not 0 <= lesionRow < len(lesionRows):
            raise IndexError(f"lesion row {lesionRow} is outside 0..{len(lesionRows) - 1}")
        ras = lesionCentroidRas(lesionRows[lesionRow])
        self.jumpToPoint(ras)
        return ras

    def jumpToPoint(self, ras: tuple[float, float, float]) -> None:
        """Centre every slice view on `ras`, on a voxel layer: a 2-D brush paints the voxels of the slice
        shown, and a plane between two layers (a lesion's centroid) would hold none of them."""
        display.jumpToPoint(self.scene, ras)
        logics = self.appLogic.GetSliceLogics() if hasattr(self.appLogic, "GetSliceLogics") else None
        if logics is None:
            return
        for index in range(logics.GetNumberOfItems()):
            logics.GetItemAsObject(index).SnapSliceOffsetToIJK()
