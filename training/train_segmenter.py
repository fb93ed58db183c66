"""Train the JCS segmenter (paper §III-B, §V-B) or the U-Net baseline.

    python -m training.train_segmenter --config training/configs/ct100_segmenter.yaml
    torchrun --nproc_per_node 4 -m training.train_segmenter --config ...     # DDP, one GPU each

Deep supervision with BCE + Dice on all five side outputs (eq. 6), Adam with poly decay, bf16/fp16
autocast, checkpoints to ``out_dir/last.pt`` (``--resume auto`` continues from it), CSV log
``out_dir/train_log.csv``, and a validation report on the held-out patients at the end.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from training import common, evaluate
from training.config import SegmenterConfig, run_training_command, to_dict
from training.data import SegmentationDataset, load_records, split_by_patient
from training.losses import deep_supervision_loss
from training.models import build_segmentation_model, count_parameters, load_initial_weights
from training.schedules import poly_lr, warmup


def train(config: SegmenterConfig, resume: str | None = None) -> Path:
    """Train to ``config.iterations`` (or the time limit); returns the path of the last checkpoint."""
    runtime = common.init_runtime(config.threads, config.device)
    common.seed_all(config.seed, runtime.rank)
    out_dir = Path(config.out_dir)
    records = load_records(config.data)
    train_records, val_records = split_by_patient(
        records, config.data.val_patients, config.data.val_count, config.data.split_seed
    )
    dataset = SegmentationDataset(
        train_records,
        config.size,
        config.augment or None,
        config.seed,
        config.per_image_norm,
        config.data.feature_key,
        config.crop,
    )
    net = build_segmentation_model(config)
    if config.init_from and not resume:
        load_initial_weights(net, config.init_from)
    net = net.to(runtime.device).to(memory_format=torch.channels_last)
    model = common.wrap_ddp(common.LogitsModel(net), runtime)
    optimizer = torch.optim.Adam(
        [p for p in net.parameters() if p.requires_grad],
        lr=config.lr,
        betas=tuple(config.betas),
        weight_decay=config.weight_decay,
    )
    checkpoint_path = out_dir / "last.pt"
    start, spent_s = common.resume_training(resume, checkpoint_path, net, optimizer)
    precision = common.resolve_precision(config.precision, runtime.device)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    log = common.MetricLog(out_dir / "train_log.csv", enabled=runtime.is_main)
    timer = common.Timer(config.time_limit_min, spent_s, config.time_limit_clock)
    if runtime.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps(to_dict(config), indent=2) + "\n", encoding="utf-8")
        print(
            f"segmenter {config.arch}: {count_parameters(net) / 1e6:.2f} M parameters, {len(train_records)} "
            f"training / {len(val_records)} validation slices, {precision}, "
            f"{runtime.world_size} process(es), "
            f"iterations {start}→{config.iterations}",
            flush=True,
        )
    model.train()
    iteration = start
    progress = tqdm(
        total=config.iterations,
        initial=start,
        disable=not runtime.is_main,
        desc="segmenter",
        dynamic_ncols=True,
        file=sys.stdout,
        mininterval=1.0 if sys.stdout.isatty() else 30.0,
    )
    stream = common.batch_stream(dataset, config.batch_size, config.seed, runtime, start, config.workers)
    while iteration < config.iterations:
        iteration, epoch, (x, mask) = next(stream)
        progress_it = iteration
        if config.schedule_by_time and config.time_limit_min > 0:
            # Poly decay over the larger of iteration and time progress, so a time-limited run still
            # ends with a fully decayed learning rate.
            share = common.shared_max(timer.fraction(), runtime)
            progress_it = max(iteration, min(config.iterations, int(share * config.iterations)))
        lr = warmup(
            poly_lr(config.lr, progress_it, config.iterations, config.poly_power),
            iteration,
            config.warmup_iterations,
        )
        for group in optimizer.param_groups:
            group["lr"] = lr
        x = x.to(runtime.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        mask = mask.to(runtime.device, non_blocking=True)
        with common.autocast(precision, runtime.device):
            logits = model(x)
        loss, parts = deep_supervision_loss(logits, mask)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        iteration += 1
        progress.update(1)
        if iteration % config.log_every == 0 or iteration == config.iterations:
            row = {
                "iteration": iteration,
                "epoch": epoch,
                "lr": lr,
                "loss": float(loss.detach()),
                **{f"side{k + 1}": v for k, v in enumerate(parts)},
                "elapsed_s": round(timer.elapsed(), 1),
            }
            log.log(row)
            progress.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{lr:.2e}")
        stop = common.agree(timer.expired(), runtime)
        if runtime.is_main and (
            iteration % config.checkpoint_every == 0 or stop or iteration == config.iterations
        ):
            common.save_checkpoint(
                checkpoint_path,
                model,
                optimizer,
                iteration,
                to_dict(config),
                {
                    "kind": "segmenter",
                    "elapsed_s": timer.elapsed(),
                    "stopped_early": stop and iteration < config.iterations,
                },
                keep=config.keep_checkpoints,
            )
        if config.eval_every and iteration % config.eval_every == 0 and runtime.is_main and val_records:
            scores = evaluate.segmentation_scores(net, val_records, config, runtime.device, precision)
            log.log({"iteration": iteration, "val_dice": scores["dice"]["mean"]})
            tqdm.write(f"iteration {iteration}: validation Dice {scores['dice']['mean']:.4f}")
            model.train()
        if stop:
            if runtime.is_main:
                tqdm.write(f"time limit of {config.time_limit_min} min reached at iteration {iteration}")
            break
    progress.close()
    log.close()
    common.check_replicas(model, runtime)
    if runtime.is_main and val_records:
        report = evaluate.evaluate_segmenter_checkpoint(checkpoint_path, out_dir / "eval", runtime.device)
        print(evaluate.format_segmentation_table({config.arch: report["validation"]}), flush=True)
    common.shutdown(runtime)
    return checkpoint_path


def main(argv: list[str] | None = None) -> int:
    example = "--set iterations=200 --set data.val_count=16"
    return run_training_command(SegmenterConfig, train, __doc__.split("\n")[0], example, argv)


if __name__ == "__main__":
    raise SystemExit(main())
