"""tools/benchmark.py: interleaved timing, memory measurement, fair detection cases, the CLI."""

import json
import time

import pytest
import torch
from detectron2.layers import FrozenBatchNorm2d

from benchmarks import cases as cases_module
from benchmarks import cli, measure_peak_memory, run_interleaved
from benchmarks.cases import (
    SE_ABLATIONS,
    _ablated,
    _detection_models,
    calibrate_frozen_bn,
    se_breakdown_case,
)
from se_detectron.layers import SqueezeExcitation

CPU = torch.device("cpu")


def test_run_interleaved_alternates_and_summarises():
    calls = []
    variants = {
        "fast": lambda: calls.append("fast"),
        "slow": lambda: (calls.append("slow"), time.sleep(0.01)),
    }
    stats = run_interleaved(variants, CPU, rounds=4, warmup=1)
    assert calls[:2] == ["fast", "slow"]  # warm-up
    assert calls[2:] == ["fast", "slow", "slow", "fast", "fast", "slow", "slow", "fast"]
    assert len(stats["fast"].times) == len(stats["slow"].times) == 4
    assert stats["slow"].min >= 0.01 > stats["fast"].max
    record = stats["slow"].as_dict()
    assert record["runs"] == 4 and record["min_ms"] <= record["median_ms"] <= record["max_ms"]


def test_run_interleaved_derives_rounds_from_seconds():
    stats = run_interleaved({"a": lambda: time.sleep(0.02)}, CPU, seconds=0.1, min_rounds=2)
    assert 2 <= len(stats["a"].times) <= 6
    with pytest.raises(ValueError, match="at least one variant"):
        run_interleaved({}, CPU)


