"""Exceptions raised by the engine. Every message names the file or input and the problem."""


class JCSError(Exception):
    """Base class of every error the engine raises on purpose."""


class InputError(JCSError, ValueError):
    """The input image cannot be diagnosed."""


class CorruptFileError(InputError):
    """A file is missing, unreadable or truncated."""


class NotCTError(InputError):
    """The image is not a CT in Hounsfield units (modality or value range implausible)."""


class NotVolumeError(InputError):
    """A 2-D image or a single slice was given where a 3-D volume is needed."""


class SliceSpacingError(InputError):
    """Slices are missing or not evenly spaced."""


class ObliqueSeriesError(InputError):
    """The series is oblique or not axial."""


class MixedSeriesError(InputError):
    """Files of several series or sizes were mixed in one volume."""


class EmptyImageError(InputError):
    """The image is empty, constant or contains NaN/inf values."""


class WeightsError(JCSError):
    """A weights file is missing, tampered with or does not fit the model."""


class CancelledError(JCSError):
    """The user cancelled a long-running operation."""


class OutputError(JCSError):
    """An output folder or file cannot be written, or must not be without being asked (--overwrite)."""
