"""Engine benchmark: batched engine (fp32, bf16/fp16) against a naive per-slice fp32 eager loop.

For classification, classification + Grad-CAM and segmentation it prints per-slice time, achieved
GFLOP/s (model forward FLOPs per slice, counted with ``torch.utils.flop_counter``, divided by the time;
the same FLOP count is used for every mode so the figures compare directly) and the speed-up over the
naive loop, which runs one slice at a time in fp32 without channels_last, and computes Grad-CAM the
usual way (gradients through the whole network). It checks that the engine's slice decisions equal
the naive loop's and reports the lesion-mask Dice against it. Finally, in a child process, it runs
``DiagnosisEngine.diagnose`` (segmentation forced) on a synthetic 512x512xN HU volume and reports the
peak resident memory (VmHWM) of that process.

Models: registry weights (``--classifier``/``--segmenter``), or by default untrained paper
architectures at ``--width-mult`` made well-behaved like the test-suite's tiny weights (batch norm set
from phantom slices, damped residuals, heads reading the main feature direction), since random deep
nets are chaotic and would make precision comparisons meaningless.

Flags (defaults finish in a few minutes on 2 CPU cores):
  --width-mult 0.25      model width (1.0 = paper; use with --slices 8 on a CPU)
  --depth 101            classifier depth (50 or 101)
  --slices 16            slices timed per mode (real sample scan slices, 368x512)
  --segmenter-size 512   segmenter input size (paper: 512)
  --batch-size N         engine batch size (default: the engine's choice)
  --device auto|cpu|cuda reduced precision is bf16 on CPU, fp16 on CUDA
  --rss-slices 300       slices of the 512x512 volume for the memory run (0 skips it)
  --threads N            torch threads (default: torch's)

Run: ``python benchmarks/bench_engine.py [flags]`` from the repository root.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from jcs.gradcam import cam_to_slices
from jcs.inference import DiagnosisEngine, resolve_device, resolve_precision
from jcs.preprocess import axial_slices_uint8, classifier_input, segmenter_input
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]


def _models(args: argparse.Namespace) -> tuple[torch.nn.Module, torch.nn.Module, str]:
    if args.classifier:
        from jcs.weights import load_model

        classifier, card = load_model(args.classifier)
        segmenter, seg_card = load_model(args.segmenter)
        return classifier, segmenter, f"registry {card.name} + {seg_card.name}"
    sys.path.insert(0, str(REPO / "Testing" / "Python"))
    from tiny_weights import calibrated_classifier, calibrated_segmenter

    width = {"width_mult": args.width_mult, "batchnorm": "batch"}
    classifier = calibrated_classifier({"depth": args.depth, "num_classes": 2, **width})
    segmenter = calibrated_segmenter({"joint": False, **width}, args.segmenter_size)
    return classifier, segmenter, f"untrained, calibrated, depth {args.depth}, width x{args.width_mult}"


def _sample_slices(n: int) -> np.ndarray:
    from jcs.io import read_ct
    from jcs.sample import sample_path

    slices = axial_slices_uint8(read_ct(sample_path()))
    return np.ascontiguousarray(slices[len(slices) // 2 - n // 2 :][:n])


def _flops(model: torch.nn.Module, x: torch.Tensor) -> float:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return float(counter.get_total_flops())


def _timed(fn: Callable[[], object]) -> tuple[float, object]:
    fn()  # warm-up (oneDNN/cuDNN primitive creation)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def _naive_classify(model: torch.nn.Module, slices: np.ndarray, device: torch.device) -> np.ndarray:
    out = []
    with torch.no_grad():
        for s in slices:
            logits = model(classifier_input(s[None]).to(device))
            out.append(float(torch.softmax(logits, 1)[0, 1]))
    return np.array(out)


def _naive_gradcam(
    model: torch.nn.Module, slices: np.ndarray, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """Textbook Grad-CAM: a grad-enabled forward and a full backward per slice."""
    probabilities, maps = [], []
    stored: dict[str, torch.Tensor] = {}

    def hook(_m: torch.nn.Module, _i: object, output: torch.Tensor) -> None:
        output.retain_grad()
        stored["a"] = output

    handle = model.layer4.register_forward_hook(hook)
    model.requires_grad_(True)
    try:
        for s in slices:
            x = classifier_input(s[None]).to(device)
            logits = model(x)
            model.zero_grad(set_to_none=True)
            logits[0, 1].backward()
            a = stored["a"]
            cam = F.relu((a.grad.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1)).detach()
            maps.append(cam_to_slices(cam.cpu(), *s.shape))
            probabilities.append(float(torch.softmax(logits.detach(), 1)[0, 1]))
    finally:
        handle.remove()
        model.requires_grad_(False)
        model.zero_grad(set_to_none=True)
    return np.array(probabilities), np.concatenate(maps)


def _naive_segment(model: torch.nn.Module, slices: np.ndarray, size: int, device: torch.device) -> np.ndarray:
    out = []
    with torch.no_grad():
        for s in slices:
            maps = model(segmenter_input(s[None], size=size).to(device))[:, :1]
            maps = F.interpolate(maps, size=s.shape, mode="bilinear", align_corners=False)
            out.append(maps[0, 0].cpu().numpy())
    return np.stack(out)


def _engine_classify(engine: DiagnosisEngine, slices: np.ndarray, batch: int) -> np.ndarray:
    out = []
    with torch.inference_mode():
        for start in range(0, len(slices), batch):
            x = classifier_input(slices[start : start + batch]).to(engine.device)
            with engine.autocast():
                logits = engine.classifier(x.contiguous(memory_format=torch.channels_last))
            out.append(torch.softmax(logits.float(), 1)[:, 1].cpu().numpy())
    return np.concatenate(out)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)


def _rss_child(args: argparse.Namespace) -> None:
    """Run diagnose on a synthetic 512x512xN HU volume and print peak RSS (VmHWM) as JSON."""
    import SimpleITK as sitk
    from jcs.io import CTVolume

    classifier, segmenter, _ = _models(args)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:512, :512]
    body = ((yy - 256) / 200.0) ** 2 + ((xx - 256) / 240.0) ** 2 < 1
    lungs = (((yy - 250) / 140.0) ** 2 + ((np.abs(xx - 256) - 110) / 80.0) ** 2) < 1
    slice_hu = np.where(body, 40, -1000).astype(np.int16)
    slice_hu[lungs & body] = -850
    volume = np.repeat(slice_hu[None], args.rss_slices, axis=0)
    volume += rng.integers(-20, 20, size=volume.shape[1:], dtype=np.int16)[None]
    image = sitk.GetImageFromArray(volume)
    del volume
    image.SetSpacing((0.7, 0.7, 1.0))
    engine = DiagnosisEngine(
        classifier, segmenter, device=args.device, segment_policy="always", batch_size=args.batch_size,
        segmenter_size=args.segmenter_size,
    )
    start = time.perf_counter()
    result = engine.diagnose(CTVolume(image=image, is_hu=True, path=Path("synthetic")))
    seconds = time.perf_counter() - start
    status = Path("/proc/self/status").read_text()
    peak_kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))
    print(json.dumps({"peak_rss_gb": peak_kb / 2**20, "seconds": seconds, "timings": result.timings_s,
                      "precision": result.precision}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--width-mult", type=float, default=0.25)
    parser.add_argument("--depth", type=int, default=101, choices=(50, 101))
    parser.add_argument("--slices", type=int, default=16)
    parser.add_argument("--segmenter-size", type=int, default=512)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--rss-slices", type=int, default=300)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--classifier", help="registry classifier name (with --segmenter)")
    parser.add_argument("--segmenter", help="registry segmenter name")
    parser.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.rss_child:
        _rss_child(args)
        return

    device = resolve_device(args.device)
    reduced = resolve_precision("auto", device)
    classifier, segmenter, description = _models(args)
    slices = _sample_slices(args.slices)
    n = len(slices)
    print(f"device {device.type}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"models: {description}; segmenter input {args.segmenter_size}")
    print(f"{n} slices {slices.shape[1]}x{slices.shape[2]} of the bundled sample scan")

    flops_cls = _flops(classifier, classifier_input(slices[:1]))
    flops_seg = _flops(segmenter, segmenter_input(slices[:1], size=args.segmenter_size))
    classifier.to(device)
    segmenter.to(device)

    rows: list[tuple[str, str, float, float, str]] = []
    t, p_naive = _timed(lambda: _naive_classify(classifier, slices, device))
    naive = {"classify": t}
    rows.append(("classify", "naive fp32 loop", t, flops_cls, ""))
    t, (_, cam_naive) = _timed(lambda: _naive_gradcam(classifier, slices, device))
    naive["classify+gradcam"] = t
    rows.append(("classify+gradcam", "naive fp32 loop", t, flops_cls, ""))
    t, seg_naive = _timed(lambda: _naive_segment(segmenter, slices, args.segmenter_size, device))
    naive["segment"] = t
    rows.append(("segment", "naive fp32 loop", t, flops_seg, ""))
    decisions = p_naive > 0.5
    mask_naive = seg_naive > 0.5

    for precision in dict.fromkeys(("fp32", reduced)):
        engine = DiagnosisEngine(
            classifier, segmenter, device=device, precision=precision, batch_size=args.batch_size,
            segmenter_size=args.segmenter_size,
        )
        label = f"engine {precision}"
        batch = engine.initial_batch("classify")
        t, p = _timed(lambda engine=engine, batch=batch: _engine_classify(engine, slices, batch))
        equal = int(((p > 0.5) == decisions).sum())
        rows.append(("classify", label, t, flops_cls, f"decisions equal {equal}/{n}"))
        t, (p, cam) = _timed(lambda engine=engine: engine.classify_slices(slices))
        cos = float((cam * cam_naive).sum() / max(np.linalg.norm(cam) * np.linalg.norm(cam_naive), 1e-12))
        equal = int(((p > 0.5) == decisions).sum())
        check = f"decisions equal {equal}/{n}, CAM cosine {cos:.4f}"
        rows.append(("classify+gradcam", label, t, flops_cls, check))
        t, prob = _timed(lambda engine=engine: engine.segment_slices(slices))
        check = f"mask Dice vs naive {_dice(prob > 0.5, mask_naive):.4f}"
        rows.append(("segment", label, t, flops_seg, check))

    print()
    print(f"{'stage':<17} {'mode':<16} {'ms/slice':>9} {'GFLOP/s':>8} {'speed-up':>8}  check")
    for stage, mode, seconds, flops, check in rows:
        per_slice = seconds / n
        speedup = naive[stage] / seconds
        gflops = flops / per_slice / 1e9
        print(f"{stage:<17} {mode:<16} {1000 * per_slice:9.1f} {gflops:8.1f} {speedup:7.2f}x  {check}")
    print(f"\nforward GFLOP per slice: classifier {flops_cls / 1e9:.2f}, segmenter {flops_seg / 1e9:.2f}")

    if args.rss_slices > 0:
        command = [sys.executable, __file__, "--rss-child", "--rss-slices", str(args.rss_slices),
                   "--width-mult", str(args.width_mult), "--depth", str(args.depth),
                   "--segmenter-size", str(args.segmenter_size), "--device", args.device]
        for flag, value in (("--batch-size", args.batch_size), ("--threads", args.threads),
                            ("--classifier", args.classifier), ("--segmenter", args.segmenter)):
            if value:
                command += [flag, str(value)]
        child = subprocess.run(command, capture_output=True, text=True, check=True)
        stats = json.loads(child.stdout.strip().splitlines()[-1])
        print(
            f"diagnose 512x512x{args.rss_slices} ({stats['precision']}, segmentation forced): peak RSS "
            f"{stats['peak_rss_gb']:.2f} GB, {stats['seconds']:.0f} s "
            f"({', '.join(f'{k} {v:.0f} s' for k, v in stats['timings'].items())})"
        )


if __name__ == "__main__":
    main()
