"""``se-deploy``: evaluate, quantize and compare exported detectors.

    se-deploy evaluate --model export/model.onnx --backend openvino --dataset se_synthetic_val
    se-deploy quantize --model export/model.onnx --output export/model_int8.onnx
    se-deploy compare --model export/model.onnx --int8 export/model_int8.onnx

``compare`` is the end-to-end check of a deployment: every backend on images of several sizes
(boxes against PyTorch's), then COCO AP of every backend on the dataset, printed next to
PyTorch's with the bounds (fp32 within 0.1 AP, int8 within 1.0 AP).
"""

import argparse
import json
import logging
import os
import sys
from typing import Dict, List, Optional

import numpy as np

from ..config import get_se_cfg
from ..data import register_datasets_from_cfg
from ..errors import user_error_status
from ..utils import atomic_write_json
from ..utils.machine import cpu_name, vector_extensions
from .predictor import load, load_file_config
from .runtimes import BACKENDS, PRECISIONS, DeployError

__all__ = ["cli", "compare", "get_parser"]

logger = logging.getLogger("se_detectron.deploy")

#: |AP(route) - AP(PyTorch)| bounds of ``se-deploy compare``
AP_BOUNDS = {"fp32": 0.1, "bf16": 0.5, "int8": 1.0}


def _config(args) -> Optional[object]:
    if not getattr(args, "config_file", None):
        return None

    return get_se_cfg(args.config_file, list(args.opts))


def get_parser() -> argparse.ArgumentParser:
    """The command line of ``se-deploy``."""
    parser = argparse.ArgumentParser(
        prog="se-deploy",
        description="Evaluate, quantize (int8) and compare exported SE detectors (ONNX files "
        "from se-export-model --format onnx) on ONNX Runtime, OpenVINO and PyTorch.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    ev = sub.add_parser("evaluate", help="COCO AP of an exported file on a registered dataset")
    ev.add_argument("--model", required=True, help="exported .onnx file")
    ev.add_argument("--backend", choices=sorted(BACKENDS), default="onnxruntime")
    ev.add_argument("--precision", choices=PRECISIONS, default="fp32")
    ev.add_argument("--dataset", default=None, help="default: the file config's DATASETS.TEST[0]")
    ev.add_argument(
        "--config-file",
        default=None,
        help="config registering the dataset (DATASETS.REGISTER_COCO) and choosing the "
        "evaluator; must describe the same model as the file (checked)",
    )
    ev.add_argument("--output", default="output/deploy_eval", help="evaluator output folder")
    ev.add_argument("--threads", type=int, default=0, help="runtime threads (0: its default)")
    ev.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="config overrides")

    q = sub.add_parser("quantize", help="int8 post-training static quantization")
    q.add_argument("--model", required=True, help="exported fp32 .onnx file")
    q.add_argument("--output", required=True, help="the int8 .onnx file to write")
    q.add_argument("--calibration-dataset", default=None, help="default: DATASETS.TRAIN[0]")
    q.add_argument("--calibration-images", type=int, default=300)

    cmp = sub.add_parser(
        "compare", help="every backend on several image sizes, and its AP next to PyTorch's"
    )
    cmp.add_argument("--model", required=True, help="exported fp32 .onnx file")
    cmp.add_argument("--int8", default=None, help="its int8 file (se-deploy quantize)")
    cmp.add_argument("--dataset", default=None, help="default: the file config's DATASETS.TEST[0]")
    cmp.add_argument("--config-file", default=None, help="as for evaluate")
    cmp.add_argument("--output", default="output/deploy_compare", help="report folder")
    cmp.add_argument("--threads", type=int, default=0)
    cmp.add_argument(
        "--size-check-images", type=int, default=4, help="images for the several-sizes check"
    )
    cmp.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="config overrides")
    return parser


def _dataset(args, predictor) -> str:
    if args.dataset:
        return args.dataset
    tests = predictor.cfg.DATASETS.TEST
    if not tests:
        raise DeployError("no dataset to evaluate: pass --dataset NAME")
    return tests[0]


