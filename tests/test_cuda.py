"""CUDA checks: the fused SE path, AMP, fused optimizers, export and exact resume on a GPU.

Every test here is marked ``cuda`` and skipped without CUDA, so CI (CPU only) stays green; on a
GPU machine ``make gpu-check`` runs them (``pytest -m cuda``). Reference values are computed in
float64 or with the straightforward SE operations, never hard-coded.
"""

import copy
import os

import numpy as np
import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.env import seed_all_rng
from detectron2.utils.events import EventStorage
from PIL import Image

from se_detectron import get_se_cfg
from se_detectron.data import generate_synthetic_dataset, register_datasets_from_cfg
from se_detectron.engine import SETrainer, build_optimizer
from se_detectron.export import compare_detections, export_detector, reference_outputs
from se_detectron.export.core import build_eval_model
from se_detectron.layers import SqueezeExcitation, se_fast_path
from se_detectron.modeling import build_se_resnet_backbone
from se_detectron.pretrain import get_args_parser
from se_detectron.pretrain import main as pretrain_main

# SE_TEST_DEVICE=cpu runs the same checks on the CPU (a dry run of this file's own logic).
DEVICE = torch.device(os.environ.get("SE_TEST_DEVICE", "cuda"))
ON_CUDA = DEVICE.type == "cuda"
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(ON_CUDA and not torch.cuda.is_available(), reason="needs a CUDA device"),
]

INSTANT = "quick_schedules/faster_rcnn_SE_R_50_FPN_instant_test.yaml"
MASK_INSTANT = "quick_schedules/mask_rcnn_SE_R_50_FPN_instant_test.yaml"
# relative error (||a - b|| / ||b||) allowed per compute dtype
REL_TOL = {torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 3e-2}


