"""Train the JCS classifier, Res2Net-v1b (paper §III-A, §V-B).

    python -m training.train_classifier --config training/configs/classifier_ct.yaml
    torchrun --nproc_per_node 4 -m training.train_classifier --config ...

Image mixing (eq. 3, λ ~ Beta(0.5, 0.5)) of images, labels and lesion masks; cross-entropy on the mixed
labels plus activation-map supervision (eq. 4) wherever the mixed image's lesion mask is known (slices
with pixel masks, and lesion-free slices of non-COVID patients); SGD with step decay; checkpoints,
CSV log and a held-out report as for the segmenter.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from training import common, evaluate
from training.config import ClassifierConfig, run_training_command, to_dict
from training.data import ClassificationDataset, load_records, split_by_patient
from training.losses import (
    attention_loss,
    class_activation_map,
    log_odds_activation_map,
    mix,
    sample_mixing_lambda,
    soft_cross_entropy,
)
from training.models import build_classification_model, count_parameters, load_initial_weights
from training.schedules import step_lr, warmup


def classifier_step_losses(
    net: torch.nn.Module,
    model: torch.nn.Module,
    batch: list[torch.Tensor],
    config: ClassifierConfig,
    iteration: int,
    precision: str,
    device: torch.device,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss of one batch: soft cross-entropy on mixed labels + weight × eq. (4).

    Mixing is seeded by (seed, iteration) so a resumed run repeats it exactly.
    """
    x, label, mask, has_mask = (t.to(device) for t in batch)
    known = has_mask | (label < 0.5)  # lesion masks are known for masked slices and lesion-free slices
    if config.mixup:
        rng = np.random.default_rng([config.seed, iteration, 7])
        lam = sample_mixing_lambda(rng, config.mixup_alpha)
        perm = torch.from_numpy(rng.permutation(x.shape[0])).to(device)
        x, label, mask = mix(x, lam, perm), mix(label, lam, perm), mix(mask, lam, perm)
        known = known & known[perm]
    features: list[torch.Tensor] = []
    hook = net.layer4.register_forward_hook(lambda _m, _i, out: features.append(out))
    try:
        with common.autocast(precision, device):
            logits = model(x.contiguous(memory_format=torch.channels_last))
    finally:
        hook.remove()
    cls_loss = soft_cross_entropy(logits, label)
    if config.attention_map == "log-odds":
        cam = log_odds_activation_map(features[0], net.fc.weight)
    else:
        cam = class_activation_map(features[0], net.fc.weight)
    att_loss = attention_loss(
        cam, mask, known, rectify=config.attention_map != "log-odds", balanced=config.attention_balanced
    )
    total = cls_loss + config.attention_weight * att_loss
    return total, {
        "loss": float(total.detach()),
        "cls": float(cls_loss.detach()),
        "att": float(att_loss.detach()),
    }


