"""`jcs.pipeline`: the Python API reads a case as `jcs diagnose` does, and `CaseResult` is its results.json.

The bundled sample (48 slices of COVID-CT-MD P001) is read once by the command line (in a process of
its own, with ``--progress json``) and once by :func:`jcs.pipeline.run_case`, both with the bundled
weights and the command's defaults.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from jcs.inference import DiagnosisResult
from jcs.lung import find_lungs
from jcs.options import DecisionRule, DiagnosisOptions, Precision, SegmentPolicy
from jcs.pipeline import RESULTS_CSV_FIELDS, TABLE_FILES, CaseResult, LesionRow, quantify_case, run_case
from jcs.quantify import LESION_FIELDS
from jcs.sample import sample_path
from phantoms import make_chest_phantom, margin_case


@pytest.fixture(scope="module")
def cli_sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """`python -m jcs.cli diagnose --sample --progress json`: (its output folder, its stdout)."""
    out = tmp_path_factory.mktemp("cli") / "sample"
    process = subprocess.run(
        [sys.executable, "-m", "jcs.cli", "diagnose", "--sample", "--out", str(out), "--progress", "json"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert process.returncode == 0, process.stderr
    return out, process.stdout


@pytest.fixture(scope="module")
def api_sample() -> CaseResult:
    """`run_case(sample)` with the command's defaults."""
    return run_case(sample_path())


@pytest.mark.slow
def test_run_case_reads_the_sample_as_the_command_line_does(
    cli_sample: tuple[Path, str], api_sample: CaseResult
) -> None:
    cli = json.loads((cli_sample[0] / "results.json").read_text())
    api = api_sample.to_json()
    assert api["case"] == cli["case"]  # decision, rule, counts, threshold, policy
    assert api["case"]["decision"] in set(DecisionRule)
    assert len(api["slices"]) == len(cli["slices"]) == 48
    assert [s["positive"] for s in api["slices"]] == [s["positive"] for s in cli["slices"]]
    np.testing.assert_allclose(
        [s["probability"] for s in api["slices"]], [s["probability"] for s in cli["slices"]], rtol=1e-6
    )
    for key in ("opacification_volume_ml", "opacification_percent", "lung_volume_ml", "lesion_count"):
        assert api["summary"][key] == pytest.approx(cli["summary"][key], rel=1e-6), key
    assert len(api["lesions"]) == len(cli["lesions"]) == cli["summary"]["lesion_count"]
    # every field of the command's results.json is in the API's reading (fields may be added, none lost)
    assert set(cli) <= set(api)
    for block in ("input", "case", "summary", "weights", "outputs"):
        assert set(cli[block]) <= set(api[block]), block
    assert set(cli["slices"][0]) <= set(api["slices"][0])
    assert (api["input"], api["weights"], api["device"], api["precision"]) == (
        cli["input"], cli["weights"], cli["device"], cli["precision"],
    )
    assert api["notes"] == cli["notes"]


@pytest.mark.slow
def test_case_result_round_trips_through_json(api_sample: CaseResult) -> None:
    data = api_sample.to_json()
    text = json.dumps(data, allow_nan=False)
    again = CaseResult.from_json(json.loads(text))
    assert again == api_sample
    assert again.to_json() == data
    assert isinstance(again.case.segment_policy, SegmentPolicy) and isinstance(again.precision, Precision)
    assert all(isinstance(row, LesionRow) for row in again.lesions)
    assert [f for f in LesionRow.__dataclass_fields__] == list(LESION_FIELDS)


@pytest.mark.slow
def test_write_tables_is_the_command_lines_table_writer(
    cli_sample: tuple[Path, str], api_sample: CaseResult, tmp_path: Path
) -> None:
    """The tables written from the command's results.json are the command's files, byte for byte; the
    API's own reading writes the same tables too."""
    out, _ = cli_sample
    from_json = CaseResult.read(out / "results.json")
    written = from_json.write_tables(tmp_path / "from_json")
    assert [p.name for p in written] == list(TABLE_FILES)
    for path in written:
        assert path.read_bytes() == (out / path.name).read_bytes(), path.name
    api_sample.write_tables(tmp_path / "api")
    for name in TABLE_FILES:
        assert (tmp_path / "api" / name).read_bytes() == (out / name).read_bytes(), name
    # one summary format: quantity,value,unit; the decision first; booleans true/false
    lines = (out / "summary.csv").read_text().splitlines()
    assert lines[0] == "quantity,value,unit"
    rows = {line.split(",")[0]: line.split(",")[1:] for line in lines[1:]}
    assert lines[1].startswith("positive,") and rows["positive"][0] in ("true", "false")
    assert rows["decision"][0] == from_json.case.decision
    assert rows["opacification_volume_ml"][1] == "mL" and rows["opacification_percent"][1] == "%"
    assert (out / "results.csv").read_text().splitlines()[0] == ",".join(RESULTS_CSV_FIELDS)


