"""Weights registry: model cards, SHA-256 verification, safe loading, official checkpoint import."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from jcs import weights
from jcs.errors import WeightsError
from jcs.weights import (
    default_weights,
    find_weights,
    import_official,
    list_weights,
    load_model,
    save_weights,
    scan_registry,
    sha256_file,
)
from safetensors import safe_open
from tiny_weights import TINY_CLASSIFIER_ARCH, make_tiny_classifier

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference"
MANIFEST = REFERENCE / "jcs_official_state_dict_manifest.json"


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty user registry and an empty 'bundled' directory."""
    user, bundled = tmp_path / "user", tmp_path / "bundled"
    bundled.mkdir()
    monkeypatch.setenv("JCS_WEIGHTS_DIR", str(user))
    monkeypatch.setattr(weights, "BUNDLED_DIR", bundled)
    return user


def _save_tiny(directory: Path, name: str = "clf", **extra: object) -> weights.WeightsCard:
    card = {"name": name, "kind": "classifier", "architecture": TINY_CLASSIFIER_ARCH, **extra}
    return save_weights(make_tiny_classifier(), card, directory)


def test_save_and_load_round_trip(registry: Path) -> None:
    card = _save_tiny(registry, threshold=12, metrics={"auc": 0.5})
    assert card.sha256 == sha256_file(registry / "clf.safetensors")
    data = json.loads((registry / "clf.json").read_text())
    assert data["sha256"] == card.sha256 and data["threshold"] == 12
    assert "not for clinical" in data["intended_use"]
    assert data["input"]["size"] == 224
    model, loaded = load_model("clf")
    assert not model.training and loaded.threshold == 12 and loaded.source == "user"
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), make_tiny_classifier()(x))
    assert [c.name for c in list_weights()] == ["clf"]


def test_saving_the_same_weights_again_gives_the_same_file(registry: Path) -> None:
    """A re-export of unchanged weights keeps its SHA-256 (safetensors writes a metadata map in no
    fixed order, so the file carries a single metadata key)."""
    hashes = {_save_tiny(registry / str(i)).sha256 for i in range(4)}
    assert len(hashes) == 1


def test_subnormal_weights_are_flushed_on_load(registry: Path) -> None:
    """Weights under float32's smallest normal (x86 computes with them many times slower) load as 0."""
    model = make_tiny_classifier()
    name, weight = next((n, p) for n, p in model.named_parameters() if p.dim() == 4)
    with torch.no_grad():
        weight.view(-1)[:5] = torch.tensor([1e-39, -3e-40, 1e-45, 2e-38, 0.5])
    card = {"name": "subnormal", "kind": "classifier", "architecture": TINY_CLASSIFIER_ARCH}
    save_weights(model, card, registry)
    with safe_open(str(registry / "subnormal.safetensors"), "pt") as stored:
        assert stored.get_tensor(name).view(-1)[:3].abs().max() > 0  # the file keeps them
    loaded, _ = load_model("subnormal")
    values = dict(loaded.named_parameters())[name].view(-1)[:5]
    assert values[:3].tolist() == [0.0, 0.0, 0.0]  # exactly zero
    assert torch.equal(values[3:], torch.tensor([2e-38, 0.5]))  # normal numbers untouched
    smallest = torch.finfo(torch.float32).tiny
    assert not any(((t != 0) & (t.abs() < smallest)).any() for t in loaded.state_dict().values())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.eval()(x))
    assert weights.flush_subnormals(loaded) == 0  # nothing left


def test_architecture_defaults_to_model_attribute(registry: Path) -> None:
    card = save_weights(make_tiny_classifier(), {"name": "auto-arch", "kind": "classifier"}, registry)
    assert card.architecture["width_mult"] == TINY_CLASSIFIER_ARCH["width_mult"]
    load_model("auto-arch")


def test_tampered_file_is_refused(registry: Path) -> None:
    _save_tiny(registry)
    path = registry / "clf.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="does not match its model card"):
        load_model("clf")


def test_wrong_architecture_is_refused(registry: Path) -> None:
    _save_tiny(registry)
    card_path = registry / "clf.json"
    card = json.loads(card_path.read_text())
    card["architecture"]["width_mult"] = 0.25
    card_path.write_text(json.dumps(card))
    with pytest.raises(WeightsError, match="do not fit"):
        load_model("clf")
    card["kind"] = "segmenter"
    card["architecture"] = {"joint": False, "width_mult": 0.125}
    card_path.write_text(json.dumps(card))
    with pytest.raises(WeightsError, match="do not fit"):
        load_model("clf")


