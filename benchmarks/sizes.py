"""Parameters and multiply-adds of the architectures and detector configs (the model zoo's tables).

    python tools/model_sizes.py --archs eca_resnet50d se_resnet18 --configs Misc/...yaml

Architectures: the ImageNet classifier (1000 classes) at 224x224, multiply-adds counted as the
SE paper does (:func:`macs_as_in_paper`: convolutions and fully connected layers, the squeeze's
one op per pooled element and the scale's one per scaled element; BatchNorm folds into the
convolutions). Detector configs: the model's parameters and the multiply-adds of one
inference at ``--height x --width`` (default 800x1333; the box, mask and keypoint heads on
``TEST.DETECTIONS_PER_IMAGE`` = 100 detections) counted by Detectron2's
``FlopCountAnalysis`` (fvcore's convention: one multiply-add is one "flop"), with torchvision's
deformable convolution counted as its convolution (``C_in / groups x k x k`` per output element;
its offset convolution is a convolution and counted as such).
"""

import argparse
import sys
from math import prod
from typing import Dict, List, Optional

import torch

__all__ = ["arch_size", "build_parser", "cli", "config_size", "detector_macs", "macs_as_in_paper"]


def _input_elements(inputs, outputs):
    from fvcore.nn.jit_handles import get_shape

    return prod(get_shape(inputs[0]))


def _output_elements(inputs, outputs):
    from fvcore.nn.jit_handles import get_shape

    return prod(get_shape(outputs[0]))


def _deform_conv(inputs, outputs):
    """torchvision::deform_conv2d(input, weight, offset, mask, bias, ...): a convolution's MACs."""
    from fvcore.nn.jit_handles import get_shape

    weight = get_shape(inputs[1])  # (C_out, C_in / groups, kh, kw)
    return prod(get_shape(outputs[0])) * prod(weight[1:])


def macs_as_in_paper(model: torch.nn.Module, size: int = 224) -> int:
    """Multiply-adds of a classifier on one ``size x size`` image, as the SE paper counts them.

    Args:
        model: an ImageNet classifier (e.g. ``build_se_resnet_classifier``).
        size: the input's height and width.
    """
    from fvcore.nn import FlopCountAnalysis

    flops = FlopCountAnalysis(model, torch.zeros(1, 3, size, size))
    flops.set_op_handle("aten::mean", _input_elements, "aten::addcmul", _output_elements)
    flops.set_op_handle("torchvision::deform_conv2d", _deform_conv)
    flops.unsupported_ops_warnings(False)
    flops.uncalled_modules_warnings(False)
    by_op = flops.by_operator()
    return sum(by_op.get(op, 0) for op in ("conv", "linear", "mean", "addcmul", "deform_conv2d"))


def arch_size(name: str) -> Dict[str, float]:
    """``{"params_m", "gmacs"}`` of architecture ``name``'s 1000-class classifier at 224x224."""
    from se_detectron import get_se_cfg
    from se_detectron.modeling import build_se_resnet_classifier
    from se_detectron.modeling.archs import arch_opts

    cfg = get_se_cfg("Base-SE-RCNN-FPN.yaml", ["MODEL.DEVICE", "cpu", *arch_opts(name)])
    cfg.MODEL.RESNETS.NORM = "BN"
    model = build_se_resnet_classifier(cfg, num_classes=1000).eval()
    params = sum(p.numel() for p in model.parameters())
    return {"params_m": params / 1e6, "gmacs": macs_as_in_paper(model) / 1e9}


def detector_macs(model: torch.nn.Module, inputs: List[Dict]) -> float:
    """Multiply-adds of one Detectron2 inference ``model(inputs)``: Detectron2's
    ``FlopCountAnalysis`` total (fvcore counts one multiply-add as one "flop"), a deformable conv
    counted as its convolution."""
    from detectron2.utils.analysis import FlopCountAnalysis

    with torch.no_grad():
        flops = FlopCountAnalysis(model, inputs)
        flops.set_op_handle("torchvision::deform_conv2d", _deform_conv)
        flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        return float(flops.total())


def config_size(config: str, height: int = 800, width: int = 1333) -> Dict[str, float]:
    """``{"params_m", "gmacs"}`` of a shipped config's model; multiply-adds of one inference on
    a ``height x width`` image (random weights, the config's test-time settings)."""
    from detectron2.modeling import build_model

    from se_detectron import get_se_cfg

    # every head runs on the most detections an image may have (TEST.DETECTIONS_PER_IMAGE):
    # random weights would otherwise score nothing above the threshold and skip the mask and
    # keypoint heads
    opts = ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]
    cfg = get_se_cfg(config, opts)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    params = sum(p.numel() for p in model.parameters())
    image = torch.zeros(3, height, width)
    macs = detector_macs(model, [{"image": image, "height": height, "width": width}])
    return {"params_m": params / 1e6, "gmacs": macs / 1e9}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Parameters and multiply-adds of architectures (classifier, 224x224) and "
        "detector configs (one inference); prints Markdown rows."
    )
    parser.add_argument("--archs", nargs="*", default=[], help="names of modeling.archs.ARCHS")
    parser.add_argument("--configs", nargs="*", default=[], help="shipped config names")
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--width", type=int, default=1333)
    return parser


def cli(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_grad_enabled(False)
    if args.archs:
        print("| architecture | params | GMACs (224x224, 1000 classes) |\n| --- | --- | --- |")
        for name in args.archs:
            size = arch_size(name)
            print(f"| `{name}` | {size['params_m']:.2f}M | {size['gmacs']:.2f} |", flush=True)
    if args.configs:
        print(f"\n| config | params | GMACs ({args.height}x{args.width}) |\n| --- | --- | --- |")
        for config in args.configs:
            size = config_size(config, args.height, args.width)
            print(f"| `{config}` | {size['params_m']:.1f}M | {size['gmacs']:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(cli())
