"""Conversions between MRML volume / segmentation nodes and numpy arrays or SimpleITK images.

Only MRML/VTK classes are used, so the same code runs in desktop Slicer and on slicer-core. Slicer
stores geometry in RAS, SimpleITK and DICOM in LPS: the first two axes flip between them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk
import slicer
import vtk
from vtk.util import numpy_support

if TYPE_CHECKING:
    from jcs.io import CTVolume

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def ijkToRasMatrix(volumeNode: slicer.vtkMRMLVolumeNode) -> np.ndarray:
    """4x4 IJK-to-RAS matrix of a volume node as a numpy array."""
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def superiorAxis(volumeNode: slicer.vtkMRMLVolumeNode) -> int:
    """The IJK axis closest to the patient's superior direction (the axial slice axis)."""
    return int(np.argmax(np.abs(ijkToRasMatrix(volumeNode)[2, :3])))


def axialSliceCount(volumeNode: slicer.vtkMRMLVolumeNode) -> int:
    """Number of axial slices of the volume (voxels along :func:`superiorAxis`)."""
    return int(volumeNode.GetImageData().GetDimensions()[superiorAxis(volumeNode)])


def arrayFromVolume(volumeNode: slicer.vtkMRMLVolumeNode) -> np.ndarray:
    """Copy of the voxels as a (K, J, I) array (slice, row, column of the IJK grid)."""
    imageData = volumeNode.GetImageData()
    if imageData is None or imageData.GetPointData().GetScalars() is None:
        raise ValueError(f"volume '{volumeNode.GetName()}' has no voxel data")
    shape = tuple(reversed(imageData.GetDimensions()))
    components = imageData.GetNumberOfScalarComponents()
    array = numpy_support.vtk_to_numpy(imageData.GetPointData().GetScalars())
    if components != 1:
        raise ValueError(
            f"volume '{volumeNode.GetName()}' has {components} components; a scalar CT is needed"
        )
    return np.array(array.reshape(shape), copy=True)


def setVolumeArray(volumeNode: slicer.vtkMRMLVolumeNode, array: np.ndarray, ijkToRas: np.ndarray) -> None:
    """Replace the voxels of `volumeNode` by a (K, J, I) array placed with the 4x4 `ijkToRas` matrix."""
    array = np.ascontiguousarray(array)
    imageData = vtk.vtkImageData()
    imageData.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
    scalars = numpy_support.numpy_to_vtk(array.ravel(), deep=True)
    imageData.GetPointData().SetScalars(scalars)
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(ijkToRas[r, c]))
    volumeNode.SetIJKToRASMatrix(matrix)
    volumeNode.SetAndObserveImageData(imageData)


def imageFromVolume(volumeNode: slicer.vtkMRMLVolumeNode, array: np.ndarray | None = None) -> sitk.Image:
    """SimpleITK image (LPS) with the geometry of `volumeNode` and its voxels, or `array` if given."""
    voxels = arrayFromVolume(volumeNode) if array is None else array
    matrix = ijkToRasMatrix(volumeNode)
    spacing = np.linalg.norm(matrix[:3, :3], axis=0)
    directionRas = matrix[:3, :3] / spacing
    image = sitk.GetImageFromArray(voxels)
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(v) for v in _RAS_TO_LPS @ matrix[:3, 3]])
    image.SetDirection([float(v) for v in (_RAS_TO_LPS @ directionRas).ravel()])
    return image


def ijkToRasFromImage(image: sitk.Image) -> np.ndarray:
    """4x4 IJK-to-RAS matrix of a SimpleITK (LPS) image."""
    direction = np.array(image.GetDirection()).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = _RAS_TO_LPS @ direction @ np.diag(image.GetSpacing())
    matrix[:3, 3] = _RAS_TO_LPS @ np.array(image.GetOrigin())
    return matrix


def sameGeometry(image: sitk.Image, volumeNode: slicer.vtkMRMLVolumeNode, tolerance: float = 1e-3) -> bool:
    """Whether `image` has the size and IJK-to-RAS placement of `volumeNode`."""
    dims = volumeNode.GetImageData().GetDimensions()
    if tuple(image.GetSize()) != tuple(dims):
        return False
    return bool(np.allclose(ijkToRasFromImage(image), ijkToRasMatrix(volumeNode), atol=tolerance))