def _evaluate(args) -> int:
    from .evaluate import evaluate_predictor

    cfg = _config(args)
    predictor = load(args.model, args.backend, args.precision, cfg=cfg, threads=args.threads)
    results = evaluate_predictor(predictor, _dataset(args, predictor), args.output, cfg=cfg)
    report = {
        "model": args.model,
        "backend": predictor.backend,
        "precision": predictor.precision,
        "cpu": cpu_name(),
        "vector_extensions": vector_extensions(),
        "results": results,
    }
    atomic_write_json(os.path.join(args.output, "deploy_eval.json"), report, indent=2)
    print(json.dumps(report, indent=2))
    return 0


def _quantize(args) -> int:
    from .quantize import has_vnni, quantize_int8

    path = quantize_int8(args.model, args.output, args.calibration_dataset, args.calibration_images)
    vnni = "with VNNI" if has_vnni() else "without VNNI (AVX2 int8 kernels, 7-bit weights)"
    print(f"int8 model -> {path} ({cpu_name()}, {vnni})")
    return 0


def _size_check_images(cfg, dataset: str, count: int) -> List[np.ndarray]:
    """``count`` images of ``dataset``, each also rescaled to two other sizes and transposed."""
    import cv2
    from detectron2.data import DatasetCatalog
    from detectron2.data.detection_utils import read_image

    register_datasets_from_cfg(cfg)
    images = []
    for record in DatasetCatalog.get(dataset)[:count]:
        image = read_image(record["file_name"], format="BGR")
        h, w = image.shape[:2]
        images.append(image)
        images.append(cv2.resize(image, (max(8, w * 3 // 2), max(8, h * 3 // 4))))
        images.append(
            np.ascontiguousarray(cv2.resize(image, (max(8, w // 2), h)).transpose(1, 0, 2))
        )
    return images


def compare(
    model_path: str,
    int8_path: Optional[str],
    dataset: Optional[str],
    output_dir: str,
    cfg=None,
    threads: int = 0,
    size_check_images: int = 4,
) -> Dict[str, object]:
    """Run every backend on images of several sizes and evaluate each on ``dataset``.

    Routes: PyTorch (eager fp32, the reference), ONNX Runtime fp32, OpenVINO fp32, OpenVINO
    bf16 where the CPU has bf16, and the int8 file on ONNX Runtime and OpenVINO.

    Args:
        model_path: the fp32 ``.onnx`` file.
        int8_path: its int8 file, or None.
        dataset: registered dataset (default: the file config's ``DATASETS.TEST[0]``).
        output_dir: ``compare.json`` and one evaluator folder per route.
        cfg: a config registering the dataset (checked against the file).
        threads: runtime threads.
        size_check_images: dataset images used, each at 3 sizes, for the box comparison.

    Returns:
        The report (also ``compare.json``): per route its precision, the maximum box difference
        to PyTorch over the sized images, box (and mask) AP, the AP difference and its bound.
    """
    from .evaluate import evaluate_predictor

    file_cfg = load_file_config(model_path)
    dataset = dataset or (file_cfg.DATASETS.TEST[0] if file_cfg.DATASETS.TEST else None)
    if not dataset:
        raise DeployError("no dataset to evaluate: pass --dataset NAME")
    routes = [("torch", model_path, "fp32"), ("onnxruntime", model_path, "fp32")]
    routes.append(("openvino", model_path, "fp32"))
    skipped = {}
    import openvino

    if "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        routes.append(("openvino", model_path, "bf16"))
    else:
        skipped["openvino bf16"] = "this CPU has no bf16 units (OpenVINO CPU capabilities)"
    if int8_path:
        routes += [("onnxruntime", int8_path, "fp32"), ("openvino", int8_path, "fp32")]
    predictors = [load(path, b, p, cfg=cfg, threads=threads) for b, path, p in routes]
    images = _size_check_images(cfg if cfg is not None else file_cfg, dataset, size_check_images)
    reference = [predictors[0](image) for image in images]
    report: Dict[str, object] = {
        "model": model_path,
        "int8": int8_path,
        "dataset": dataset,
        "cpu": cpu_name(),
        "vector_extensions": vector_extensions(),
        "size_check_shapes": sorted({tuple(i.shape[:2]) for i in images}),
        "skipped": skipped,
        "routes": [],
    }
    torch_ap = None
    for (backend, path, _), predictor in zip(routes, predictors):
        name = f"{backend} {predictor.precision}"
        diffs, counts = [], []
        for image, ref in zip(images, reference):
            out = predictor(image)
            counts.append((len(out), len(ref)))
            if len(out) == len(ref) and len(ref):
                diffs.append(float((out.pred_boxes.tensor - ref.pred_boxes.tensor).abs().max()))
        folder = os.path.join(output_dir, name.replace(" ", "_").replace("+", "_"))
        results = evaluate_predictor(predictor, dataset, folder, cfg=cfg)
        box_ap = results.get("bbox", {}).get("AP")
        if torch_ap is None:
            torch_ap = box_ap
        kind = "int8" if "int8" in predictor.precision else predictor.precision
        delta = None if box_ap is None or torch_ap is None else box_ap - torch_ap
        report["routes"].append(
            {
                "route": name,
                "file": path,
                "box_AP": box_ap,
                "mask_AP": results.get("segm", {}).get("AP"),
                "delta_box_AP": delta,
                "bound": None if backend == "torch" else AP_BOUNDS[kind],
                "within_bound": None
                if backend == "torch" or delta is None
                else abs(delta) <= AP_BOUNDS[kind],
                "same_detection_count": sum(a == b for a, b in counts),
                "images": len(counts),
                "max_box_diff_px": max(diffs) if diffs else None,
            }
        )
    atomic_write_json(os.path.join(output_dir, "compare.json"), report, indent=2)
    return report


def format_table(report: Dict[str, object]) -> str:
    """The ``compare`` report as a Markdown table."""
    lines = [
        f"{report['dataset']}, {report['cpu']} ({report['vector_extensions']}); sizes checked: "
        + ", ".join(f"{h}x{w}" for h, w in report["size_check_shapes"]),
        "",
        "| route | box AP | mask AP | AP - PyTorch | bound | same #det | max box diff (px) |",
        "|---|---|---|---|---|---|---|",
    ]

    def num(v, fmt="{:.2f}"):
        return "-" if v is None else fmt.format(v)

    for r in report["routes"]:
        ok = {None: "", True: " ok", False: " EXCEEDED"}[r["within_bound"]]
        lines.append(
            f"| {r['route']} | {num(r['box_AP'])} | {num(r['mask_AP'])} | "
            f"{num(r['delta_box_AP'], '{:+.2f}')} | {num(r['bound'], '{:.1f}')}{ok} | "
            f"{r['same_detection_count']}/{r['images']} | {num(r['max_box_diff_px'], '{:.2g}')} |"
        )
    for route, why in report["skipped"].items():
        lines.append(f"\n{route}: skipped, {why}")
    return "\n".join(lines)


def _compare(args) -> int:
    report = compare(
        args.model,
        args.int8,
        args.dataset,
        args.output,
        cfg=_config(args),
        threads=args.threads,
        size_check_images=args.size_check_images,
    )
    print(format_table(report))
    failed = [r["route"] for r in report["routes"] if r["within_bound"] is False]
    if failed:
        print(f"AP bound exceeded: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def cli(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``se-deploy``: 0 on success, 1 if ``compare`` finds an AP beyond its
    bound, 2 after one ``error:`` line (missing runtime, wrong file, unregistered dataset...)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = get_parser().parse_args(argv)
    command = {"evaluate": _evaluate, "quantize": _quantize, "compare": _compare}[args.command]
    return user_error_status(command, args)
