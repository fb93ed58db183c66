"""training.soup: WiSE-FT weight interpolation of a fine-tuned model with its starting point."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from test_training_runs import seg_config, states_equal

from training import common, export, soup, train_segmenter
from training.config import SegmenterConfig, load_config
from training.models import model_from_checkpoint


def test_interpolation_is_linear_in_floats_and_keeps_the_tuned_counters() -> None:
    base = {"w": torch.tensor([0.0, 2.0]), "bn.num_batches_tracked": torch.tensor(3)}
    tuned = {"w": torch.tensor([4.0, 6.0]), "bn.num_batches_tracked": torch.tensor(9)}
    mixed = soup.interpolate_states(base, tuned, 0.25)
    assert torch.equal(mixed["w"], torch.tensor([1.0, 3.0]))
    assert mixed["bn.num_batches_tracked"].item() == 9
    assert torch.equal(soup.interpolate_states(base, tuned, 0.0)["w"], base["w"])


@pytest.mark.parametrize(
    ("tuned", "alpha", "message"),
    [
        ({"w": torch.zeros(2), "extra": torch.zeros(1)}, 0.5, "different layers"),
        ({"w": torch.zeros(3)}, 0.5, "has shape (2,) in the base model and (3,)"),
        ({"w": torch.zeros(2)}, 1.5, "alpha must lie in [0, 1]"),
    ],
)
def test_models_that_cannot_be_mixed_are_refused(tuned: dict, alpha: float, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        soup.interpolate_states({"w": torch.zeros(2)}, tuned, alpha)


def test_soup_of_a_fine_tuning_run_loads_like_a_training_checkpoint(tmp_path: Path) -> None:
    config = load_config(SegmenterConfig, seg_config(tmp_path))
    tuned_path = train_segmenter.train(config)
    base_path = Path(config.out_dir) / "iter_000002.pt"
    base, tuned = (common.load_training_checkpoint(p)["model"] for p in (base_path, tuned_path))

    out = soup.soup(str(base_path), str(tuned_path), 0.5, tmp_path / "soup" / "last.pt")
    kind, net, soup_config = model_from_checkpoint(out)
    assert kind == "segmenter" and soup_config.out_dir == str(tmp_path / "soup")
    key = next(k for k, v in base.items() if v.is_floating_point() and not torch.equal(v, tuned[k]))
    assert torch.allclose(net.state_dict()[key], (base[key] + tuned[key]) / 2)
    assert common.load_training_checkpoint(out)["extra"]["wise_ft"]["alpha"] == 0.5
    exported = export.export(out, "tiny-soup", tmp_path / "weights", {}, "tiny test slices")
    recorded = {"base": str(base_path), "tuned": str(tuned_path), "alpha": 0.5}
    assert exported["card"]["training"]["wise_ft"] == recorded
    assert "training.soup" in exported["card"]["training"]["code"] and exported["reload_max_abs_diff"] < 1e-5

    whole_tuned = model_from_checkpoint(soup.soup(str(base_path), str(tuned_path), 1.0, out))[1]
    assert states_equal(whole_tuned.state_dict(), tuned)


def test_cli_names_the_problem_instead_of_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        soup.main(
            ["--base", str(tmp_path / "a.pt"), "--tuned", str(tmp_path / "b.pt"), "--alpha", "0.5", "--out",
             str(tmp_path / "c.pt")]
        )
    assert exit_info.value.code == 2
    assert "does not exist" in capsys.readouterr().err