def segmentArray(
    segmentationNode: slicer.vtkMRMLSegmentationNode,
    segmentId: str,
    referenceVolumeNode: slicer.vtkMRMLVolumeNode,
) -> np.ndarray:
    """Binary (K, J, I) uint8 array of one segment resampled onto the grid of `referenceVolumeNode`."""
    scene = segmentationNode.GetScene()
    labelmapNode = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__jcs_temp__")
    try:
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(segmentId)
        logic = slicer.vtkSlicerSegmentationsModuleLogic
        if not logic.ExportSegmentsToLabelmapNode(segmentationNode, ids, labelmapNode, referenceVolumeNode):
            raise RuntimeError(f"could not export segment '{segmentId}' of '{segmentationNode.GetName()}'")
        exported = arrayFromVolume(labelmapNode)
        exportedMatrix = ijkToRasMatrix(labelmapNode)
    finally:
        displayNode = labelmapNode.GetDisplayNode()
        if displayNode is not None and displayNode.GetColorNode() is not None:
            scene.RemoveNode(displayNode.GetColorNode())
        scene.RemoveNode(labelmapNode)
    return _placeOnGrid(exported > 0, exportedMatrix, referenceVolumeNode)


def _placeOnGrid(
    mask: np.ndarray, maskIjkToRas: np.ndarray, volumeNode: slicer.vtkMRMLVolumeNode
) -> np.ndarray:
    """Copy a mask exported on a sub-extent of the volume grid into a full-size array of that grid."""
    dims = volumeNode.GetImageData().GetDimensions()
    full = np.zeros(tuple(reversed(dims)), np.uint8)
    if mask.size == 0 or not mask.any():
        return full
    volumeMatrix = ijkToRasMatrix(volumeNode)
    offset = np.linalg.solve(volumeMatrix, maskIjkToRas @ np.array([0.0, 0.0, 0.0, 1.0]))[:3]
    i0, j0, k0 = (int(round(v)) for v in offset)
    if not np.allclose(volumeMatrix[:3, :3], maskIjkToRas[:3, :3], atol=1e-4):
        raise RuntimeError("exported segment is not on the reference volume grid")
    k, j, i = np.nonzero(mask)
    k, j, i = k + k0, j + j0, i + i0
    inside = (k >= 0) & (k < full.shape[0]) & (j >= 0) & (j < full.shape[1]) & (i >= 0) & (i < full.shape[2])
    full[k[inside], j[inside], i[inside]] = 1
    return full


def setSegmentArray(
    segmentationNode: slicer.vtkMRMLSegmentationNode,
    segmentId: str,
    mask: np.ndarray,
    referenceVolumeNode: slicer.vtkMRMLVolumeNode,
) -> None:
    """Replace the binary labelmap of a segment by a (K, J, I) mask on the grid of `referenceVolumeNode`."""
    oriented = slicer.vtkOrientedImageData()
    array = np.ascontiguousarray((np.asarray(mask) > 0).astype(np.uint8))
    oriented.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
    oriented.GetPointData().SetScalars(numpy_support.numpy_to_vtk(array.ravel(), deep=True))
    matrix = vtk.vtkMatrix4x4()
    referenceVolumeNode.GetIJKToRASMatrix(matrix)
    oriented.SetImageToWorldMatrix(matrix)
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    if not logic.SetBinaryLabelmapToSegment(oriented, segmentationNode, segmentId, logic.MODE_REPLACE):
        raise RuntimeError(f"could not write segment '{segmentId}' of '{segmentationNode.GetName()}'")


def ctVolume(volumeNode: slicer.vtkMRMLScalarVolumeNode) -> CTVolume:
    """The volume as the engine reads a CT (`jcs.io.CTVolume`, Hounsfield units)."""
    from jcs.io import CTVolume

    return CTVolume(image=imageFromVolume(volumeNode), is_hu=True, path=Path(volumeNode.GetName()))


def toAxial(volumeNode: slicer.vtkMRMLScalarVolumeNode, array: np.ndarray) -> np.ndarray:
    """A (K, J, I) array on the volume's grid resampled to the engine's axial (Z, Y, X) grid."""
    from jcs.io import AXIAL_ORIENTATION

    image = sitk.DICOMOrient(imageFromVolume(volumeNode, array), AXIAL_ORIENTATION)
    return sitk.GetArrayFromImage(image)


def segmentLungs(volumeNode: slicer.vtkMRMLScalarVolumeNode) -> np.ndarray:
    """Lung labels (0, 1 right, 2 left) of the CT by jcs.lung, on the volume's (K, J, I) grid."""
    from jcs.lung import segment_lungs

    ct = ctVolume(volumeNode)
    axial = segment_lungs(ct.axial_array(), tuple(reversed(ct.axial_image().GetSpacing())))
    return sitk.GetArrayFromImage(ct.from_axial(axial.astype(np.uint8)))
