"""`jcs-viewer`: serve the JCS Diagnosis viewer on a local port.

    jcs-viewer [FILE_OR_DICOM_DIR] [--sample] [--port 8080] [--host 127.0.0.1]

Binds to the loopback interface unless `--host` names another one; nothing is uploaded anywhere and
no network access is made. Without a display, VTK renders off screen through EGL.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from jcs.options import add_diagnosis_arguments

if TYPE_CHECKING:
    from jcs.io import CTVolume

    from .viewer import ViewerInput

DEFAULT_PORT = 8080
DEFAULT_MIN_LESION_ML = 0.1  # jcs.wording.DEFAULT_MIN_LESION_ML (imported lazily: the CLI starts fast)
DEFAULT_HOST = "127.0.0.1"
#: The engine options the viewer passes on (`jcs.options`; the scene logic takes these).
VIEWER_ENGINE_OPTIONS = ("classifier", "segmenter", "threshold", "device", "segment_policy", "decision")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options of `jcs-viewer`."""
    parser = argparse.ArgumentParser(
        prog="jcs-viewer",
        description="Explainable COVID-19 reading of a chest CT in the browser "
        "(JCS, Wu et al., IEEE TIP 2021). Research use only, not for clinical diagnosis.",
    )
    parser.add_argument(
        "input", nargs="?", type=Path, help="CT file (NIfTI/NRRD/MHA/DICOM) or DICOM series folder"
    )
    parser.add_argument("--sample", action="store_true", help="open the bundled sample CT")
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port to listen on, 0 for any free port (default {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help=f"interface to listen on (default {DEFAULT_HOST}, loopback only)"
    )
    add_diagnosis_arguments(parser, VIEWER_ENGINE_OPTIONS)
    parser.add_argument(
        "--min-lesion-ml",
        type=float,
        default=DEFAULT_MIN_LESION_ML,
        help="smallest lesion listed in the lesion table, in mL (default %(default)g; smaller ones are "
        "still counted in the volumes and listed in the downloads)",
    )
    args = parser.parse_args(argv)
    if args.min_lesion_ml < 0:
        parser.error(f"--min-lesion-ml must not be negative, got {args.min_lesion_ml:g}")
    if args.sample and args.input is not None:
        parser.error("give either an input or --sample, not both")
    if not 0 <= args.port < 65536:
        parser.error(f"--port must lie in 0..65535 (0: any free port), got {args.port}")
    return args


def use_offscreen_rendering() -> None:
    """Pick VTK's EGL window when there is no display (must run before VTK creates a window)."""
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")


def resolve_input(args: argparse.Namespace) -> ViewerInput | None:
    """The `ViewerInput` to open, or None for an empty viewer; raises `jcs.errors.JCSError` on bad input."""
    from jcs.io import read_ct

    from .viewer import ViewerInput

    if args.sample:
        from jcs.sample import sample_path

        path = Path(sample_path())
    elif args.input is not None:
        path = args.input
    else:
        return None
    ct = read_ct(path)
    dicom_dir = path if ct.dicom_files and path.is_dir() else None
    name = path.name.removesuffix(".gz").rsplit(".", 1)[0] if path.is_file() else path.name
    return ViewerInput(ct=ct, name=name or str(path), dicom_dir=dicom_dir, details=describe(ct))


def describe(ct: CTVolume) -> str:
    """One line about the case: DICOM patient, study date and series, or the file name."""
    if not ct.dicom_files:
        return f"{ct.path.name} ({'HU' if ct.is_hu else '8-bit image'})"
    import pydicom

    header = pydicom.dcmread(ct.dicom_files[0], stop_before_pixels=True)

    def text(keyword: str) -> str:  # anonymised series often carry empty elements
        value = header.get(keyword)
        return "" if value is None else str(value).strip()

    series = " ".join(part for part in (text("SeriesNumber"), text("SeriesDescription")) if part)
    parts = [
        f"Patient {text('PatientID') or '?'}",
        f"study {text('StudyDate')}" if text("StudyDate") else "",
        f"series {series}" if series else "",
        f"{len(ct.dicom_files)} DICOM images",
    ]
    return ", ".join(part for part in parts if part)


def engine_options(args: argparse.Namespace) -> dict:
    """Options passed to `JCSDiagnosisSceneLogic.startDiagnosis`."""
    options = {"device": args.device, "segment_policy": args.segment_policy, "decision": args.decision}
    for key in ("classifier", "segmenter", "threshold"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    return options


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `jcs-viewer`."""
    args = parse_args(argv)
    use_offscreen_rendering()
    from jcs.errors import JCSError

    try:
        viewer_input = resolve_input(args)
    except (JCSError, OSError) as exc:
        print(f"jcs-viewer: {exc}", file=sys.stderr)
        return 2

    from .viewer import JCSViewer

    viewer = JCSViewer(options=engine_options(args), min_lesion_ml=args.min_lesion_ml)
    if viewer_input is not None:
        viewer.load(viewer_input)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"jcs-viewer: listening on {args.host}: other machines on the network can open this viewer",
            file=sys.stderr,
        )
    server = viewer.server
    server.controller.on_server_ready.add(
        lambda **_: print(f"JCS Diagnosis viewer: http://{args.host}:{server.port}/", flush=True)
    )
    server.start(port=args.port, host=args.host, open_browser=False, show_connection_info=False, timeout=0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