@pytest.fixture(autouse=True)
def exact_fp32_matmuls():
    """TF32 would make fp32 CUDA results differ from float64 by ~1e-3: compare true fp32."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def rel_err(a, b):
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


# ----------------------------------------------------------------------------------------------
# The SE fast path
# ----------------------------------------------------------------------------------------------
def _se_run(layer, x, residual, weight, fast, autocast_dtype):
    x = x.detach().clone().requires_grad_()
    residual = residual.detach().clone().requires_grad_()
    layer.zero_grad(set_to_none=True)
    with (
        se_fast_path(fast),
        torch.autocast(DEVICE.type, autocast_dtype, enabled=autocast_dtype is not None),
    ):
        out = layer.scale_add(x, residual)
    node = type(out.grad_fn).__name__
    (out.float() * weight).sum().backward()
    grads = [x.grad, residual.grad] + [p.grad for p in layer.parameters()]
    return out.detach(), grads, node


def _se_reference(layer, x, residual, weight):
    """float64 SE by autograd: residual + x * sigmoid(W2 relu(W1 mean(x)))."""
    ref = copy.deepcopy(layer).double()
    x = x.detach().double().requires_grad_()
    residual = residual.detach().double().requires_grad_()
    z = x.mean((2, 3))
    h = torch.relu(z @ ref.fc1.weight.flatten(1).T + ref.fc1.bias)
    s = torch.sigmoid(h @ ref.fc2.weight.flatten(1).T + ref.fc2.bias)
    out = residual + x * s[:, :, None, None]
    (out * weight.double()).sum().backward()
    return out.detach(), [x.grad, residual.grad] + [p.grad for p in ref.parameters()]


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize(
    "dtype,autocast",
    [
        (torch.float32, False),
        (torch.float16, False),
        (torch.bfloat16, False),
        (torch.float16, True),
        (torch.bfloat16, True),
    ],
    ids=["fp32", "fp16", "bf16", "autocast-fp16", "autocast-bf16"],
)
def test_se_fast_path_matches_reference(dtype, autocast, channels_last):
    """Forward and every gradient of the fused SE equal float64 SE and the straightforward ops.

    Under autocast the layer keeps fp32 weights and sees low-precision activations, as inside a
    mixed-precision network; otherwise weights and activations share ``dtype``.
    """
    torch.manual_seed(0)
    layer = SqueezeExcitation(256, reduction=16)
    for p in layer.parameters():
        torch.nn.init.normal_(p, std=0.3)
    layer = layer.to(DEVICE, dtype=torch.float32 if autocast else dtype)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    shape = (4, 256, 28, 28)
    x = torch.randn(shape, device=DEVICE).to(dtype).contiguous(memory_format=fmt)
    residual = torch.randn(shape, device=DEVICE).to(dtype).contiguous(memory_format=fmt)
    weight = torch.linspace(-1, 2, x.numel(), device=DEVICE).view(shape)
    autocast_dtype = dtype if autocast else None

    fast_out, fast_grads, node = _se_run(layer, x, residual, weight, True, autocast_dtype)
    plain_out, plain_grads, _ = _se_run(layer, x, residual, weight, False, autocast_dtype)
    ref_out, ref_grads = _se_reference(layer, x, residual, weight)
    assert node == "_SqueezeScaleAddBackward", node  # the fused autograd function ran
    assert fast_out.dtype == plain_out.dtype
    tol = REL_TOL[dtype]
    assert rel_err(fast_out, ref_out) < tol
    assert rel_err(fast_out, plain_out) < tol
    names = ["x", "residual"] + [n for n, _ in layer.named_parameters()]
    for name, fast, plain, ref in zip(names, fast_grads, plain_grads, ref_grads):
        assert fast.dtype == plain.dtype, name
        assert torch.isfinite(fast).all(), name
        # the straightforward ops round the same way: the fused grads are no further from
        # float64 than theirs (plus the dtype's tolerance)
        assert rel_err(fast, ref) < max(2 * rel_err(plain, ref), tol), name


def test_se_trunk_on_cuda_equals_cpu():
    """The same SE-ResNet-50 trunk gives the same features on the GPU and the CPU (fp32)."""
    cfg = get_se_cfg(INSTANT, ["MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    backbone = build_se_resnet_backbone(cfg, ShapeSpec(channels=3)).eval()
    x = torch.randn(2, 3, 128, 160)
    with torch.no_grad():
        cpu = backbone(x)
        gpu = copy.deepcopy(backbone).to(DEVICE)(x.to(DEVICE))
    for name, feature in cpu.items():
        assert rel_err(gpu[name].cpu(), feature) < 1e-4, name


# ----------------------------------------------------------------------------------------------
# Detection: AMP steps, fused optimizers, export, exact resume
# ----------------------------------------------------------------------------------------------
def _batch(masks=False):
    gen = torch.Generator().manual_seed(0)
    batch = []
    boxes = torch.tensor([[20.0, 30.0, 120.0, 150.0], [150.0, 40.0, 300.0, 200.0]])
    for _ in range(2):
        inst = Instances((256, 320))
        inst.gt_boxes = Boxes(boxes)
        inst.gt_classes = torch.tensor([0, 3])
        if masks:
            bitmasks = torch.zeros(2, 256, 320, dtype=torch.bool)
            for k, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
                bitmasks[k, y0 + 8 : y1 - 8, x0 + 8 : x1 - 8] = True
            inst.gt_masks = BitMasks(bitmasks)
        batch.append({"image": torch.rand(3, 256, 320, generator=gen) * 255, "instances": inst})
    return batch


def _losses(model, batch, dtype):
    torch.manual_seed(0)  # the RoI sampler draws random numbers
    with (
        EventStorage(0),
        torch.autocast(DEVICE.type, dtype or torch.float16, enabled=dtype is not None),
    ):
        losses = model(batch)
    return {k: float(v) for k, v in losses.items()}, sum(losses.values())


@pytest.mark.parametrize("config", [INSTANT, MASK_INSTANT], ids=["faster", "mask"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_rcnn_amp_step_is_finite_and_close_to_fp32(config, dtype):
    cfg = get_se_cfg(config, ["MODEL.DEVICE", DEVICE.type, "MODEL.ROI_HEADS.NUM_CLASSES", "5"])
    torch.manual_seed(0)
    model = build_eval_model(cfg).train()  # random init; FrozenBN-free trunk (BN)
    batch = _batch(masks=cfg.MODEL.MASK_ON)
    fp32, _ = _losses(copy.deepcopy(model), batch, None)
    amp, total = _losses(model, batch, dtype)
    total.backward()
    assert set(amp) == set(fp32) and ("loss_mask" in amp) == cfg.MODEL.MASK_ON
    for name, value in amp.items():
        assert np.isfinite(value), name
        assert value == pytest.approx(fp32[name], rel=0.1, abs=0.02), name
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert len(grads) > 100 and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("optimizer", ["SGD", "AdamW"])
def test_fused_optimizer_on_cuda_equals_unfused(optimizer):
    cfg = get_se_cfg(INSTANT, ["MODEL.DEVICE", DEVICE.type, "SOLVER.OPTIMIZER", optimizer])
    torch.manual_seed(0)
    model = build_eval_model(cfg).train()
    reference = copy.deepcopy(model)
    fused = build_optimizer(cfg, model)
    assert all(group.get("fused") for group in fused.param_groups)
    unfused = build_optimizer(cfg, reference)
    for group in unfused.param_groups:
        group["fused"], group["foreach"] = False, False
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    # One backward pass, its gradients given to both optimizers: two backward passes are not
    # bit-identical on CUDA (atomicAdd in RoIAlign's backward, cuDNN's weight gradients), and
    # AdamW's first step, g / (|g| + eps), turns such differences near eps into large ones.
    fused.zero_grad()
    _, total = _losses(model, _batch(), None)
    total.backward()
    reference_params = dict(reference.named_parameters())
    for name, p in model.named_parameters():
        reference_params[name].grad = None if p.grad is None else p.grad.clone()
    fused.step()
    unfused.step()
    for name, a in model.named_parameters():
        torch.testing.assert_close(a, reference_params[name], rtol=1e-5, atol=1e-6, msg=name)
    params = dict(model.named_parameters())
    moved = [n for n, w in before.items() if not torch.equal(params[n], w)]
    assert len(moved) > 0.9 * len(before)  # the step updated (almost) every trainable weight


@pytest.mark.parametrize("method", ["tracing", "scripting"])
def test_export_of_a_cuda_model(method, tmp_path):
    opts = ["MODEL.DEVICE", DEVICE.type, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]
    torch.manual_seed(0)
    model = build_eval_model(get_se_cfg(MASK_INSTANT, opts))
    image = torch.rand(3, 128, 160, generator=torch.Generator().manual_seed(1)).to(DEVICE) * 255
    expected = reference_outputs(model, image)
    assert len(expected["scores"]) > 0
    result = export_detector(model, image, "torchscript", method, str(tmp_path))
    actual = result.run(image)
    assert actual["pred_boxes"].device.type == DEVICE.type
    diffs = compare_detections(expected, actual)
    assert set(diffs) == {"pred_boxes", "scores", "pred_classes", "pred_masks"}


@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "amp-fp16"])
def test_resume_on_cuda_continues_where_it_stopped(tmp_path, amp, run_trainer):
    """Crash after iteration 4, resume: iteration, schedule, sampler and weights continue.

    CUDA kernels such as atomic-add reductions are not bit-reproducible, so weights are compared
    to a tolerance here (on the CPU, tests/test_train_net.py requires bit equality).
    """
    if amp and not ON_CUDA:
        pytest.skip("AMP detection training (Detectron2's AMPTrainer) needs CUDA")
    info = generate_synthetic_dataset(
        str(tmp_path / "data"), num_train=12, num_val=2, image_size=64, seed=3
    )

    def trainer_for(out):
        cfg = get_se_cfg(
            INSTANT,
            [
                "DATASETS.REGISTER_COCO",
                f"['cuda_tiny_train:{info['train_json']}:{info['train_images']}']",
                "DATASETS.TRAIN", "('cuda_tiny_train',)",
                "DATASETS.TEST", "()",
                "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64",
                "SOLVER.MAX_ITER", "7", "SOLVER.STEPS", "(5,)", "SOLVER.CHECKPOINT_PERIOD", "4",
                "SOLVER.AMP.ENABLED", str(amp),
                "MODEL.DEVICE", DEVICE.type, "OUTPUT_DIR", str(out),
            ],
        )  # fmt: skip
        cfg.freeze()
        register_datasets_from_cfg(cfg)
        seed_all_rng(cfg.SEED)
        return SETrainer(cfg)

    run_trainer(trainer_for(tmp_path / "straight"))
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_trainer(trainer_for(tmp_path / "crashed"), crash_after=4)
    resumed = run_trainer(trainer_for(tmp_path / "crashed"), resume=True)
    assert resumed.start_iter == 4
    a = torch.load(tmp_path / "straight/model_final.pth", map_location="cpu", weights_only=False)
    b = torch.load(tmp_path / "crashed/model_final.pth", map_location="cpu", weights_only=False)
    assert a["iteration"] == b["iteration"] == 6
    assert a["trainer"]["hooks"]["LRScheduler"] == b["trainer"]["hooks"]["LRScheduler"]
    for key, value in a["model"].items():
        if value.is_floating_point():
            torch.testing.assert_close(b["model"][key], value, rtol=1e-3, atol=1e-4, msg=key)


# ----------------------------------------------------------------------------------------------
# Pretraining
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("amp_dtype", ["fp16", "bf16"])
def test_pretraining_amp_channels_last_on_cuda(tmp_path, amp_dtype):
    if amp_dtype == "fp16" and not ON_CUDA:
        pytest.skip("fp16 autocast training needs CUDA")
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 4)):
        for c, name in enumerate(("cat", "dog")):
            folder = tmp_path / "imgs" / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 80, size=(40, 40, 3), dtype=np.uint8)
                pixels[..., c] += 150
                Image.fromarray(pixels).save(folder / f"{i}.png")
    out = tmp_path / "run"
    argv = ["--data-path", str(tmp_path / "imgs"), "--output-dir", str(out), "--workers", "0"]
    argv += ["--device", DEVICE.type, "--batch-size", "4", "--epochs", "2", "--arch", "se_resnet50"]
    argv += ["--train-crop-size", "32", "--val-resize-size", "32", "--val-crop-size", "32"]
    argv += ["--amp", "--amp-dtype", amp_dtype, "--channels-last", "--lr", "0.01"]
    result = pretrain_main(get_args_parser().parse_args(argv))
    assert result["last"]["epoch"] == 2 and np.isfinite(result["last"]["train_loss"])
    ckpt = torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=True)
    assert (ckpt["scaler"] is not None) == (amp_dtype == "fp16")
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL DDP needs two GPUs")
def test_two_gpu_nccl_training(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "ddp"
    proc = subprocess.run(
        [sys.executable, str(root / "tools/train_net.py"), "--num-gpus", "2",
         "--config-file", INSTANT, "SOLVER.MAX_ITER", "4", "DATASETS.TEST", "()",
         "OUTPUT_DIR", str(out)],
        cwd=root, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "model_final.pth").is_file()
