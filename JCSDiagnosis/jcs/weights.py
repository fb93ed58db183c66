"""Registry of named model weights with model cards and SHA-256 verification.

An entry NAME is two files in a registry directory: ``NAME.safetensors`` (the state dict) and
``NAME.json`` (the model card: kind, builder arguments, hash, input spec, training data, metrics,
recommended threshold, intended use). Two directories are searched, the user directory first
(``$JCS_WEIGHTS_DIR``, default ``~/.local/share/jcs-diagnosis/weights``) and then the directory bundled
with the package (``jcs/weights/``). Weights are only ever read with safetensors or
``torch.load(weights_only=True)``; a file whose hash differs from its card is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from jcs.decision import DEFAULT_THRESHOLD
from jcs.errors import WeightsError

BUNDLED_DIR = Path(__file__).resolve().parent / "weights"
KINDS = ("classifier", "segmenter")
CARD_VERSION = 1
INTENDED_USE = (
    "Research and education only. Not a medical device; not for clinical diagnosis or treatment decisions."
)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

INPUT_SPECS: dict[str, dict[str, Any]] = {
    "classifier": {
        "size": 224,
        "preprocessing": "8-bit lung-window slice as RGB, shorter side to 256, centre crop 224, "
        "ImageNet mean/std (jcs.preprocess.classifier_input)",
        "output": "logits (non-COVID, COVID-19); class 1 = COVID-19",
    },
    "segmenter": {
        "size": 512,
        "preprocessing": "8-bit lung-window slice resized to 512, official BGR-order normalisation "
        "(jcs.preprocess.segmenter_input)",
        "output": "5 sigmoid side outputs, channel 0 = prediction, threshold 0.5",
    },
}


@dataclass(frozen=True)
class WeightsCard:
    """A registry entry: its model card plus where its files are."""

    name: str
    kind: str
    architecture: dict[str, Any]
    sha256: str
    path: Path
    card_path: Path
    bundled: bool
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def threshold(self) -> int | None:
        """Recommended positive-slice threshold T (paper §IV: positive when count > T), if stated."""
        value = self.data.get("threshold")
        return int(value) if value is not None else None

    @property
    def source(self) -> str:
        """``"bundled"`` or ``"user"``."""
        return "bundled" if self.bundled else "user"

    def summary(self) -> dict[str, str]:
        """Name and hash, as reported in results.json and by the CLI."""
        return {"name": self.name, "sha256": self.sha256}


def user_dir() -> Path:
    """The user registry directory (``$JCS_WEIGHTS_DIR`` or ``~/.local/share/jcs-diagnosis/weights``)."""
    env = os.environ.get("JCS_WEIGHTS_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".local" / "share" / "jcs-diagnosis" / "weights"


def registry_dirs() -> list[tuple[Path, bool]]:
    """Directories searched for weights, in order, with whether each is the bundled one (a user
    directory that is the bundled directory itself counts once, as bundled)."""
    user = user_dir()
    if user.resolve() == BUNDLED_DIR.resolve():
        return [(BUNDLED_DIR, True)]
    return [(user, False), (BUNDLED_DIR, True)]


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_name(name: str) -> None:
    if not _NAME_RE.match(name):
        raise WeightsError(
            f"invalid weights name {name!r}: use letters, digits, '.', '_' or '-' (at most 128 characters)"
        )


def _read_card(card_path: Path, bundled: bool) -> WeightsCard:
    try:
        data = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"model card {card_path} is unreadable: {exc}") from exc
    if not isinstance(data, dict):
        raise WeightsError(f"model card {card_path} is not a JSON object")
    missing = [key for key in ("name", "kind", "architecture", "sha256") if key not in data]
    if missing:
        raise WeightsError(f"model card {card_path} lacks {', '.join(missing)}")
    if data["kind"] not in KINDS:
        raise WeightsError(f"model card {card_path}: kind {data['kind']!r} is not one of {KINDS}")
    if not isinstance(data["architecture"], dict):
        raise WeightsError(f"model card {card_path}: 'architecture' must be an object of builder arguments")
    weights_file = card_path.with_name(Path(str(data.get("file", f"{card_path.stem}.safetensors"))).name)
    return WeightsCard(
        name=str(data["name"]),
        kind=str(data["kind"]),
        architecture=dict(data["architecture"]),
        sha256=str(data["sha256"]).lower(),
        path=weights_file,
        card_path=card_path,
        bundled=bundled,
        data=data,
    )


def scan_registry() -> tuple[list[WeightsCard], list[str]]:
    """(valid entries, one message per unreadable or invalid model card); user entries come first
    and hide bundled entries of the same name."""
    cards: dict[str, WeightsCard] = {}
    problems: list[str] = []
    for directory, bundled in registry_dirs():
        if not directory.is_dir():
            continue
        for card_path in sorted(directory.glob("*.json")):
            try:
                card = _read_card(card_path, bundled)
            except WeightsError as exc:
                problems.append(str(exc))
                continue
            cards.setdefault(card.name, card)
    return list(cards.values()), problems


def list_weights() -> list[WeightsCard]:
    """Every valid registry entry (see :func:`scan_registry`; invalid cards are left out)."""
    return scan_registry()[0]


def find_weights(name: str) -> WeightsCard:
    """The card of registry entry ``name``; WeightsError naming the searched directories if absent."""
    _check_name(name)
    for directory, bundled in registry_dirs():
        card_path = directory / f"{name}.json"
        if card_path.is_file():
            return _read_card(card_path, bundled)
    searched = ", ".join(str(d) for d, _ in registry_dirs())
    raise WeightsError(
        f"no weights named {name!r} (searched {searched}); `jcs weights list` shows what is installed"
    )


def _cards_in(directory: Path, bundled: bool) -> list[WeightsCard]:
    cards = []
    for card_path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            cards.append(_read_card(card_path, bundled))
        except WeightsError:
            continue
    return cards


def default_weights(kind: str) -> str | None:
    """Name of the default weights of ``kind``, or None when there is none.

    The default is the bundled card marked ``"default": true``, else the only bundled entry of that
    kind; without bundled weights, a user-registry card marked default (a copy of the bundled
    registry in ``$JCS_WEIGHTS_DIR`` keeps its marks). The name is then looked up as any other, so a
    user entry of the same name is the one loaded (its own hash is verified).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    for directory, bundled in reversed(registry_dirs()):  # bundled first
        cards = [c for c in _cards_in(directory, bundled) if c.kind == kind]
        marked = [c for c in cards if c.data.get("default") is True]
        if marked:
            return marked[0].name
        if bundled and len(cards) == 1:
            return cards[0].name
    return None