def test_peak_memory_counts_what_a_step_allocates():
    def step():
        a = torch.ones(10 * 2**20 // 4)  # 10 MiB
        b = torch.ones(5 * 2**20 // 4)  # 5 MiB more while a is alive
        del a, b
        return torch.ones(2**20 // 4)  # 1 MiB after both are freed

    assert measure_peak_memory(step, CPU) == pytest.approx(15, abs=0.5)


def test_calibrated_frozen_bn_normalises_its_input():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 8, 3)
    model = torch.nn.Sequential(conv, FrozenBatchNorm2d(8))
    x = torch.randn(4, 3, 16, 16) * 5 + 3
    calibrate_frozen_bn(model, lambda: model(x))
    with torch.no_grad():
        y = model(x)
    torch.testing.assert_close(y.mean((0, 2, 3)), torch.zeros(8), atol=1e-4, rtol=0)
    torch.testing.assert_close(y.var((0, 2, 3), unbiased=False), torch.ones(8), atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="no FrozenBatchNorm2d"):
        calibrate_frozen_bn(torch.nn.Linear(2, 2), lambda: None)


def test_detection_models_propose_the_same_boxes():
    """The zeroed RPN outputs make the heads' work independent of the backbone."""
    plain, se = _detection_models(CPU)
    image = torch.randint(0, 256, (3, 96, 128), dtype=torch.uint8)
    proposals = []
    with torch.no_grad():
        for model in (plain, se):
            model.eval()
            images = model.preprocess_image([{"image": image}])
            features = model.backbone(images.tensor)
            proposals.append(model.proposal_generator(images, features)[0][0].proposal_boxes)
    assert len(proposals[0]) > 100
    torch.testing.assert_close(proposals[0].tensor, proposals[1].tensor)


def test_cli_writes_table_and_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = ["--height", "64", "--width", "96", "--batch-sizes", "1", "--layouts", "nchw"]
    args += ["--classifier-size", "32", "--rounds", "1", "--warmup", "1", "--output", str(out)]
    assert cli(args) == 0
    report = json.loads(out.read_text())
    assert set(report["cases"]) == {
        "trunk",
        "rcnn_inference",
        "rcnn_training",
        "classifier_b1_nchw",
        "se_breakdown_b1_nchw",
        "channel_dot_b1",
    }
    env = report["environment"]
    assert env["device"] == "cpu" and env["torch"] == torch.__version__ and env["torch_threads"]
    for name, case in report["cases"].items():
        base = case["baseline"]
        assert case["ratios"][f"{base} / {base}"] == 1.0, name
        assert case["se_ratio"] == case["ratios"][f"{case['se_variant']} / {base}"]
        for variant in case["variants"].values():
            assert variant["runs"] == 1 and variant["median_ms"] > 0
            assert variant["peak_memory_mb"] > 0
    classifier = report["cases"]["classifier_b1_nchw"]
    assert {"ResNet-50", "SE-ResNet-50", "SE-ResNet-50 straightforward"} <= set(
        classifier["variants"]
    )
    assert "timm seresnet50" in classifier["variants"]
    assert "SE-ResNet-50 / timm seresnet50" in classifier["ratios"]
    assert report["cases"]["rcnn_training"]["target"] == 1.04
    printed = capsys.readouterr().out
    assert "== rcnn_inference" in printed and "target <= 1.02x" in printed


def test_cli_bf16_autocast_variants(tmp_path, monkeypatch):
    """--precisions fp32,bf16 times each case twice; the bf16 one really runs under autocast."""
    seen = []
    real = cases_module.torch.autocast

    def recording(*args, **kwargs):
        seen.append(kwargs.get("dtype"))
        return real(*args, **kwargs)

    monkeypatch.setattr(cases_module.torch, "autocast", recording)
    out = tmp_path / "bench.json"
    args = ["--cases", "trunk,classifier", "--height", "64", "--width", "96", "--no-memory"]
    args += ["--batch-sizes", "2", "--layouts", "nchw", "--classifier-size", "32"]
    args += ["--precisions", "fp32,bf16", "--rounds", "1", "--warmup", "0", "--output", str(out)]
    assert cli(args) == 0
    report = json.loads(out.read_text())["cases"]
    assert set(report) == {"trunk", "trunk_bf16", "classifier_b2_nchw", "classifier_b2_nchw_bf16"}
    assert report["classifier_b2_nchw_bf16"]["description"].endswith("autocast bf16")
    assert report["classifier_b2_nchw_bf16"]["target"] == report["classifier_b2_nchw"]["target"]
    assert seen and set(seen) == {torch.bfloat16}


def test_cuda_amp_targets():
    case = cases_module.Case("classifier_b256_nchw", "d", {"a": lambda: None}, "a", "a", 1.03)
    small = cases_module.Case("classifier_b32_nchw", "d", {"a": lambda: None}, "a", "a", 1.03)
    train = cases_module.Case("rcnn_training", "d", {"a": lambda: None}, "a", "a", 1.04)
    cuda = torch.device("cuda")
    assert cases_module.with_precision(case, "bf16", cuda).target == 1.03
    assert cases_module.with_precision(small, "bf16", cuda).target is None
    assert cases_module.with_precision(train, "bf16", cuda).target == 1.03
    assert cases_module.with_precision(train, "bf16", torch.device("cpu")).target == 1.04
    assert cases_module.with_precision(train, "fp32", cuda) is train


def test_se_ablations_compute_what_they_claim():
    """Each se_breakdown ablation removes exactly its part of the SE unit."""
    torch.manual_seed(0)
    layer = SqueezeExcitation(16, reduction=4).eval()
    x, r = torch.randn(2, 16, 5, 5), torch.randn(2, 16, 5, 5)
    with torch.no_grad():
        expected = {
            "SE without pool": r + x * layer.excite(torch.zeros(2, 16))[:, :, None, None],
            "SE without FC layers": r + x * torch.sigmoid(x.mean((2, 3)))[:, :, None, None],
            "SE scale-add only": r + 0.5 * x,
        }
        assert set(expected) == set(SE_ABLATIONS)
        for name, replacements in SE_ABLATIONS.items():
            got = _ablated(lambda: layer.scale_add(x, r), replacements)()
            torch.testing.assert_close(got, expected[name], msg=name)
        # restored afterwards: the full SE again
        torch.testing.assert_close(layer.scale_add(x, r), r + x * layer.excitation(x))


def test_se_breakdown_case_runs_the_same_model_with_parts_removed():
    case = se_breakdown_case(CPU, batch_size=2, channels_last=True, size=32)
    assert case.name == "se_breakdown_b2_channels_last" and case.target is None
    assert list(case.variants) == ["ResNet-50", "SE-ResNet-50", *SE_ABLATIONS]
    squeeze, excite = SqueezeExcitation.squeeze, SqueezeExcitation.excite
    outputs = {name: run()["linear"] for name, run in case.variants.items()}
    assert SqueezeExcitation.squeeze is squeeze and SqueezeExcitation.excite is excite
    full = outputs["SE-ResNet-50"]
    torch.testing.assert_close(case.variants["SE-ResNet-50"]()["linear"], full)
    for name in SE_ABLATIONS:
        assert outputs[name].shape == full.shape == (2, 1000)
        assert not torch.allclose(outputs[name], full), name


@pytest.mark.parametrize(
    "args,message",
    [
        (["--cases", "trunk,foo"], "unknown value"),
        (["--batch-sizes", "0"], "positive integers"),
        (["--layouts", "nhwc"], "choose from nchw, channels_last"),
    ],
)
def test_cli_rejects_bad_arguments(args, message, capsys):
    with pytest.raises(SystemExit):
        cli(args)
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(SystemExit, match="CUDA is not available"):
        cli(["--device", "cuda"])


class _RecordingAutocast:
    """Stands in for ``torch.autocast`` in cases.py; records what ran inside an enabled region."""

    def __init__(self, log):
        self.log, self.real = log, torch.autocast

    def __call__(self, *args, **kwargs):
        log, ctx = self.log, self.real(*args, **kwargs)
        enabled = kwargs.get("enabled", True)

        class Region:
            def __enter__(self):
                log.append(("enter", enabled))
                return ctx.__enter__()

            def __exit__(self, *exc):
                log.append(("exit", enabled))
                return ctx.__exit__(*exc)

        return Region()


def test_amp_training_step_runs_backward_and_step_outside_autocast(monkeypatch):
    """rcnn_training in fp16: forward under autocast; backward and a GradScaler step outside."""
    log = []
    monkeypatch.setattr(cases_module.torch, "autocast", _RecordingAutocast(log))
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    x = torch.randn(2, 3)

    def loss_model(batch):
        log.append(("forward", torch.is_autocast_enabled("cpu")))
        out = model(batch)
        out.register_hook(lambda g: log.append(("backward", torch.is_autocast_enabled("cpu"))))
        return {"loss": out.float().sum()}

    scalers = []
    real_scaler = torch.amp.GradScaler
    monkeypatch.setattr(
        cases_module.torch.amp,
        "GradScaler",
        lambda *a, **kw: scalers.append(real_scaler(*a, **kw)) or scalers[-1],
    )
    step = cases_module._training_step(loss_model, optimizer, x, CPU, torch.float16)
    step()
    assert ("forward", True) in log and ("backward", False) in log
    assert log.index(("exit", True)) < log.index(("backward", False))
    assert scalers[0].is_enabled() and scalers[0]._scale is not None  # fp16: the loss was scaled
    bf16 = cases_module._training_step(loss_model, optimizer, x, CPU, torch.bfloat16)
    bf16()
    assert not scalers[1].is_enabled()  # bf16 needs no scaling


def test_rcnn_training_case_under_autocast():
    """The AMP variants are the case's own training steps (fp16 ones run on a CPU too slowly:
    test_amp_training_step_runs_backward_and_step_outside_autocast covers their logic)."""
    case = cases_module.rcnn_training_case(CPU, 64, 96, images=1)
    fp16 = cases_module.with_precision(case, "fp16", CPU)
    assert fp16.name == "rcnn_training_fp16" and list(fp16.variants) == list(case.variants)
    bf16 = cases_module.with_precision(case, "bf16", CPU)
    assert torch.isfinite(bf16.variants["SE-R50-FPN"]())


def test_channel_dot_case_times_both_branches_against_the_plain_sum():
    from se_detectron.layers import se as se_module

    case = cases_module.channel_dot_case(CPU, batch_size=2, size=32)
    assert case.name == "channel_dot_b2" and case.target is None
    assert list(case.variants) == list(cases_module.CHANNEL_DOT_VARIANTS)
    assert case.baseline == "(a*b).sum((2,3)) NCHW" and case.se_variant == "_channel_dot NCHW (bmm)"
    calls = []
    real_bmm = se_module.torch.bmm
    outputs = {}
    for name, run in cases_module.with_precision(case, "bf16", CPU).variants.items():
        calls.clear()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(se_module.torch, "bmm", lambda *a: calls.append(1) or real_bmm(*a))
            outputs[name] = run()
        assert outputs[name].dtype == torch.bfloat16, name  # the SE backward's AMP tensors
        assert bool(calls) == ("bmm" in name), name  # each branch of se.py is the one timed
    for name, out in outputs.items():
        torch.testing.assert_close(
            out.float(), outputs[case.baseline].float(), rtol=2e-2, atol=0.5, msg=name
        )
    fp32 = {name: run() for name, run in case.variants.items()}
    for out in fp32.values():
        assert out.shape == (2, 256) and out.dtype == torch.float32
        torch.testing.assert_close(out, fp32[case.baseline], rtol=1e-4, atol=1e-3)
