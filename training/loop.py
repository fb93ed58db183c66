"""The training loop both trainers share: set-up, schedule, logging, time limit, checkpoints, resume.

A trainer subclasses :class:`TrainingLoop` and brings only what differs: its dataset, network,
optimiser, learning-rate schedule, the losses of one batch and the report at the end. The loop
does the rest the same way for both: seeded set-up, ``--resume``, precision and gradient scaling,
the progress bar, the CSV log (``out_dir/train_log.csv``), the time limit agreed across DDP ranks,
checkpoints (``out_dir/last.pt``, optionally ``iter_NNNNNN.pt``), the replica check and the report.
"""

from __future__ import annotations

import json
import sys
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from training import common
from training.config import to_dict
from training.data import load_records, split_by_patient
from training.models import load_initial_weights


class TrainingLoop(ABC):
    """One training run of ``config`` (a :mod:`training.config` dataclass); :meth:`run` trains it.

    Set-up order is fixed (runtime and seeds, data split, dataset, network, optimiser, resume), so a
    run draws the same random numbers whichever trainer it is.
    """

    kind: str  # "segmenter" or "classifier": the progress bar's label and the checkpoint's kind

    def __init__(self, config: Any, resume: str | None = None) -> None:
        self.config = config
        self.runtime = common.init_runtime(config.threads, config.device)
        common.seed_all(config.seed, self.runtime.rank)
        self.out_dir = Path(config.out_dir)
        self.train_records, self.val_records = split_by_patient(
            load_records(config.data), config.data.val_patients, config.data.val_count, config.data.split_seed
        )
        self.dataset = self.build_dataset()
        net = self.build_network()
        if config.init_from and not resume:
            load_initial_weights(net, config.init_from)
        self.net = net.to(self.runtime.device).to(memory_format=torch.channels_last)
        self.model = common.wrap_ddp(self.forward_module(), self.runtime)
        self.optimizer = self.build_optimizer([p for p in self.net.parameters() if p.requires_grad])
        self.total = self.total_iterations()
        self.checkpoint_path = self.out_dir / "last.pt"
        self.start, spent_s = common.resume_training(resume, self.checkpoint_path, self.net, self.optimizer)
        self.precision = common.resolve_precision(config.precision, self.runtime.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")
        self.log = common.MetricLog(self.out_dir / "train_log.csv", enabled=self.runtime.is_main)
        self.timer = common.Timer(config.time_limit_min, spent_s, config.time_limit_clock)

    # What a trainer brings.
    @abstractmethod
    def build_dataset(self) -> Any:
        """The training dataset of ``self.train_records`` (with ``set_epoch`` and indexing)."""

    @abstractmethod
    def build_network(self) -> nn.Module:
        """The untrained network (the loop loads ``init_from`` weights and moves it to the device)."""

    @abstractmethod
    def build_optimizer(self, parameters: list[nn.Parameter]) -> torch.optim.Optimizer:
        """The optimiser of the trainable parameters."""

    @abstractmethod
    def total_iterations(self) -> int:
        """Iterations of the whole run."""

    @abstractmethod
    def describe(self) -> str:
        """The line printed when training starts."""

    @abstractmethod
    def learning_rate(self, iteration: int) -> float:
        """The learning rate of ``iteration`` (called on every rank: it may agree across ranks)."""

    @abstractmethod
    def step_losses(self, iteration: int, batch: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """(loss to back-propagate, the logged parts: ``loss`` first) of one batch."""

    @abstractmethod
    def progress_postfix(self, parts: dict[str, float], lr: float) -> dict[str, str]:
        """What the progress bar shows after a logged iteration."""

    @abstractmethod
    def checkpoint_due(self, iteration: int) -> bool:
        """True after an iteration that ends a checkpoint period (the last one always saves)."""

    @abstractmethod
    def report(self) -> None:
        """Evaluate the last checkpoint on the held-out records and print it (main rank only)."""

    @abstractmethod
    def after_step(self, iteration: int) -> None:
        """What follows each iteration's checkpoint (a periodic validation, or nothing)."""

    def forward_module(self) -> nn.Module:
        """The module the loop calls (DDP wraps it); the network itself unless a trainer says otherwise."""
        return self.net

    # The loop.
    def run(self) -> Path:
        """Train to the last iteration (or the time limit); returns the last checkpoint's path.

        A resumed run that already reached either is left untouched (no further step, no report)."""
        if self.start >= self.total or self.timer.expired():
            if self.runtime.is_main:
                print(f"{self.checkpoint_path}: already trained ({self.start} iterations); nothing to do")
            common.shutdown(self.runtime)
            return self.checkpoint_path
        if self.runtime.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            config_json = json.dumps(to_dict(self.config), indent=2) + "\n"
            (self.out_dir / "config.json").write_text(config_json, encoding="utf-8")
            print(self.describe(), flush=True)
        self.model.train()
        progress = tqdm(
            total=self.total,
            initial=self.start,
            disable=not self.runtime.is_main,
            desc=self.kind,
            dynamic_ncols=True,
            file=sys.stdout,
            mininterval=1.0 if sys.stdout.isatty() else 30.0,
        )
        config = self.config
        stream = common.batch_stream(
            self.dataset, config.batch_size, config.seed, self.runtime, self.start, config.workers
        )
        iteration = self.start
        while iteration < self.total:
            iteration, epoch, batch = next(stream)
            lr, parts = self._optimise(iteration, batch)
            iteration += 1
            progress.update(1)
            if iteration % config.log_every == 0 or iteration == self.total:
                elapsed_s = round(self.timer.elapsed(), 1)
                self.log.log(
                    {"iteration": iteration, "epoch": epoch, "lr": lr, **parts, "elapsed_s": elapsed_s}
                )
                progress.set_postfix(**self.progress_postfix(parts, lr))
            stop = common.agree(self.timer.expired(), self.runtime)
            if self.runtime.is_main and (self.checkpoint_due(iteration) or stop or iteration == self.total):
                self._save(iteration, stopped_early=stop and iteration < self.total)
            self.after_step(iteration)
            if stop:
                if self.runtime.is_main:
                    tqdm.write(f"time limit of {config.time_limit_min} min reached at iteration {iteration}")
                break
        progress.close()
        self.log.close()
        common.check_replicas(self.model, self.runtime)
        if self.runtime.is_main and self.val_records:
            self.report()
        common.shutdown(self.runtime)
        return self.checkpoint_path

    def _optimise(self, iteration: int, batch: list[torch.Tensor]) -> tuple[float, dict[str, float]]:
        """One optimiser step at the scheduled learning rate; returns that rate and the logged losses."""
        lr = self.learning_rate(iteration)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss, parts = self.step_losses(iteration, batch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return lr, parts

    def _save(self, iteration: int, stopped_early: bool) -> None:
        common.save_checkpoint(
            self.checkpoint_path,
            self.model,
            self.optimizer,
            iteration,
            to_dict(self.config),
            {"kind": self.kind, "elapsed_s": self.timer.elapsed(), "stopped_early": stopped_early},
            keep=self.config.keep_checkpoints,
        )


def every(iteration: int, period: int) -> bool:
    """True when ``iteration`` ends a period of ``period`` iterations (never for a period of 0)."""
    return period > 0 and iteration % period == 0