def flush_subnormals(model: nn.Module) -> int:
    """Set to zero, in place, every weight below float32's smallest normal number; returns how many.

    Such values change no output (they are ~1e-38), but x86 CPUs compute with them at a fraction of
    their speed: the bundled segmenter holds about 1.1 million, which made its float32 pass 13× slower
    (benchmarks/bench_subnormal.py). Values an fp16/bf16 file stores are all far above that bound.
    """
    smallest = torch.finfo(torch.float32).tiny
    flushed = 0
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                tiny = (tensor != 0) & (tensor.abs() < smallest)
                count = int(tiny.sum())
                if count:
                    tensor.masked_fill_(tiny, 0.0)
                    flushed += count
    return flushed


def load_model(name: str, *, verify: bool = True) -> tuple[nn.Module, WeightsCard]:
    """Build and load registry entry ``name``; returns (model in eval mode, card).

    The safetensors file's SHA-256 must equal the card's, otherwise the file was changed after it
    was registered and is refused.
    """
    card = find_weights(name)
    if not card.path.is_file():
        raise WeightsError(f"weights file {card.path} named by card {card.card_path} is missing")
    if verify:
        actual = sha256_file(card.path)
        if actual != card.sha256:
            raise WeightsError(
                f"weights file {card.path} does not match its model card (SHA-256 {actual[:12]}… "
                f"instead of {card.sha256[:12]}…): the file was modified or replaced; refusing to load it"
            )
    try:
        state = load_file(str(card.path))
    except (SafetensorError, OSError) as exc:
        raise WeightsError(f"weights file {card.path} is not a readable safetensors file: {exc}") from exc
    from jcs.models import model_from_state_dict

    source = f"weights file {card.path} (card {card.card_path.name})"
    model = model_from_state_dict(card.kind, state, source=source, **card.architecture)
    flush_subnormals(model)
    return model, card


def save_weights(model: nn.Module, card: Mapping[str, Any], directory: Path | str) -> WeightsCard:
    """Write ``model``'s state dict as NAME.safetensors and its card (with SHA-256) as NAME.json.

    ``card`` needs ``name``, ``kind`` and ``architecture`` (the builder arguments that rebuild
    ``model``; taken from ``model.architecture`` when absent); ``input``, ``intended_use`` and
    ``card_version`` are filled in when absent.
    """
    data = dict(card)
    architecture = getattr(model, "architecture", None)
    if "architecture" not in data and isinstance(architecture, dict):
        data["architecture"] = dict(architecture)
    for key in ("name", "kind", "architecture"):
        if key not in data:
            raise WeightsError(f"model card needs {key!r}")
    name = str(data["name"])
    _check_name(name)
    if data["kind"] not in KINDS:
        raise WeightsError(f"model card kind {data['kind']!r} is not one of {KINDS}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights_path = directory / f"{name}.safetensors"
    card_path = directory / f"{name}.json"
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    tmp = weights_path.with_suffix(".safetensors.tmp")
    # one metadata key: safetensors writes a metadata map in no fixed order, so two keys would make
    # byte-identical weights hash differently from one save to the next
    save_file(tensors, str(tmp), metadata={"name": name})
    os.replace(tmp, weights_path)
    data["file"] = weights_path.name
    data["sha256"] = sha256_file(weights_path)
    data.setdefault("input", INPUT_SPECS[data["kind"]])
    data.setdefault("intended_use", INTENDED_USE)
    data.setdefault("card_version", CARD_VERSION)
    tmp_card = card_path.with_suffix(".json.tmp")
    tmp_card.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp_card, card_path)  # the card last: an interrupted save leaves no card for new weights
    return _read_card(card_path, bundled=directory.resolve() == BUNDLED_DIR)


