"""The workloads of ``tools/benchmark.py``: each builds its models and returns timed variants.

Every case compares the SE model with the plain Detectron2 ResNet-50 built from the same config
(only the SE units differ), and with the same SE model run through the straightforward SE
computation (``se_fast_path(False)``), which shows what the fused path gains. Weights are random
(nothing is downloaded). Random weights without normalisation statistics make activations grow
block after block (a plain random R50-FPN yields p2 features ~30x larger than a random SE one, and
100 detections where the SE model yields none), so the Detectron2 models' FrozenBN statistics
are first calibrated on the benchmark input, as a trained network's would be: both models then
see unit-scale features and their heads do the same amount of work.

Under ``--precisions bf16``/``fp16`` (:func:`with_precision`) a training step runs as
Detectron2's AMPTrainer runs it (forward and loss under autocast, backward and step outside,
GradScaler for fp16). ``channel_dot`` is a micro-case of one SE kernel choice, not a model.
"""

import contextlib
import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional
from unittest import mock

import torch
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import build_model
from detectron2.modeling.backbone.resnet import build_resnet_backbone
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from se_detectron.config import get_se_cfg
from se_detectron.layers import SqueezeExcitation, se_fast_path
from se_detectron.layers.se import _channel_dot
from se_detectron.modeling import build_se_resnet_backbone, build_se_resnet_classifier
from se_detectron.modeling.archs import apply_arch

__all__ = [
    "CASE_NAMES",
    "CUDA_AMP_TARGETS",
    "CUDA_CLASSIFIER_TARGET_BATCH",
    "PRECISIONS",
    "TARGETS",
    "Case",
    "build_cases",
    "calibrate_frozen_bn",
    "channel_dot_case",
    "with_precision",
]

DETECTION_CONFIG = "COCO-Detection/faster_rcnn_SE_R_50_FPN_1x.yaml"
#: The benchmark cases, in the order they run.
CASE_NAMES = (
    "trunk",
    "rcnn_inference",
    "rcnn_training",
    "classifier",
    "se_breakdown",
    "channel_dot",
)

#: The CPU time target per case, the SE model time / plain model time ratio to stay within (None
#: for no target).
TARGETS = {
    "trunk": None,
    "rcnn_inference": 1.02,
    "rcnn_training": 1.04,
    "classifier": 1.03,
    "se_breakdown": None,
    "channel_dot": None,
}
#: The targets on a GPU with AMP, SE / plain <= 1.03 for Faster R-CNN training and inference and
#: for the classifier at batch 256 (smaller batches are launch-bound on a GPU).
CUDA_AMP_TARGETS = {"rcnn_inference": 1.03, "rcnn_training": 1.03, "classifier": 1.03}
#: The classifier batch size the GPU target applies to.
CUDA_CLASSIFIER_TARGET_BATCH = 256
#: The ``--precisions``, fp32 or autocast mixed precision with bfloat16 or float16 (float16 training
#: steps scale the loss with a GradScaler, as Detectron2's AMPTrainer).
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Case:
    """One workload measured with several variants.

    Attributes:
        name: identifier used in the JSON output, e.g. ``classifier_b32_channels_last``.
        description: what one timed step does.
        variants: variant name -> zero-argument callable running one step.
        baseline: the variant ratios are taken against (the plain ResNet-50).
        se_variant: our SE model (fast path), whose ratio the target applies to.
        target: the SE / plain time ratio to stay within, if the case has a target.
        compare: extra (numerator, denominator) ratios to report.
        amp_variants: builds the variants for an autocast dtype when only part of a step may run
            under autocast (a training step: forward and loss; see :func:`with_precision`).
    """

    name: str
    description: str
    variants: Dict[str, Callable[[], object]]
    baseline: str
    se_variant: str
    target: Optional[float] = None
    compare: List[tuple] = field(default_factory=list)
    amp_variants: Optional[Callable[[torch.dtype], Dict[str, Callable[[], object]]]] = None


