"""A figure to judge a diagnosis' explanation by eye: Grad-CAM over the lung-windowed slices.

    python -m training.heatmap_figure CT_INPUT DIAGNOSIS_OUT_DIR --out figure.png [--slices 6]

Reads ``jcs diagnose``'s ``heatmap.nrrd`` and ``lesions.nrrd`` (and ``lungs.nrrd`` when present) next to
the CT it was made from, and draws evenly spaced axial slices through the lungs: the heatmap in
colour on a fixed 0-1 scale (transparent at 0.05 and below; a slice's peak is its COVID-19
probability), the segmented lesions outlined in green and the lungs in white.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from jcs.io import read_ct
from jcs.preprocess import axial_slices_uint8

from training.plots import _pyplot


def _axial(path: Path, reference: sitk.Image) -> np.ndarray:
    """A labelmap/heatmap written in the input's geometry, resampled onto the CT's axial grid."""
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(sitk.Resample(image, reference, sitk.Transform(), sitk.sitkNearestNeighbor))


def choose_slices(lungs: np.ndarray, count: int) -> list[int]:
    """``count`` evenly spaced slices through the lungs (through the volume without lungs)."""
    rows = np.flatnonzero(lungs.any(axis=(1, 2))) if lungs.any() else np.arange(lungs.shape[0])
    return sorted({int(rows[i]) for i in np.linspace(0, len(rows) - 1, count + 2).round().astype(int)[1:-1]})


def heatmap_figure(ct_input: Path, out_dir: Path, path: Path, count: int = 6, title: str = "") -> Path:
    """Write the figure for ``ct_input`` diagnosed into ``out_dir``; returns ``path``."""
    plt = _pyplot()
    if plt is None:
        raise SystemExit("matplotlib is needed for the figure (pip install matplotlib)")
    ct = read_ct(ct_input)
    reference = ct.axial_image()
    slices = axial_slices_uint8(ct)
    heat = _axial(out_dir / "heatmap.nrrd", reference).astype(np.float32)
    lesions = _axial(out_dir / "lesions.nrrd", reference) > 0
    lungs_path = out_dir / "lungs.nrrd"
    lungs = _axial(lungs_path, reference) > 0 if lungs_path.is_file() else np.zeros_like(lesions)
    chosen = choose_slices(lungs, count)
    fig, axes = plt.subplots(1, len(chosen), figsize=(2.6 * len(chosen), 2.9), dpi=110, squeeze=False)
    for ax, z in zip(axes[0], chosen, strict=True):
        ax.imshow(slices[z], cmap="gray", vmin=0, vmax=255)
        ax.imshow(np.ma.masked_where(heat[z] <= 0.05, heat[z]), cmap="jet", vmin=0, vmax=1, alpha=0.45)
        if lungs[z].any():
            ax.contour(lungs[z], levels=[0.5], colors="white", linewidths=0.5)
        if lesions[z].any():
            ax.contour(lesions[z], levels=[0.5], colors="lime", linewidths=0.8)
        ax.set_title(f"slice {z}, heat peak {heat[z].max():.2f}", fontsize=8)  # = p(COVID-19)
        ax.axis("off")
    fig.suptitle(title or f"{ct_input.name}: Grad-CAM (colour), lesions (green), lungs (white)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("ct", type=Path, help="the CT input given to jcs diagnose")
    parser.add_argument("diagnosis", type=Path, help="the --out folder of that jcs diagnose run")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--slices", type=int, default=6, help="number of axial slices (default 6)")
    parser.add_argument("--title", default="", help="figure title")
    args = parser.parse_args(argv)
    print(heatmap_figure(args.ct, args.diagnosis, args.out, args.slices, args.title))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
