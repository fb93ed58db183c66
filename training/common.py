"""Shared training machinery: torchrun/DDP set-up, precision, deterministic batching, checkpoints, logs."""

from __future__ import annotations

import contextlib
import csv
import itertools
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from jcs.inference import autocast as engine_autocast
from jcs.inference import cpu_supports_bf16
from jcs.options import Precision
from torch import nn


@dataclass
class Runtime:
    """Process placement: rank/world size from torchrun's environment, and the device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_runtime(threads: int = 0, device: str = "auto") -> Runtime:
    """Join the process group when launched by ``torchrun`` (NCCL on GPUs, gloo on CPU).

    ``device``: ``auto`` trains on CUDA when PyTorch sees a GPU, else on the CPU; ``cpu``/``cuda`` force one.
    """
    if threads > 0:
        torch.set_num_threads(threads)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, not {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but PyTorch sees no CUDA GPU")
    if device != "cpu" and torch.cuda.is_available():
        gpus = torch.cuda.device_count()
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        if per_node > gpus:
            raise RuntimeError(
                f"{per_node} training processes on this node but {gpus} CUDA GPU(s): run one process per "
                f"GPU (torchrun --nproc_per_node {gpus}), or train on the CPU with gloo (--set device=cpu)"
            )
        chosen = torch.device("cuda", local_rank)
        torch.cuda.set_device(chosen)
    else:
        chosen = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if chosen.type == "cuda" else "gloo")
    return Runtime(rank, world, local_rank, chosen)


def shutdown(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto``: bf16 autocast on CUDA where supported (else fp16), bf16 on CPUs with native bf16
    (the engine's :func:`jcs.inference.cpu_supports_bf16`), else fp32.

    Training's own default differs from the engine's on CUDA (bf16 there, for its wider range in
    gradients; the engine infers in fp16), and an explicit bf16 is allowed on any CPU (emulated).
    """
    if precision not in Precision.values():
        raise ValueError(f"precision must be auto, fp32, bf16 or fp16, not {precision!r}")
    if precision != "auto":
        if precision == "fp16" and device.type != "cuda":
            raise ValueError("fp16 training needs a CUDA device; use bf16 or fp32 on CPU")
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_supports_bf16() else "fp32"


def default_device() -> torch.device:
    """Where evaluation runs: the GPU when PyTorch sees one, else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def inference_precision(precision: str, device: torch.device) -> str:
    """The training precision where ``device`` supports it; fp16 (CUDA-only) becomes ``auto`` elsewhere."""
    if precision == "fp16" and device.type != "cuda":
        precision = "auto"
    return resolve_precision(precision, device)


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """Autocast context for a resolved precision: `jcs.inference.autocast` (a no-op for fp32)."""
    return engine_autocast(precision, device)


class LogitsModel(nn.Module):
    """Routes ``forward`` to ``forward_logits`` so DDP sees the call that the losses need."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_logits(x)