def with_precision(case: Case, precision: str, device: torch.device) -> Case:
    """``case`` in mixed precision (``precision`` "bf16" or "fp16"), or as is ("fp32").

    The models are shared with ``case`` (nothing is rebuilt). Inference variants run wholly
    under ``torch.autocast``; a case with ``amp_variants`` builds its own, as users run them:
    a training step has only its forward and loss under autocast and the backward and optimizer
    step outside it, with a GradScaler for float16 (Detectron2's AMPTrainer). On CUDA the case
    gets the AMP target of :data:`CUDA_AMP_TARGETS` (the classifier's only from batch
    :data:`CUDA_CLASSIFIER_TARGET_BATCH`).

    Args:
        case: a case from :func:`build_cases`.
        precision: a key of :data:`PRECISIONS`.
        device: the device the case runs on.
    """
    dtype = PRECISIONS[precision]
    if dtype is None:
        return case

    def autocast(fn):
        def run():
            with torch.autocast(device.type, dtype=dtype):
                return fn()

        return run

    kind = next((k for k in CUDA_AMP_TARGETS if case.name.startswith(k)), None)
    target = case.target
    if device.type == "cuda" and kind is not None:
        batch = int(case.name.split("_b")[1].split("_")[0]) if kind == "classifier" else None
        target = None if batch and batch < CUDA_CLASSIFIER_TARGET_BATCH else CUDA_AMP_TARGETS[kind]
    return dataclasses.replace(
        case,
        name=f"{case.name}_{precision}",
        description=f"{case.description}; autocast {precision}",
        variants=case.amp_variants(dtype)
        if case.amp_variants is not None
        else {name: autocast(fn) for name, fn in case.variants.items()},
        target=target,
    )


def _straightforward(fn: Callable[[], object]) -> Callable[[], object]:
    def run():
        with se_fast_path(False):
            return fn()

    return run


def _se_vs_plain(
    plain_name: str, plain_step: Callable[[], object], se_name: str, se_step: Callable[[], object]
) -> Dict[str, Callable[[], object]]:
    """The plain model, the SE model, and the SE model through the straightforward SE ops."""
    return {
        plain_name: plain_step,
        se_name: se_step,
        f"{se_name} straightforward": _straightforward(se_step),
    }


def _inference(fn: Callable[[], object]) -> Callable[[], object]:
    def run():
        with torch.no_grad():  # as Detectron2's evaluation loop and DefaultPredictor
            return fn()

    return run


def _detection_cfg(se: bool, device: torch.device):
    cfg = get_se_cfg(DETECTION_CONFIG, ["MODEL.WEIGHTS", "", "MODEL.DEVICE", str(device)])
    if not se:
        cfg.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"
    return cfg


@torch.no_grad()
def calibrate_frozen_bn(model: torch.nn.Module, run: Callable[[], object]) -> None:
    """Set every FrozenBN's statistics to those of its input during ``run()`` (in order).

    Each layer normalises its input to zero mean and unit variance per channel, computed after
    the layers before it have been calibrated, so the whole network has unit-scale activations.
    """

    def hook(module, inputs):
        x = inputs[0]
        module.running_mean.copy_(x.mean((0, 2, 3)))
        module.running_var.copy_(x.var((0, 2, 3), unbiased=False))

    handles = [
        m.register_forward_pre_hook(hook)
        for m in model.modules()
        if isinstance(m, FrozenBatchNorm2d)
    ]
    if not handles:
        raise ValueError("calibrate_frozen_bn: the model has no FrozenBatchNorm2d layer")
    was_training = model.training
    model.eval()
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)


def trunk_case(device: torch.device, height: int, width: int) -> Case:
    """Backbone trunk forward (res2-res5 outputs), no autograd, one image."""
    cfg = _detection_cfg(True, device)
    shape = ShapeSpec(channels=3)
    plain = build_resnet_backbone(cfg, shape).to(device).eval()
    se = build_se_resnet_backbone(cfg, shape).to(device).eval()
    x = torch.randn(1, 3, height, width, device=device)
    description = f"trunk forward, 1x3x{height}x{width}, FrozenBN, no_grad"
    return _inference_case("trunk", description, ("R50", "SE-R50"), (plain, se), x)