def train(config: ClassifierConfig, resume: str | None = None) -> Path:
    """Train for ``config.epochs`` (or the time limit); returns the last checkpoint's path."""
    if config.attention_map not in ("covid", "log-odds"):
        raise ValueError(f"attention_map must be 'covid' or 'log-odds', not {config.attention_map!r}")
    runtime = common.init_runtime(config.threads, config.device)
    common.seed_all(config.seed, runtime.rank)
    out_dir = Path(config.out_dir)
    records = load_records(config.data)
    train_records, val_records = split_by_patient(
        records, config.data.val_patients, config.data.val_count, config.data.split_seed
    )
    dataset = ClassificationDataset(
        train_records,
        config.size,
        config.resize,
        config.augment or None,
        config.seed,
        config.data.feature_key,
        config.per_image_norm,
        config.whole_slice,
        config.lesion_free_crops,
    )
    net = build_classification_model(config)
    if config.init_from and not resume:
        load_initial_weights(net, config.init_from)
    net = net.to(runtime.device).to(memory_format=torch.channels_last)
    model = common.wrap_ddp(net, runtime)
    optimizer = torch.optim.SGD(
        [p for p in net.parameters() if p.requires_grad],
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    per_epoch = common.iterations_per_epoch(len(dataset), config.batch_size, runtime)
    total = config.epochs * per_epoch
    checkpoint_path = out_dir / "last.pt"
    start, spent_s = common.resume_training(resume, checkpoint_path, net, optimizer)
    precision = common.resolve_precision(config.precision, runtime.device)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    log = common.MetricLog(out_dir / "train_log.csv", enabled=runtime.is_main)
    timer = common.Timer(config.time_limit_min, spent_s, config.time_limit_clock)
    if runtime.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps(to_dict(config), indent=2) + "\n", encoding="utf-8")
        positives = sum(r.label for r in train_records)
        print(
            f"classifier Res2Net-{config.depth} ×{config.width_mult}: {count_parameters(net) / 1e6:.2f} M "
            f"parameters; {len(train_records)} training slices ({positives} COVID-19), {len(val_records)} "
            f"held out; {precision}; {per_epoch} iterations/epoch",
            flush=True,
        )
    model.train()
    iteration = start
    progress = tqdm(
        total=total,
        initial=start,
        disable=not runtime.is_main,
        desc="classifier",
        dynamic_ncols=True,
        file=sys.stdout,
        mininterval=1.0 if sys.stdout.isatty() else 30.0,
    )
    stream = common.batch_stream(dataset, config.batch_size, config.seed, runtime, start, config.workers)
    while iteration < total:
        iteration, epoch, batch = next(stream)
        lr = warmup(
            step_lr(config.lr, iteration / per_epoch, config.step_epochs, config.step_gamma),
            iteration,
            config.warmup_iterations,
        )
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss, parts = classifier_step_losses(net, model, batch, config, iteration, precision, runtime.device)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        iteration += 1
        progress.update(1)
        if iteration % config.log_every == 0 or iteration == total:
            log.log(
                {
                    "iteration": iteration,
                    "epoch": epoch,
                    "lr": lr,
                    **parts,
                    "elapsed_s": round(timer.elapsed(), 1),
                }
            )
            progress.set_postfix(loss=f"{parts['loss']:.3f}", att=f"{parts['att']:.3f}", lr=f"{lr:.1e}")
        stop = common.agree(timer.expired(), runtime)
        epoch_end = iteration % per_epoch == 0
        if runtime.is_main and (
            stop
            or iteration == total
            or (epoch_end and (iteration // per_epoch) % config.checkpoint_every_epochs == 0)
        ):
            common.save_checkpoint(
                checkpoint_path,
                model,
                optimizer,
                iteration,
                to_dict(config),
                {
                    "kind": "classifier",
                    "elapsed_s": timer.elapsed(),
                    "stopped_early": stop and iteration < total,
                },
                keep=config.keep_checkpoints,
            )
        if stop:
            if runtime.is_main:
                tqdm.write(f"time limit of {config.time_limit_min} min reached at iteration {iteration}")
            break
    progress.close()
    log.close()
    common.check_replicas(model, runtime)
    if runtime.is_main and val_records:
        report = evaluate.classifier_report(
            evaluate.classifier_predictions(net, config, runtime.device), out_dir / "eval", "classifier"
        )
        if "slice_auc" in report:
            print(f"held-out slice AUC {report['slice_auc']:.4f}", flush=True)
        for patient, row in report.get("patients", {}).items():
            print(f"  {patient}: {row['positive_slices']} of {row['slices']} slices positive", flush=True)
    common.shutdown(runtime)
    return checkpoint_path


def main(argv: list[str] | None = None) -> int:
    example = "--set epochs=5 --set data.val_patients=[P001]"
    return run_training_command(ClassifierConfig, train, __doc__.split("\n")[0], example, argv)


if __name__ == "__main__":
    raise SystemExit(main())