@pytest.mark.slow
def test_progress_json_lines_reach_the_end(cli_sample: tuple[Path, str]) -> None:
    _, stdout = cli_sample
    events = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    assert events
    assert all(set(e) == {"event", "stage", "fraction"} and e["event"] == "progress" for e in events)
    fractions = [e["fraction"] for e in events]
    assert fractions == sorted(fractions) and 0.0 <= fractions[0] and fractions[-1] == 1.0
    assert {"classify", "quantify"} <= {e["stage"] for e in events}
    assert "%|" not in stdout  # no bar


def test_margin_filter_leaves_the_engine_result_alone() -> None:
    """The lung-margin filter drops a blob far from the lungs from the kept mask, not from the engine's."""
    ct, lesion, _ = margin_case()
    result = DiagnosisResult(
        np.zeros(16), 0, 25, False, np.zeros(lesion.shape, np.float32), None, lesion.copy(), True, {}, {},
        "cpu", Precision.FP32,
    )  # fmt: skip
    kept = quantify_case(ct, result, find_lungs(ct), 10.0)
    assert kept.lesion_mask.sum() == 9 and result.lesion_mask.sum() == 18
    np.testing.assert_array_equal(result.lesion_mask, lesion)


def test_options_take_strings_and_refuse_unknown_ones() -> None:
    options = DiagnosisOptions(device="cpu", segment_policy="always", decision="segmenter", precision="fp32")
    assert options.segment_policy is SegmentPolicy.ALWAYS and options.decision is DecisionRule.SEGMENTER
    assert f"{options.segment_policy}" == str(options.segment_policy) == "always"
    assert DiagnosisOptions().decision == "auto" and DiagnosisOptions().lesion_margin_mm == 10.0
    with pytest.raises(ValueError, match="segment policy must be one of positive-only, always"):
        DiagnosisOptions(segment_policy="sometimes")
    with pytest.raises(ValueError, match="device"):
        DiagnosisOptions(device="tpu")
    with pytest.raises(ValueError, match="decision: options of a new engine"):
        run_case(sample_path(), engine=object(), decision="segmenter")  # type: ignore[arg-type]


@pytest.mark.parametrize("decision", ["classifier", "segmenter"])
def test_run_case_finds_the_lungs_once(
    decision: str, tiny_weights: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under either rule the lungs are segmented once per case, and the reading's lungs and lesions are
    the ones its tables count."""
    import SimpleITK as sitk
    from jcs import lung

    phantom = make_chest_phantom(shape=(10, 96, 96), seed=2)
    source = tmp_path / "phantom.nrrd"
    sitk.WriteImage(phantom.image, str(source))
    calls = []
    real = lung.segment_lungs
    monkeypatch.setattr(lung, "segment_lungs", lambda *a, **k: calls.append(1) or real(*a, **k))
    seen: list[tuple[str, float]] = []
    result = run_case(
        source, decision=decision, segment_policy="always", precision="fp32", device="cpu",
        on_progress=lambda stage, fraction: seen.append((stage, fraction)), **tiny_weights,
    )  # fmt: skip
    assert len(calls) == 1
    assert result.case.decision == decision and result.case.segmented
    assert result.lungs is not None and result.lesion_mask is not None
    assert [row.lung_area_px for row in result.slices] == (result.lungs > 0).sum(axis=(1, 2)).tolist()
    areas = result.lesion_mask.sum(axis=(1, 2)).tolist()
    assert [row.opacification_area_px for row in result.slices] == areas
    assert seen[-1] == ("quantify", 1.0) and [f for _, f in seen] == sorted(f for _, f in seen)
    assert CaseResult.from_json(result.to_json()) == result
    # an edit (here: every lesion erased) re-measured: the decision and probabilities stay
    from jcs.quantify import quantify

    empty = np.zeros_like(result.lesion_mask)
    remeasured = quantify(empty, result.lungs, result.ct.axial_image())
    edited = result.with_quantification(remeasured, empty, ["edited"])
    assert edited.summary["lesion_count"] == 0 and not edited.lesions and edited.notes[-1] == "edited"
    assert all(row.opacification_area_px == 0 for row in edited.slices)
    assert edited.case == result.case
    assert [row.probability for row in edited.slices] == [row.probability for row in result.slices]
    assert result.notes[-1:] != ["edited"] and result.lesion_mask is not empty