def _inference_case(name: str, description: str, names, models, inputs) -> Case:
    """Calibrate both models' FrozenBN on ``inputs`` and time ``model(inputs)`` without grad."""
    (plain_name, se_name), (plain, se) = names, models
    for model in models:
        calibrate_frozen_bn(model, lambda m=model: m(inputs))
    return Case(
        name=name,
        description=description,
        variants=_se_vs_plain(
            plain_name, _inference(lambda: plain(inputs)), se_name, _inference(lambda: se(inputs))
        ),
        baseline=plain_name,
        se_variant=se_name,
        target=TARGETS[name],
    )


def _detection_models(device: torch.device):
    """The plain and SE Faster R-CNN, with identical proposals whatever their features.

    The RPN's output layers are zeroed in both models, so both propose the same boxes (the
    anchors, ranked alike) and, with the same seed, sample the same RoIs: the RoIAlign, box head
    and NMS work is identical and only the backbone differs (with random proposals, RoIAlign's
    backward took 940 vs 645 ms and the whole iteration 13% longer for the plain model at
    256x320, from the proposals' sizes alone).
    """
    torch.manual_seed(0)
    models = build_model(_detection_cfg(False, device)), build_model(_detection_cfg(True, device))
    for model in models:
        head = model.proposal_generator.rpn_head
        for layer in (head.objectness_logits, head.anchor_deltas):
            torch.nn.init.zeros_(layer.weight)
            torch.nn.init.zeros_(layer.bias)
    return models


def _image(height: int, width: int, device: torch.device, generator) -> torch.Tensor:
    return torch.randint(0, 256, (3, height, width), generator=generator, dtype=torch.uint8).to(
        device
    )


def rcnn_inference_case(device: torch.device, height: int, width: int) -> Case:
    """Faster R-CNN FPN inference on one image (preprocessing, backbone, RPN, box head, NMS)."""
    plain, se = _detection_models(device)
    plain.eval()
    se.eval()
    gen = torch.Generator().manual_seed(0)
    batch = [{"image": _image(height, width, device, gen), "height": height, "width": width}]
    description = f"Faster R-CNN FPN inference, 1 image {height}x{width}, no_grad"
    return _inference_case(
        "rcnn_inference", description, ("R50-FPN", "SE-R50-FPN"), (plain, se), batch
    )


def _training_step(
    model, optimizer, batch, device: torch.device, dtype: Optional[torch.dtype] = None
) -> Callable[[], object]:
    """One training iteration as Detectron2's SimpleTrainer / AMPTrainer runs it.

    With ``dtype`` only the forward and the loss run under autocast; backward and the optimizer
    step run outside it, and a float16 loss is scaled by a GradScaler (``scale``, ``step``,
    ``update``), as in Detectron2's AMPTrainer.
    """
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    def step():
        torch.manual_seed(0)  # same RPN/RoI sampling in every step and for every variant
        with (
            EventStorage(0),  # the RPN/RoI heads log to it
            torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None),
        ):
            losses = model(batch)
            loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss.detach()

    return step


def _training_variants(models, batch, device, dtype=None) -> Dict[str, Callable[[], object]]:
    """The ``rcnn_training`` variants for autocast ``dtype`` (None: float32)."""
    steps = {
        name: _training_step(model, optimizer, batch, device, dtype)
        for name, (model, optimizer) in models.items()
    }
    return _se_vs_plain("R50-FPN", steps["R50-FPN"], "SE-R50-FPN", steps["SE-R50-FPN"])


