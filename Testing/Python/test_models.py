"""Tests of jcs.models: official checkpoint layouts, containers, forward contracts, width and precision."""

from __future__ import annotations

import ast
import hashlib
import json
import math
import pickle
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from jcs.errors import WeightsError
from jcs.models import (
    AFF,
    GAM,
    OFFICIAL_FORMATS,
    Bottle2neck,
    FrozenBatchNorm2d,
    build_classifier,
    build_model,
    build_segmenter,
    detect_official_format,
    expected_shapes,
    load_checkpoint,
    load_state_dict_strict,
    model_from_state_dict,
)
from safetensors.torch import save_file

REPO_ROOT = Path(__file__).resolve().parents[2]
MANIFEST = REPO_ROOT.parent / "shared" / "reference" / "jcs_official_state_dict_manifest.json"
# SHA-256 of each manifest entry as the ordered JSON list [[key, shape], ...] (compact separators), so
# the layouts are checked even where ../shared/reference is absent.
MANIFEST_SHA256 = {
    "classifier_res2net101_v1b_26w_4s_fc2": (
        "aa772d83dd0cd83155cd02e24a42679b7efdce8a2cbe0c9dd095fcf1ff74c17b"
    ),
    "classifier_res2net50_v1b_26w_4s_fc2": "651b32c01e456f6004b8c22b5003ab40c60a24a03ca3ad0ec5c825276a774b10",
    "segmentation_single": "f44f53025e22283e969355115dbd117bcf97d7cedc339edc25b66070c3c9ff68",
    "segmentation_joint": "472d5b499308ac0033eb3d9d8568f782a2e76d087fcdbb9ded2b71269bf0861b",
}


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def manifest() -> dict[str, dict[str, tuple[int, ...]]]:
    if not MANIFEST.is_file():
        pytest.skip(f"official state-dict manifest {MANIFEST} is absent")
    raw = json.loads(MANIFEST.read_text())
    return {name: {k: tuple(v) for k, v in keys.items()} for name, keys in raw.items()}


def manifest_state_dict(shapes: dict[str, tuple[int, ...]], *, compact: bool) -> dict[str, torch.Tensor]:
    """A state dict of the manifest's shapes; every tensor is filled with its own key index.

    ``compact=True`` makes each tensor a broadcast view of one number, so .pth files stay tiny.
    """
    if compact:
        return {k: torch.tensor(float(i)).expand(shape) for i, (k, shape) in enumerate(shapes.items())}
    return {k: torch.full(shape, float(i)) for i, (k, shape) in enumerate(shapes.items())}


def meta_model(name: str) -> torch.nn.Module:
    kind, arch = OFFICIAL_FORMATS[name]
    with torch.device("meta"):
        return build_model(kind, **arch)


def official_shapes(name: str) -> dict[str, tuple[int, ...]]:
    kind, arch = OFFICIAL_FORMATS[name]
    return expected_shapes(kind, **arch)