def unwrap(model: nn.Module) -> nn.Module:
    """The bare network inside DDP and :class:`LogitsModel` wrappers."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, LogitsModel)):
        model = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model.net
    return model


def wrap_ddp(model: nn.Module, runtime: Runtime) -> nn.Module:
    if not runtime.distributed:
        return model
    ids = [runtime.device.index] if runtime.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, runtime: Runtime) -> list[list[int]]:
    """This rank's batches of one epoch: a permutation seeded by (seed, epoch), split across ranks.

    The permutation is padded by wrapping so that every rank gets the same number of full batches
    (the incomplete last batch is dropped); iteration ``i`` therefore always sees the same samples,
    which makes resuming exact.
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=generator).tolist()
    per_rank = max(1, -(-n // runtime.world_size))
    order = (order * (1 + per_rank * runtime.world_size // n))[: per_rank * runtime.world_size]
    mine = order[runtime.rank :: runtime.world_size]
    if len(mine) < batch_size:
        raise ValueError(f"batch size {batch_size} exceeds the {len(mine)} training samples per process")
    return [mine[i : i + batch_size] for i in range(0, len(mine) - batch_size + 1, batch_size)]


def collate(dataset: torch.utils.data.Dataset, indices: list[int]) -> list[torch.Tensor]:
    """Stack the items of ``indices`` field by field."""
    items = [dataset[i] for i in indices]
    return [torch.stack(field) for field in zip(*items, strict=True)]


class _EpochItems(torch.utils.data.Dataset):
    """Items addressed as (epoch, index), so loader workers draw the same augmentation as the main process."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        self.dataset.set_epoch(epoch)
        return self.dataset[index]


def _schedule(
    n: int, batch_size: int, seed: int, runtime: Runtime, start_iteration: int
) -> Iterator[tuple[int, int, list[int]]]:
    """Endless (iteration, epoch, indices) from ``start_iteration`` on."""
    per_epoch = len(epoch_batches(n, batch_size, seed, 0, runtime))
    iteration = start_iteration
    while True:
        epoch, step = divmod(iteration, per_epoch)
        for indices in epoch_batches(n, batch_size, seed, epoch, runtime)[step:]:
            yield iteration, epoch, indices
            iteration += 1


def batch_stream(
    dataset: Any, batch_size: int, seed: int, runtime: Runtime, start_iteration: int, workers: int = 0
) -> Iterator[tuple[int, int, list[torch.Tensor]]]:
    """Endless (iteration, epoch, batch) from ``start_iteration`` on, deterministic for resuming.

    With ``workers`` > 0, batches are prepared in that many loader processes (a GPU outruns one CPU
    core's augmentation); items depend only on (seed, epoch, index), so the batches are the same.
    """
    schedule = _schedule(len(dataset), batch_size, seed, runtime, start_iteration)
    if workers <= 0:
        for iteration, epoch, indices in schedule:
            dataset.set_epoch(epoch)
            yield iteration, epoch, collate(dataset, indices)
        return
    steps, keys = itertools.tee(schedule)
    loader = torch.utils.data.DataLoader(
        _EpochItems(dataset),
        batch_sampler=([(epoch, i) for i in indices] for _, epoch, indices in keys),
        num_workers=workers,
        pin_memory=runtime.device.type == "cuda",
        prefetch_factor=4,
        persistent_workers=True,
    )
    for (iteration, epoch, _), batch in zip(steps, loader, strict=False):
        yield iteration, epoch, list(batch)


def iterations_per_epoch(n: int, batch_size: int, runtime: Runtime) -> int:
    return len(epoch_batches(n, batch_size, 0, 0, runtime))


def save_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    iteration: int,
    config: dict[str, Any],
    extra: dict[str, Any] | None = None,
    keep: bool = False,
) -> None:
    """Atomically write model, optimizer, iteration and config (loadable with weights_only=True).

    ``keep`` also leaves a copy ``iter_NNNNNN.pt`` beside ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "iteration": iteration,
        "config": config,
        "extra": extra or {},
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    if keep:
        shutil.copyfile(path, path.with_name(f"iter_{iteration:06d}.pt"))


def check_replicas(model: nn.Module, runtime: Runtime) -> None:
    """After DDP training, verify that every rank holds the same parameters."""
    if not runtime.distributed:
        return
    with torch.no_grad():
        total = torch.stack([p.detach().double().sum() for p in unwrap(model).parameters()]).sum().reshape(1)
    low, high = total.clone(), total.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if not torch.allclose(low, high, rtol=1e-9, atol=1e-9):
        raise RuntimeError(f"DDP replicas diverged: parameter sums {low.item()} … {high.item()}")
    if runtime.is_main:
        print(f"DDP: {runtime.world_size} replicas in sync (parameter sum {total.item():.6f})", flush=True)


def load_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by :func:`save_checkpoint` (``torch.load(weights_only=True)``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise ValueError(f"{path} is not a training checkpoint (needs 'model' and 'config')")
    return state


def resume_training(
    resume: str | None, checkpoint_path: Path, model: nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[int, float]:
    """Restore ``model`` and ``optimizer`` for ``--resume`` (``auto`` = ``checkpoint_path`` if present).

    Returns the iteration to start from and the training time already spent (seconds).
    """
    if not resume:
        return 0, 0.0
    source = checkpoint_path if resume == "auto" else Path(resume)
    if not source.is_file():
        if resume == "auto":
            return 0, 0.0
        raise FileNotFoundError(f"checkpoint {source} to resume from does not exist")
    state = load_training_checkpoint(source)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return int(state["iteration"]), float(state["extra"].get("elapsed_s", 0.0))


class MetricLog:
    """CSV log of training scalars (rank 0), mirrored to TensorBoard when it is installed."""

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path = path
        self.enabled = enabled
        self.fields: list[str] | None = None
        self.writer = None
        if enabled:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists():
                with open(path, newline="", encoding="utf-8") as handle:
                    self.fields = next(csv.reader(handle), None)
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(path.parent / "tensorboard"))
            except ImportError:
                self.writer = None

    def log(self, row: dict[str, float]) -> None:
        """Append ``row``; a key not seen before adds a column (the file is rewritten with it)."""
        if not self.enabled:
            return
        added = [key for key in row if key not in (self.fields or [])]
        if added:
            self._add_columns(added)
        with open(self.path, "a", newline="", encoding="utf-8") as handle:
            csv.DictWriter(handle, fieldnames=self.fields).writerow(row)
        if self.writer is not None:
            step = int(row.get("iteration", 0))
            for key, value in row.items():
                if key != "iteration":
                    self.writer.add_scalar(key, value, step)

    def _add_columns(self, keys: list[str]) -> None:
        rows: list[dict[str, str]] = []
        if self.fields is not None and self.path.exists():
            with open(self.path, newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
        self.fields = [*(self.fields or []), *keys]
        with open(self.path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.fields)
            writer.writeheader()
            writer.writerows(rows)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class Timer:
    """Budget in minutes of wall-clock (``clock="wall"``) or of this process's CPU time (``"cpu"``).

    ``expired()`` once the budget is used (never when it is 0). CPU time makes a budget such as "10
    CPU-minutes" independent of other load on a shared machine. ``already_s`` is the time spent
    before a resume, so a resumed run keeps its budget.
    """

    def __init__(self, limit_min: float, already_s: float = 0.0, clock: str = "wall") -> None:
        if clock not in ("wall", "cpu"):
            raise ValueError(f"time_limit_clock must be 'wall' or 'cpu', not {clock!r}")
        self.now = time.process_time if clock == "cpu" else time.monotonic
        self.start = self.now() - already_s
        self.limit_s = limit_min * 60.0

    def elapsed(self) -> float:
        return self.now() - self.start

    def fraction(self) -> float:
        """Share of the budget used (0 without a limit)."""
        return self.elapsed() / self.limit_s if self.limit_s > 0 else 0.0

    def expired(self) -> bool:
        return self.limit_s > 0 and self.elapsed() >= self.limit_s


def shared_max(value: float, runtime: Runtime) -> float:
    """The maximum of ``value`` over all ranks (every rank then uses the same number)."""
    if not runtime.distributed:
        return value
    tensor = torch.tensor([float(value)], dtype=torch.float64)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return float(tensor.item())


def agree(flag: bool, runtime: Runtime) -> bool:
    """True on every rank when ``flag`` is True on any rank (e.g. the time budget ran out)."""
    if not runtime.distributed:
        return flag
    tensor = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item() > 0)


def seed_all(seed: int, rank: int = 0) -> np.random.Generator:
    torch.manual_seed(seed + rank)
    return np.random.default_rng([seed, rank])