def test_missing_and_invalid_names(registry: Path) -> None:
    with pytest.raises(WeightsError, match="no weights named 'nope'.*jcs weights list"):
        load_model("nope")
    with pytest.raises(WeightsError, match="invalid weights name"):
        find_weights("../etc/passwd")
    (registry).mkdir(exist_ok=True)
    (registry / "broken.json").write_text("{not json")
    _save_tiny(registry)
    assert [c.name for c in list_weights()] == ["clf"]
    cards, problems = scan_registry()
    assert len(cards) == 1 and len(problems) == 1 and "broken.json is unreadable" in problems[0]
    with pytest.raises(WeightsError, match="unreadable"):
        find_weights("broken")


def test_default_weights_and_user_precedence(registry: Path) -> None:
    assert default_weights("classifier") is None
    bundled = weights.BUNDLED_DIR
    _save_tiny(bundled, name="bundled-clf")
    assert default_weights("classifier") == "bundled-clf"
    assert default_weights("segmenter") is None
    _save_tiny(bundled, name="bundled-clf-2", default=True)
    assert default_weights("classifier") == "bundled-clf-2"
    _save_tiny(registry, name="bundled-clf")  # a user entry hides the bundled one
    assert find_weights("bundled-clf").source == "user"
    assert {c.name: c.source for c in list_weights()} == {
        "bundled-clf": "user",
        "bundled-clf-2": "bundled",
    }


def _manifest() -> dict[str, dict[str, list[int]]]:
    if not MANIFEST.is_file():
        pytest.skip(f"reference manifest {MANIFEST} is absent")
    return json.loads(MANIFEST.read_text())


def _official_state(fmt: str) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        key: torch.rand(shape, generator=generator) if len(shape) == 1 else torch.zeros(shape)
        for key, shape in _manifest()[fmt].items()
    }


@pytest.mark.parametrize(
    ("fmt", "kind", "wrap"),
    [
        ("classifier_res2net50_v1b_26w_4s_fc2", "classifier", "state_dict+module"),
        ("classifier_res2net101_v1b_26w_4s_fc2", "classifier", "plain"),
        ("segmentation_single", "segmenter", "module"),
        ("segmentation_joint", "segmenter", "state_dict"),
    ],
)
def test_import_official_each_format(registry: Path, tmp_path: Path, fmt: str, kind: str, wrap: str) -> None:
    state = _official_state(fmt)
    obj: object = state
    if "module" in wrap:
        obj = {f"module.{k}": v for k, v in state.items()}
    if "state_dict" in wrap:
        obj = {"state_dict": obj, "epoch": 3}
    checkpoint = tmp_path / f"{fmt}.pth"
    torch.save(obj, checkpoint)
    card = import_official(checkpoint, "official")
    assert card.kind == kind and card.data["official_format"] == fmt
    assert card.path.parent == registry and card.data["source"]["sha256"] == sha256_file(checkpoint)
    with safe_open(card.path, framework="pt") as stored:
        assert set(stored.keys()) == set(state)
        some_vector = next(k for k, s in _manifest()[fmt].items() if len(s) == 1)
        torch.testing.assert_close(stored.get_tensor(some_vector), state[some_vector])


def test_import_refuses_non_official_and_unsafe(registry: Path, tmp_path: Path) -> None:
    small = tmp_path / "small.pth"
    torch.save(make_tiny_classifier().state_dict(), small)
    with pytest.raises(WeightsError, match="matches none of the official JCS formats"):
        import_official(small, "x")
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"state_dict": make_tiny_classifier().state_dict(), "cfg": Path("/tmp")}, unsafe)
    with pytest.raises(WeightsError, match="refused|weights_only|not a state dict"):
        import_official(unsafe, "x")
    with pytest.raises(WeightsError, match="does not exist"):
        import_official(tmp_path / "absent.pth", "x")
    assert not list_weights()


def test_tiny_weights_fixture(tiny_weights: dict[str, str]) -> None:
    names = {c.name: c.kind for c in list_weights()}
    assert names[tiny_weights["classifier"]] == "classifier"
    assert names[tiny_weights["segmenter"]] == "segmenter"