def layout_sha256(shapes: dict[str, tuple[int, ...]]) -> str:
    canonical = json.dumps([[k, list(v)] for k, v in shapes.items()], separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def test_official_layouts_match_manifest_fingerprints():
    assert set(OFFICIAL_FORMATS) == set(MANIFEST_SHA256)
    for name in OFFICIAL_FORMATS:
        assert layout_sha256(official_shapes(name)) == MANIFEST_SHA256[name], name


def test_official_formats_are_the_manifest(manifest):
    assert set(OFFICIAL_FORMATS) == set(manifest)
    for name in OFFICIAL_FORMATS:
        assert list(official_shapes(name).items()) == list(manifest[name].items()), name
        assert layout_sha256(manifest[name]) == MANIFEST_SHA256[name]


def test_builders_give_manifest_layouts(manifest):
    with torch.device("meta"):
        models = {
            "classifier_res2net101_v1b_26w_4s_fc2": build_classifier(depth=101),
            "classifier_res2net50_v1b_26w_4s_fc2": build_classifier(depth=50),
            "segmentation_single": build_segmenter(joint=False),
            "segmentation_joint": build_segmenter(joint=True),
        }
    for name, model in models.items():
        assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == manifest[name], name
    # Frozen BN layers (classifier, VGG) carry no num_batches_tracked; the joint fusion BNs do.
    assert not any(k.endswith("num_batches_tracked") for k in manifest["segmentation_single"])
    joint_counters = [k for k in manifest["segmentation_joint"] if k.endswith("num_batches_tracked")]
    assert joint_counters and all(k.startswith("fuse.") for k in joint_counters)


@pytest.mark.parametrize("name", sorted(OFFICIAL_FORMATS))
def test_strict_load_in_every_container(name, tmp_path):
    shapes = official_shapes(name)  # = the manifest entry (fingerprint test above)
    keys = list(shapes)
    state = manifest_state_dict(shapes, compact=True)
    torch.save(state, tmp_path / "plain.pth")
    torch.save({"state_dict": state}, tmp_path / "wrapped.pth")
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "module.pth")
    save_file(manifest_state_dict(shapes, compact=False), str(tmp_path / "weights.safetensors"))
    model = meta_model(name)
    for filename in ("plain.pth", "wrapped.pth", "module.pth", "weights.safetensors"):
        loaded = load_checkpoint(tmp_path / filename)
        assert sorted(loaded) == sorted(keys), filename
        assert detect_official_format(loaded) == name
        load_state_dict_strict(model, loaded, source=filename, assign=True)
        after = model.state_dict()
        for i in (0, len(keys) // 2, len(keys) - 1):
            assert torch.equal(after[keys[i]], torch.full(shapes[keys[i]], float(i))), filename
    # Both wrappers at once, from an in-memory object.
    wrapped = {"state_dict": {f"module.{k}": v for k, v in state.items()}}
    assert list(load_checkpoint(wrapped)) == keys


def test_joint_loads_without_batch_counters():
    """PyTorch fills the joint fusion BNs' num_batches_tracked when a checkpoint lacks them."""
    joint = official_shapes("segmentation_joint")
    state = {k: torch.zeros(()).expand(s) for k, s in joint.items() if not k.endswith("num_batches_tracked")}
    assert detect_official_format(state) == "segmentation_joint"
    model = meta_model("segmentation_joint")
    load_state_dict_strict(model, state, assign=True)
    assert int(model.fuse.cat_modules[0].bn.num_batches_tracked) == 0


def constant_state_dict(kind: str, **architecture) -> dict[str, torch.Tensor]:
    """Deterministic, cheap weights: convs/linears 1/fan_in, BN identity statistics, biases 0.01."""
    state = {}
    for key, shape in expected_shapes(kind, **architecture).items():
        if key.endswith("running_var") or (len(shape) == 1 and key.endswith("weight")):
            value = 1.0
        elif key.endswith(("running_mean", "num_batches_tracked")):
            value = 0.0
        elif len(shape) > 1:
            value = 1.0 / math.prod(shape[1:])
        else:
            value = 0.01
        state[key] = torch.tensor(value).expand(shape)
    return state


def test_full_size_models_tiny_forward():
    """The paper configurations run (the joint model holds every module of the single one)."""
    x = torch.linspace(-1.0, 1.0, 3 * 64 * 64).reshape(1, 3, 64, 64)
    classifier = model_from_state_dict("classifier", constant_state_dict("classifier", depth=101), depth=101)
    joint = model_from_state_dict("segmenter", constant_state_dict("segmenter", joint=True), joint=True)
    assert not classifier.training and not joint.training
    with torch.inference_mode():
        logits = classifier(x)
        probs = joint(x)
    assert logits.shape == (1, 2) and torch.isfinite(logits).all()
    assert probs.shape == (1, 5, 64, 64)
    assert float(probs.min()) >= 0.0 and float(probs.max()) <= 1.0


def test_model_from_state_dict_round_trip():
    torch.manual_seed(6)
    model = build_classifier(depth=50, width_mult=0.25).eval()
    state = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    rebuilt = model_from_state_dict("classifier", state, **model.architecture)
    assert rebuilt.architecture == model.architecture
    assert all(v.dtype == torch.float32 for v in rebuilt.state_dict().values())
    assert not rebuilt.bn1.weight.requires_grad and rebuilt.conv1[0].weight.requires_grad
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.argmax(rebuilt(x), 1).tolist() == torch.argmax(model(x), 1).tolist()
    with pytest.raises(ValueError, match="kind"):
        model_from_state_dict("detector", state)


def test_small_models_outputs_and_logits():
    torch.manual_seed(1)
    classifier = build_classifier(depth=50, width_mult=0.25).eval()
    segmenter = build_segmenter(width_mult=0.25).eval()
    with torch.inference_mode():
        logits = classifier(torch.randn(3, 3, 96, 80))
        assert logits.shape == (3, 2)
        x = torch.randn(2, 3, 64, 48)
        raw = segmenter.forward_logits(x)
        probs = segmenter(x)
    assert raw.shape == probs.shape == (2, 5, 64, 48)
    torch.testing.assert_close(probs, torch.sigmoid(raw))
    assert float(probs.min()) >= 0.0 and float(probs.max()) <= 1.0
    # The five side outputs differ: each comes from its own decoder level.
    assert all(not torch.allclose(raw[:, 0], raw[:, i]) for i in range(1, 5))


def test_width_mult_keeps_keys_and_shrinks():
    for depth in (50, 101):
        with torch.device("meta"):
            full, small = build_classifier(depth=depth), build_classifier(depth=depth, width_mult=0.25)
        full_sd, small_sd = full.state_dict(), small.state_dict()
        assert list(full_sd) == list(small_sd)
        assert sum(v.numel() for v in small_sd.values()) < sum(v.numel() for v in full_sd.values()) / 10
        assert detect_official_format(small_sd) is None
        assert small.fc.weight.shape == (2, 512) and full.fc.weight.shape == (2, 2048)
    for joint in (False, True):
        with torch.device("meta"):
            full, small = build_segmenter(joint=joint), build_segmenter(joint=joint, width_mult=0.25)
        assert list(full.state_dict()) == list(small.state_dict())
        assert small.vgg16.out_channels == [16, 32, 64, 128, 128]
    with pytest.raises(ValueError, match="width_mult"):
        build_segmenter(width_mult=0)
    with pytest.raises(ValueError, match="depth"):
        build_classifier(depth=34)


def test_classifier_feature_input_equals_image_path():
    torch.manual_seed(2)
    image_model = build_classifier(depth=50, width_mult=0.25).eval()
    feature_model = build_classifier(depth=50, width_mult=0.25, feature_input=True).eval()
    feature_model.load_state_dict(image_model.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        stem = image_model.stem(x)
        assert stem.shape == (2, 16, 32, 32)
        torch.testing.assert_close(feature_model(stem), image_model(x))
        with pytest.raises(ValueError, match=r"expects input \(N, 16, H, W\)"):
            feature_model(x)


@pytest.mark.parametrize("joint", [False, True])
def test_segmenter_feature_input_equals_image_path(joint):
    torch.manual_seed(3)
    image_model = build_segmenter(joint=joint, width_mult=0.25).eval()
    feature_model = build_segmenter(joint=joint, width_mult=0.25, feature_input=True).eval()
    feature_model.load_state_dict(image_model.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        vgg_feats = image_model.vgg16.stem(x)
        assert vgg_feats.shape == (1, 16, 64, 64) and feature_model.input_channels == 16
        kwargs = {"res2net_input": image_model.res2net.stem(x)} if joint else {}
        torch.testing.assert_close(feature_model(vgg_feats, **kwargs), image_model(x))
        if joint:
            with pytest.raises(ValueError, match="res2net_input"):
                feature_model(vgg_feats)
        with pytest.raises(ValueError, match="expects input"):
            feature_model(x)


def test_paper_feature_input_takes_release_shapes():
    """Paper width: the segmenter takes 64-channel conv1_2 features, the Res2Net 64-channel stem features."""
    with torch.device("meta"):
        joint = build_segmenter(joint=True, feature_input=True)
        classifier = build_classifier(feature_input=True)
    assert joint.input_channels == 64
    assert joint.res2net.stem_channels == classifier.stem_channels == 64
    assert joint.res2net.feature_input and classifier.feature_input and joint.vgg16.feature_input


def test_channels_last_and_bfloat16_autocast():
    torch.manual_seed(4)
    classifier = build_classifier(depth=50, width_mult=0.25).eval()
    segmenter = build_segmenter(width_mult=0.25).eval()
    x_cls, x_seg = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        ref_logits, ref_probs = classifier(x_cls), segmenter(x_seg)
        classifier.to(memory_format=torch.channels_last)
        segmenter.to(memory_format=torch.channels_last)
        cl_logits = classifier(x_cls.contiguous(memory_format=torch.channels_last))
        cl_probs = segmenter(x_seg.contiguous(memory_format=torch.channels_last))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf_logits = classifier(x_cls.contiguous(memory_format=torch.channels_last)).float()
            bf_probs = segmenter(x_seg.contiguous(memory_format=torch.channels_last)).float()
    scale = ref_logits.abs().max()
    torch.testing.assert_close(cl_logits, ref_logits, rtol=1e-4, atol=1e-4 * float(scale))
    torch.testing.assert_close(cl_probs, ref_probs, rtol=1e-4, atol=1e-5)
    assert float((bf_logits - ref_logits).abs().max()) < 0.1 * float(scale)
    assert float((bf_probs - ref_probs).abs().max()) < 0.05


def test_batchnorm_modes():
    torch.manual_seed(5)
    x = torch.randn(4, 3, 64, 64) * 3 + 1
    frozen = build_classifier(depth=50, width_mult=0.25)
    assert not frozen.bn1.weight.requires_grad
    frozen.train()
    frozen(x)
    assert torch.equal(frozen.bn1.running_mean, torch.zeros_like(frozen.bn1.running_mean))

    trainable = build_classifier(depth=50, width_mult=0.25, batchnorm="batch")
    assert list(trainable.state_dict()) == list(frozen.state_dict())
    optimizer = torch.optim.SGD(trainable.parameters(), lr=0.1)
    trainable.train()
    loss = torch.nn.functional.cross_entropy(trainable(x), torch.tensor([0, 1, 0, 1]))
    loss.backward()
    optimizer.step()
    assert trainable.bn1.weight.grad is not None
    assert not torch.equal(trainable.bn1.running_mean, torch.zeros_like(trainable.bn1.running_mean))
    segmenter = build_segmenter(width_mult=0.25, batchnorm="batch").train()
    segmenter.forward_logits(torch.randn(2, 3, 32, 32)).mean().backward()
    assert segmenter.vgg16.conv1_1.bn.weight.grad is not None
    with pytest.raises(ValueError, match="batchnorm"):
        build_segmenter(batchnorm="sync")


def test_wrong_file_gives_weights_error():
    shapes = official_shapes("classifier_res2net50_v1b_26w_4s_fc2")
    classifier_sd = {k: torch.zeros(()).expand(s) for k, s in shapes.items()}
    with torch.device("meta"):
        segmenter = build_segmenter()
    with pytest.raises(WeightsError) as err:
        load_state_dict_strict(segmenter, classifier_sd, source="res2net50.pth")
    message = str(err.value)
    assert "res2net50.pth" in message and "missing" in message and "unexpected" in message
    assert "vgg16.conv1_1.conv.weight" in message and "classifier_res2net50_v1b_26w_4s_fc2" in message

    with torch.device("meta"):
        classifier101 = build_classifier(depth=101)
    with pytest.raises(WeightsError, match=r"missing: layer3\.6\."):
        load_state_dict_strict(classifier101, classifier_sd)

    misshaped = dict(classifier_sd, **{"fc.weight": torch.zeros(3, 2048)})
    with torch.device("meta"):
        classifier50 = build_classifier(depth=50)
    with pytest.raises(WeightsError, match=r"mis-shaped: fc\.weight \(3, 2048\) != \(2, 2048\)"):
        load_state_dict_strict(classifier50, misshaped)
    assert detect_official_format(misshaped) is None


def test_bad_checkpoint_files(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_checkpoint(tmp_path / "absent.pth")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"PK\x03\x04 not really a checkpoint")
    with pytest.raises(WeightsError, match="corrupt"):
        load_checkpoint(corrupt)
    bad_safetensors = tmp_path / "bad.safetensors"
    bad_safetensors.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(WeightsError, match="safetensors"):
        load_checkpoint(bad_safetensors)
    pickled = tmp_path / "object.pth"
    with pickled.open("wb") as f:
        pickle.dump({"weights": Path("/etc/passwd")}, f, protocol=2)
    with pytest.raises(WeightsError, match="weights_only"):
        load_checkpoint(pickled)
    torch.save({"epoch": 3}, tmp_path / "not_weights.pth")
    with pytest.raises(WeightsError, match="epoch"):
        load_checkpoint(tmp_path / "not_weights.pth")
    torch.save({}, tmp_path / "empty.pth")
    with pytest.raises(WeightsError, match="not a state dict"):
        load_checkpoint(tmp_path / "empty.pth")


def test_torch_load_only_with_weights_only():
    """Every torch.load call in the engine and training code passes weights_only=True."""
    sources = [*(REPO_ROOT / "JCSDiagnosis").rglob("*.py"), *(REPO_ROOT / "training").rglob("*.py")]
    assert any(p.name == "checkpoint.py" for p in sources)
    calls = 0
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            func = node.func if isinstance(node, ast.Call) else None
            if isinstance(func, ast.Attribute) and func.attr == "load":
                if isinstance(func.value, ast.Name) and func.value.id == "torch":
                    calls += 1
                    flags = {kw.arg: kw.value for kw in node.keywords}
                    value = flags.get("weights_only")
                    assert isinstance(value, ast.Constant) and value.value is True, f"{path}:{node.lineno}"
    assert calls >= 1


def randomize_batchnorm(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Non-trivial BN statistics and affine parameters, so BN mistakes show in the outputs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.2)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)
    return model


def test_frozen_batchnorm_is_the_official_formula():
    """Official FrozenBatchNorm2d: x * w / sqrt(var) + (b - mean * w / sqrt(var)), no epsilon, always."""
    bn = randomize_batchnorm(FrozenBatchNorm2d(4), seed=7)
    x = torch.randn(2, 4, 5, 5)
    scale = bn.weight / bn.running_var.sqrt()
    expected = x * scale.view(1, 4, 1, 1) + (bn.bias - bn.running_mean * scale).view(1, 4, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(bn.eval()(x), expected)
        torch.testing.assert_close(bn.train()(x), expected)  # frozen: stored statistics in training too
    assert "num_batches_tracked" not in bn.state_dict()


def test_bottle2neck_matches_hand_computation():
    """Res2Net hierarchy (Gao et al. §3.1): y1 = K1(x1), yi = Ki(xi + y(i-1)), last group passed on;
    the first block of a stage convolves the groups independently and avg-pools the last one."""
    torch.manual_seed(8)

    def unit(conv, bn, x):
        return torch.relu(bn(conv(x)))

    normal = randomize_batchnorm(Bottle2neck(32, 8), seed=1).eval()  # width floor(8*26/64) = 3
    x = torch.randn(1, 32, 9, 9)
    with torch.no_grad():
        groups = torch.split(unit(normal.conv1, normal.bn1, x), 3, dim=1)
        ys = [unit(normal.convs[0], normal.bns[0], groups[0])]
        for i in (1, 2):
            ys.append(unit(normal.convs[i], normal.bns[i], groups[i] + ys[-1]))
        expected = torch.relu(normal.bn3(normal.conv3(torch.cat([*ys, groups[3]], 1))) + x)
        torch.testing.assert_close(normal(x), expected)

        stage = randomize_batchnorm(Bottle2neck(16, 8, stride=2, stage=True), seed=2).eval()
        x = torch.randn(1, 16, 9, 9)
        groups = torch.split(unit(stage.conv1, stage.bn1, x), 3, dim=1)
        ys = [unit(stage.convs[i], stage.bns[i], groups[i]) for i in range(3)]
        ys.append(F.avg_pool2d(groups[3], 3, stride=2, padding=1))  # count_include_pad=True
        shortcut = F.avg_pool2d(x, 2, stride=2, ceil_mode=True, count_include_pad=False)
        shortcut = stage.downsample[2](stage.downsample[1](shortcut))
        expected = torch.relu(stage.bn3(stage.conv3(torch.cat(ys, 1))) + shortcut)
        out = stage(x)
    assert out.shape == (1, 32, 5, 5)
    torch.testing.assert_close(out, expected)


def test_gam_and_aff_match_hand_computation():
    """GAM (§III-B2) and AFF (§III-B3) written out with functional ops."""
    torch.manual_seed(9)
    gam = GAM(16, rates=(1, 3, 6, 9)).eval()
    x = torch.randn(2, 16, 12, 12)

    def se(block, t):
        w = torch.sigmoid(block.linear2(torch.relu(block.linear1(t.mean(dim=(2, 3))))))
        return t * w[:, :, None, None]

    with torch.no_grad():
        expanded = torch.relu(gam.expand_conv.conv(x))
        assert expanded.shape[1] == 32
        groups = torch.split(expanded, 8, dim=1)
        atrous = [
            F.conv2d(g, c.weight, c.bias, padding=r, dilation=r)
            for g, c, r in zip(groups, gam.dilation_convs, (1, 3, 6, 9), strict=True)
        ]
        y = se(gam.se_block, torch.relu(torch.cat(atrous, 1)))
        y = torch.relu(gam.reduce_conv.conv(y))
        torch.testing.assert_close(gam(x), torch.relu(gam.end_conv.conv(y)))
        assert gam.se_block.linear1.out_features == 8  # reduction 4

        aff = AFF(16).eval()
        low, high = torch.randn(2, 8, 6, 6), torch.randn(2, 8, 6, 6)
        t = torch.relu(aff.conv1.conv(se(aff.se1, torch.cat([low, high], 1))))
        t = torch.relu(aff.reduce_conv.conv(se(aff.se2, torch.cat([t, high], 1))))
        torch.testing.assert_close(aff(low, high), torch.relu(aff.conv2.conv(t)))
        assert aff.se1.linear1.out_features == aff.se2.linear1.out_features == 1


def test_segmenter_geometry_and_side_outputs():
    """Official layout: VGG block 5 without pooling (strides 1,2,4,8,8), EFM adds a stride-16 level, and
    each side output is cls_i(decoder level i) bilinearly upsampled (align_corners=False) to the input."""
    torch.manual_seed(10)
    model = randomize_batchnorm(build_segmenter(width_mult=0.25), seed=3).eval()
    x = torch.randn(1, 3, 64, 64)
    captured = {}
    model.vgg16.register_forward_hook(lambda m, i, o: captured.__setitem__("vgg", o))
    model.fpn.register_forward_hook(lambda m, i, o: captured.__setitem__("levels", (i[0], o)))
    with torch.no_grad():
        logits = model.forward_logits(x)
    assert [f.shape[-1] for f in captured["vgg"]] == [64, 32, 16, 8, 8]
    inputs, levels = captured["levels"]
    assert [f.shape[-1] for f in inputs] == [64, 32, 16, 8, 8, 4]
    for i in range(5):
        side = getattr(model, f"cls{i + 1}")(levels[i])
        expected = F.interpolate(side, size=(64, 64), mode="bilinear", align_corners=False)
        torch.testing.assert_close(logits[:, i : i + 1], expected)


def test_joint_fuses_at_res2net_resolution():
    """§III-B4 as in the official code: VGG features are resized to the Res2Net stage sizes and fused."""
    torch.manual_seed(11)
    model = build_segmenter(joint=True, width_mult=0.25).eval()
    captured = {}
    model.fuse.register_forward_hook(lambda m, i, o: captured.__setitem__("fused", o))
    model.res2net.layer4.register_forward_hook(lambda m, i, o: captured.__setitem__("layer4", o))
    with torch.no_grad():
        probs = model(torch.randn(1, 3, 64, 64))
    assert probs.shape == (1, 5, 64, 64)
    assert [f.shape[-1] for f in captured["fused"]] == [32, 16, 8, 4, 2]
    assert [f.shape[1] for f in captured["fused"]] == model.vgg16.out_channels
    assert captured["layer4"].shape[1] == model.res2net.stage_channels[-1] == 512