def rcnn_training_case(device: torch.device, height: int, width: int, images: int = 2) -> Case:
    """One Faster R-CNN FPN training iteration: forward with losses, backward, SGD step."""
    plain, se = _detection_models(device)
    gen = torch.Generator().manual_seed(0)
    batch = []
    for _ in range(images):
        xy = torch.rand(5, 2, generator=gen) * torch.tensor([width * 0.7, height * 0.7])
        wh = (0.1 + 0.2 * torch.rand(5, 2, generator=gen)) * torch.tensor([width, height])
        instances = Instances((height, width))
        instances.gt_boxes = Boxes(torch.cat([xy, xy + wh], dim=1))
        instances.gt_classes = torch.randint(0, 80, (5,), generator=gen)
        batch.append({"image": _image(height, width, device, gen), "instances": instances})
    models = {}
    for name, model in (("R50-FPN", plain), ("SE-R50-FPN", se)):
        images_only = [{"image": b["image"]} for b in batch]
        calibrate_frozen_bn(model, lambda m=model, b=images_only: m(b))
        model.train()
        # lr 0 keeps the weights, hence the work per step, identical across steps.
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=0.0, momentum=0.9, weight_decay=1e-4)
        models[name] = (model, optimizer)
    return Case(
        name="rcnn_training",
        description=(
            f"Faster R-CNN FPN training iteration, {images} images {height}x{width}, "
            "FrozenBN, FREEZE_AT 2, forward + backward + SGD step"
        ),
        variants=_training_variants(models, batch, device),
        baseline="R50-FPN",
        se_variant="SE-R50-FPN",
        target=TARGETS["rcnn_training"],
        amp_variants=functools.partial(_training_variants, models, batch, device),
    )


def _classifier(se: bool):
    cfg = get_se_cfg()
    apply_arch(cfg, "se_resnet50")
    # timm's (se)resnet50 stride in the 3x3 conv (ResNet v1.5); match it for the comparison.
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.MODEL.RESNETS.NORM = "BN"
    if not se:
        cfg.MODEL.SE.STAGES = []
    return build_se_resnet_classifier(cfg, num_classes=1000)