def _check_free_name(name: str, directory: Path, overwrite: bool) -> None:
    """Refuse (unless ``overwrite``) a name already in ``directory`` or hiding a bundled entry."""
    if overwrite:
        return
    taken = [p.name for p in (directory / f"{name}.json", directory / f"{name}.safetensors") if p.exists()]
    if taken:
        raise WeightsError(
            f"weights named {name!r} already exist in {directory} ({', '.join(taken)}); choose another "
            "--name, or pass --overwrite to replace them"
        )
    if directory.resolve() != BUNDLED_DIR.resolve() and (BUNDLED_DIR / f"{name}.json").is_file():
        raise WeightsError(
            f"{name!r} is the name of bundled weights; a user entry of that name would hide them. Choose "
            "another --name, or pass --overwrite to hide the bundled entry"
        )


def _official_mismatch(state: Mapping[str, torch.Tensor]) -> str:
    """The differences to the closest official format (fewest missing/unexpected/mis-shaped keys)."""
    from jcs.models.checkpoint import OFFICIAL_FORMATS, expected_shapes, state_dict_mismatch

    best = None
    for fmt, (kind, arch) in OFFICIAL_FORMATS.items():
        missing, unexpected, misshaped = state_dict_mismatch(state, expected_shapes(kind, **arch))
        score = len(missing) + len(unexpected) + len(misshaped)
        if best is None or score < best[0]:
            best = (score, fmt, missing, unexpected, misshaped)
    assert best is not None
    _, fmt, missing, unexpected, misshaped = best
    parts = [
        f"{label} {', '.join(keys[:3])}{f' (+{len(keys) - 3} more)' if len(keys) > 3 else ''}"
        for label, keys in (("mis-shaped", misshaped), ("missing", missing), ("unexpected", unexpected))
        if keys
    ]
    return f"closest is {fmt!r}: {'; '.join(parts)}"


def import_official(
    path: Path | str, name: str, directory: Path | str | None = None, *, overwrite: bool = False
) -> WeightsCard:
    """Convert an official JCS checkpoint (any of the four formats, detected) into the registry.

    The checkpoint is read with ``jcs.models.load_checkpoint`` (safetensors or
    ``torch.load(weights_only=True)``), matched against the reference manifest, loaded strictly into
    the model it describes and written to ``directory`` (default: the user registry). An existing
    entry NAME, or a bundled one it would hide, is refused unless ``overwrite``; the entry is written
    under a lock (``jcs.outputs.FolderLock``), weights first and the card last.
    """
    from jcs.errors import OutputError
    from jcs.outputs import FolderLock

    _check_name(name)
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint {path} does not exist")
    target = user_dir() if directory is None else Path(directory)
    _check_free_name(name, target, overwrite)
    try:
        with FolderLock(target / name):
            return _import_locked(path, name, target)
    except OutputError as exc:
        raise WeightsError(str(exc)) from exc


def _import_locked(path: Path, name: str, target: Path) -> WeightsCard:
    from jcs import models

    state = models.load_checkpoint(path)
    fmt = models.detect_official_format(state)
    if fmt is None:
        raise WeightsError(
            f"checkpoint {path} matches none of the official JCS formats "
            f"({', '.join(models.OFFICIAL_FORMATS)}); {_official_mismatch(state)}"
        )
    kind, architecture = models.OFFICIAL_FORMATS[fmt]
    model = models.model_from_state_dict(kind, state, source=f"checkpoint {path}", **architecture)
    flush_subnormals(model)
    card: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "architecture": architecture,
        "official_format": fmt,
        "source": {"file": path.name, "sha256": sha256_file(path)},
        "training_data": "official JCS release (Wu et al., IEEE TIP 2021; COVID-CS)",
        "metrics": {},
    }
    if kind == "classifier":
        card["threshold"] = DEFAULT_THRESHOLD
    return save_weights(model, card, target)