def _classifier_input(device, batch_size: int, channels_last: bool, size: int):
    """The classifier benchmarks' input and memory format."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(batch_size, 3, size, size, device=device).contiguous(memory_format=fmt)
    return x, fmt


def _layout(channels_last: bool) -> str:
    return "channels_last" if channels_last else "nchw"


def classifier_case(
    device: torch.device,
    batch_size: int,
    channels_last: bool,
    size: int = 224,
    compile_models: bool = False,
) -> Case:
    """ImageNet classifier inference (eval mode, no autograd) at ``size`` x ``size``.

    Args:
        compile_models: also time our plain and SE models through ``torch.compile`` (Inductor,
            with ``freezing`` for inference: weights become constants, convolutions are
            prepacked); the first call, in the warm-up, compiles.
    """
    torch.manual_seed(0)
    models = {"ResNet-50": _classifier(False), "SE-ResNet-50": _classifier(True)}
    compare = []
    with contextlib.suppress(ImportError):
        import timm

        models["timm seresnet50"] = timm.create_model("seresnet50", pretrained=False)
        models["timm resnet50"] = timm.create_model("resnet50", pretrained=False)
        compare.append(("SE-ResNet-50", "timm seresnet50"))
        compare.append(("timm seresnet50", "timm resnet50"))
    x, fmt = _classifier_input(device, batch_size, channels_last, size)
    variants = {}
    for name, model in models.items():
        model = model.to(device=device, memory_format=fmt).eval()
        variants[name] = _inference(lambda m=model: m(x))
        if name == "SE-ResNet-50":
            variants["SE-ResNet-50 straightforward"] = _straightforward(variants[name])
    if compile_models:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
        for name in ("ResNet-50", "SE-ResNet-50"):
            compiled = torch.compile(models[name])
            variants[f"{name} compiled"] = _inference(lambda m=compiled: m(x))
        compare.append(("SE-ResNet-50 compiled", "ResNet-50 compiled"))
        compare.append(("SE-ResNet-50 compiled", "SE-ResNet-50"))
    layout = _layout(channels_last)
    return Case(
        name=f"classifier_b{batch_size}_{layout}",
        description=(
            f"classifier forward, {batch_size}x3x{size}x{size} {layout}, eval BN, no_grad; "
            "stride in the 3x3 conv for all models"
        ),
        variants=variants,
        baseline="ResNet-50",
        se_variant="SE-ResNet-50",
        target=TARGETS["classifier"],
        compare=compare,
    )


def _zero_squeeze(layer: SqueezeExcitation, x: torch.Tensor) -> torch.Tensor:
    """Ablation: a squeeze that does not read ``x`` (the excitation MLP still runs, on zeros)."""
    return x.new_zeros(x.shape[0], layer.channels)


def _gate_only(layer: SqueezeExcitation, z: torch.Tensor) -> torch.Tensor:
    """Ablation: an excitation without the two FC layers (no FC weights are read)."""
    return torch.sigmoid(z)


# Parts of the SE unit removed in the se_breakdown case: SqueezeExcitation method -> replacement.
# They compute wrong excitations on purpose; their time against the plain model tells what each
# part costs, hence how much any faster implementation of that part could gain.
SE_ABLATIONS = {
    "SE without pool": {"squeeze": _zero_squeeze},
    "SE without FC layers": {"excite": _gate_only},
    "SE scale-add only": {"squeeze": _zero_squeeze, "excite": _gate_only},
}


def _ablated(fn: Callable[[], object], replacements: Dict[str, Callable]) -> Callable[[], object]:
    """``fn`` run with :class:`SqueezeExcitation` methods replaced (restored afterwards)."""

    def run():
        with contextlib.ExitStack() as stack:
            for method, replacement in replacements.items():
                stack.enter_context(mock.patch.object(SqueezeExcitation, method, replacement))
            return fn()

    return run


def se_breakdown_case(
    device: torch.device, batch_size: int, channels_last: bool, size: int = 224
) -> Case:
    """What each part of the SE unit costs in the classifier forward (see :data:`SE_ABLATIONS`).

    The same SE-ResNet-50 as the ``classifier`` case, also run with its pool, its FC layers, or
    both replaced by stand-ins that cost nothing; the remaining ``addcmul`` replaces the plain
    block's addition. A diagnostic: no target applies.
    """
    torch.manual_seed(0)
    x, fmt = _classifier_input(device, batch_size, channels_last, size)
    plain = _classifier(False).to(device=device, memory_format=fmt).eval()
    se = _classifier(True).to(device=device, memory_format=fmt).eval()
    se_step = _inference(lambda: se(x))
    variants = {"ResNet-50": _inference(lambda: plain(x)), "SE-ResNet-50": se_step}
    for name, replacements in SE_ABLATIONS.items():
        variants[name] = _ablated(se_step, replacements)
    layout = _layout(channels_last)
    return Case(
        name=f"se_breakdown_b{batch_size}_{layout}",
        description=(
            f"SE cost breakdown: classifier forward, {batch_size}x3x{size}x{size} {layout}, "
            "eval BN, no_grad, with parts of the SE unit removed (ablations, wrong outputs)"
        ),
        variants=variants,
        baseline="ResNet-50",
        se_variant="SE-ResNet-50",
        target=TARGETS["se_breakdown"],
    )


# channel_dot variants: se.py's two _channel_dot branches and two alternatives
CHANNEL_DOT_VARIANTS = (
    "(a*b).sum((2,3)) NCHW",
    "_channel_dot NCHW (bmm)",
    "_channel_dot channels_last ((a*b).sum)",
    "channels_last: contiguous copies + bmm",
)


def _channel_dot_variants(a, b, device, dtype=None) -> Dict[str, Callable[[], object]]:
    """The :data:`CHANNEL_DOT_VARIANTS` on copies of ``a``, ``b`` in ``dtype`` (None: float32).

    Each runs with autocast off, as the SE backward that calls ``_channel_dot`` does (autograd
    runs it without autocast, on the tensors the forward saved: bf16/fp16 under AMP).
    """
    a, b = (t.to(dtype or torch.float32) for t in (a, b))
    a_cl, b_cl = (t.contiguous(memory_format=torch.channels_last) for t in (a, b))
    functions = (
        lambda: (a * b).sum((2, 3)),
        lambda: _channel_dot(a, b),
        lambda: _channel_dot(a_cl, b_cl),
        lambda: _channel_dot(a_cl.contiguous(), b_cl.contiguous()),
    )

    def without_autocast(fn):
        def run():
            with torch.no_grad(), torch.autocast(device.type, enabled=False):
                return fn()

        return run

    return {name: without_autocast(fn) for name, fn in zip(CHANNEL_DOT_VARIANTS, functions)}


def channel_dot_case(device: torch.device, batch_size: int, size: int = 224) -> Case:
    """Micro-case: the SE backward's ``_channel_dot`` (layers/se.py) against ``(a*b).sum((2,3))``.

    ``_channel_dot(grad, x)`` computes the per-channel dot products of two (N, C, H, W) tensors:
    NCHW tensors take a ``bmm`` with N*C batches of 1x1 outputs, channels_last ones the full-size
    product ``(a * b).sum((2, 3))``. Timed at the classifier's res2 SE input (C 256,
    ``size`` / 4 square), the largest of the network, with a channels_last alternative (copy to
    NCHW, then ``bmm``); the first GPU run tells which branch to keep. No target applies.
    """
    side = max(size // 4, 1)
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(batch_size, 256, side, side, generator=gen).to(device) for _ in range(2))
    return Case(
        name=f"channel_dot_b{batch_size}",
        description=(
            f"_channel_dot(a, b) of {batch_size}x256x{side}x{side} tensors (the SE backward), "
            "NCHW and channels_last, against (a*b).sum((2,3))"
        ),
        variants=_channel_dot_variants(a, b, device),
        baseline=CHANNEL_DOT_VARIANTS[0],
        se_variant=CHANNEL_DOT_VARIANTS[1],
        target=TARGETS["channel_dot"],
        compare=[(CHANNEL_DOT_VARIANTS[2], CHANNEL_DOT_VARIANTS[3])],
        amp_variants=functools.partial(_channel_dot_variants, a, b, device),
    )


def build_cases(
    names,
    device: torch.device,
    *,
    height: int = 800,
    width: int = 1333,
    batch_sizes=(1, 32),
    layouts=("nchw", "channels_last"),
    classifier_size: int = 224,
    compile_models: bool = False,
):
    """Yield the requested cases one at a time (so only one case's models are in memory).

    Args:
        names: subset of :data:`CASE_NAMES`.
        device: where to run.
        height, width: detection image size.
        batch_sizes: batch sizes of the classifier, se_breakdown and channel_dot cases.
        layouts: their memory formats, ``"nchw"`` and/or ``"channels_last"``.
        classifier_size: their input side.
        compile_models: add ``torch.compile`` variants to the classifier cases.
    """
    for name in names:
        if name == "trunk":
            yield trunk_case(device, height, width)
        elif name == "rcnn_inference":
            yield rcnn_inference_case(device, height, width)
        elif name == "rcnn_training":
            yield rcnn_training_case(device, height, width)
        elif name == "classifier":
            for batch_size in batch_sizes:
                for layout in layouts:
                    yield classifier_case(
                        device,
                        batch_size,
                        layout == "channels_last",
                        classifier_size,
                        compile_models=compile_models,
                    )
        elif name == "se_breakdown":
            for batch_size in batch_sizes:
                for layout in layouts:
                    yield se_breakdown_case(
                        device, batch_size, layout == "channels_last", classifier_size
                    )
        elif name == "channel_dot":
            for batch_size in batch_sizes:
                yield channel_dot_case(device, batch_size, classifier_size)
        else:
            raise ValueError(f"unknown benchmark case {name!r}; choose from {CASE_NAMES}")
