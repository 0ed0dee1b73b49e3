"""Exported-model speed: one SE-R50-FPN Faster R-CNN through every inference route, interleaved.

    python tools/benchmark_deploy.py --output output/benchmark/deploy.json

Every route runs the same weights on the same ``height x width`` BGR image, image in, Detectron2
``Instances`` out (resize, network, postprocessing), timed in turns in one process with
:func:`benchmarks.timing.run_interleaved`:

============================  ===============================================================
route                         precision (set explicitly)
============================  ===============================================================
``eager``                     Detectron2 ``DefaultPredictor``, fp32 (the baseline)
``eager+compile``             the same with ``torch.compile`` on the backbone, fp32
``onnxruntime``               ONNX Runtime CPU, fp32
``openvino``                  OpenVINO CPU, ``INFERENCE_PRECISION_HINT=f32``
``onnxruntime-int8``          the int8 QDQ file (ONNX Runtime quantizer) in ONNX Runtime
``openvino-int8``             the same file in OpenVINO (other layers f32)
``openvino-bf16``             OpenVINO ``INFERENCE_PRECISION_HINT=bf16``, only on bf16 CPUs
============================  ===============================================================

The report gives each route's median time, its speed-up over eager, whether its boxes equal
eager's (count and max difference), and the fraction of the cores' fp32 peak it reaches:
model FLOPs (Detectron2's ``FlopCountAnalysis``, which counts a multiply-add as one flop, times
2) over the median time, against :func:`se_detectron.utils.machine.peak_fp32_flops` (the
assumption is printed). int8 and bf16 routes are set against the same fp32 peak (what the
fp32 model's arithmetic would need), so their fractions can exceed the fp32 routes'.
"""

import argparse
import os
import sys
import tempfile
import time
from typing import Dict, List, Optional

import numpy as np
import torch

from se_detectron.utils.atomic import atomic_write_json
from se_detectron.utils.machine import cpu_name, peak_fp32_flops, vector_extensions

from .timing import run_interleaved

__all__ = ["build_parser", "build_routes", "cli", "model_flops", "profile_routes"]

CONFIG = "COCO-Detection/faster_rcnn_SE_R_50_FPN_1x.yaml"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Time SE-R50-FPN Faster R-CNN inference through Detectron2's eager predictor, "
        "torch.compile, ONNX Runtime, OpenVINO (fp32, bf16) and int8, interleaved; report "
        "speed-ups over eager and fractions of the CPU's fp32 peak.",
    )
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--width", type=int, default=1333)
    parser.add_argument("--size", type=int, default=None, help="square HxW (overrides both)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=None, help="default: all usable cores")
    parser.add_argument(
        "--weights", default="", help="MODEL.WEIGHTS (default: random, seeded; same for all)"
    )
    parser.add_argument("--no-compile", action="store_true", help="skip eager+compile")
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 routes")
    parser.add_argument(
        "--calibration-images",
        type=int,
        default=2,
        help="se_synthetic_train images calibrating the int8 file (speed only: the int8 AP is "
        "measured by se-deploy compare; ONNX Runtime's calibrator keeps every activation of "
        "every image, ~2 GB each at 800x1333)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after the timing, run each route once under its own profiler (torch.profiler, "
        "ONNX Runtime's, OpenVINO's PERF_COUNT) and report where the time goes by operator type",
    )
    parser.add_argument("--top", type=int, default=8, help="operator types per profile")
    parser.add_argument("--work-dir", default=None, help="where the exported files go (temp)")
    parser.add_argument("--output", default="output/benchmark/deploy.json")
    return parser


def model_flops(model, image: torch.Tensor) -> float:
    """fp32 flops of one inference: 2 x its multiply-adds (:func:`.sizes.detector_macs`)."""
    from .sizes import detector_macs

    return 2.0 * detector_macs(model, [{"image": image}])


def _cfg(height: int, width: int, weights: str):
    from se_detectron import get_se_cfg

    cfg = get_se_cfg(CONFIG, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", weights])
    # the image is used at its own size (no resize): every route runs the same network input
    cfg.INPUT.MIN_SIZE_TEST = min(height, width)
    cfg.INPUT.MAX_SIZE_TEST = max(height, width)
    return cfg


def build_routes(args, image: np.ndarray, work_dir: str, threads: int):
    """``(routes, precisions, skipped, flops, runners)``: name -> ``() -> Instances``, each
    route's precision, why routes were skipped, the model's fp32 flops, and name -> what runs
    the network (the eager model, or the deployed runtime) for :func:`profile_routes`."""
    from detectron2.engine import DefaultPredictor

    from se_detectron.deploy import load
    from se_detectron.deploy.quantize import quantize_int8
    from se_detectron.export.graph import export_dynamic_onnx

    height, width = image.shape[:2]
    cfg = _cfg(height, width, args.weights)
    torch.manual_seed(0)
    eager = DefaultPredictor(cfg)
    if not args.weights:  # the same random weights for every route: save them for the torch ones
        weights = os.path.join(work_dir, "weights.pth")
        torch.save({"model": eager.model.state_dict()}, weights)
        cfg.MODEL.WEIGHTS = weights
    eager = DefaultPredictor(cfg)
    tensor = torch.as_tensor(image.astype("float32").transpose(2, 0, 1))
    flops = model_flops(eager.model, tensor)
    routes = {"eager": lambda: eager(image)["instances"]}
    runners = {"eager": eager.model}
    precisions = {"eager": "fp32 (PyTorch eager)"}
    skipped: Dict[str, str] = {}
    if not args.no_compile:
        compiled = DefaultPredictor(cfg)
        compiled.model.backbone = torch.compile(compiled.model.backbone)
        try:
            t0 = time.perf_counter()
            compiled(image)  # compiles here, outside the timing
            print(f"torch.compile warm-up: {time.perf_counter() - t0:.0f} s", flush=True)
            routes["eager+compile"] = lambda: compiled(image)["instances"]
            precisions["eager+compile"] = "fp32 (torch.compile inductor, backbone)"
        except Exception as e:  # inductor needs a C++ compiler; report why, run the rest
            skipped["eager+compile"] = f"torch.compile failed: {str(e).strip().splitlines()[0]}"
    onnx_path = os.path.join(work_dir, "model.onnx")
    t0 = time.perf_counter()
    export_dynamic_onnx(eager.model, tensor, onnx_path, 17, cfg=cfg)
    print(f"ONNX export: {time.perf_counter() - t0:.0f} s", flush=True)
    files = {"onnxruntime": (onnx_path, "fp32"), "openvino": (onnx_path, "fp32")}
    if not args.no_int8:
        int8_path = os.path.join(work_dir, "model_int8.onnx")
        t0 = time.perf_counter()
        quantize_int8(onnx_path, int8_path, "se_synthetic_train", args.calibration_images)
        print(f"int8 calibration + quantization: {time.perf_counter() - t0:.0f} s", flush=True)
        files["onnxruntime-int8"] = (int8_path, "fp32")
        files["openvino-int8"] = (int8_path, "fp32")
    else:
        skipped["int8"] = "--no-int8"
    import openvino

    if "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        files["openvino-bf16"] = (onnx_path, "bf16")
    else:
        skipped["openvino-bf16"] = (
            f"this CPU ({cpu_name()}: {vector_extensions()}) has no bf16 units"
        )
    for name, (path, precision) in files.items():
        backend = name.split("-")[0]
        predictor = load(path, backend, precision, threads=threads)
        routes[name] = lambda p=predictor: p(image)
        precisions[name] = f"{predictor.precision} ({backend})"
        runners[name] = (path, precision, threads)
    return routes, precisions, skipped, flops, runners


def _shares(seconds: Dict[str, float], top: int) -> List[List]:
    total = sum(seconds.values()) or 1.0
    ranked = sorted(seconds.items(), key=lambda kv: -kv[1])
    rows = [[name, 100.0 * t / total] for name, t in ranked[:top]]
    rows.append(["(rest)", 100.0 * sum(t for _, t in ranked[top:]) / total])
    return rows


def _profile_eager(model, tensor: torch.Tensor) -> Dict[str, float]:
    """Self CPU time per ATen operator of one ``model([{"image"}])`` (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        model([{"image": tensor}])
    return {e.key: e.self_cpu_time_total / 1e6 for e in prof.key_averages()}


def _profile_onnxruntime(path: str, threads: int, tensor: np.ndarray, tmp: str):
    """Time per ONNX operator type of one run (ONNX Runtime's profiler, ``Node`` events)."""
    import json

    from se_detectron.deploy.runtimes import OnnxRuntimeRuntime

    runtime = OnnxRuntimeRuntime(path, threads, profile_prefix=os.path.join(tmp, "ort_profile"))
    runtime(tensor)
    with open(runtime.session.end_profiling()) as f:
        events = json.load(f)
    seconds: Dict[str, float] = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event.get("args", {}).get("op_name", "?")
            seconds[op] = seconds.get(op, 0.0) + event["dur"] / 1e6
    return seconds


def _profile_openvino(path: str, precision: str, threads: int, tensor: np.ndarray):
    """Time per OpenVINO node type and kernel (``PERF_COUNT``) of one inference request."""
    from se_detectron.deploy.runtimes import OpenVINORuntime

    runtime = OpenVINORuntime(path, precision, threads, perf_count=True)
    runtime(tensor)
    runtime(tensor)  # the second run: shapes seen, kernels chosen
    seconds: Dict[str, float] = {}
    for info in runtime.request.get_profiling_info():
        key = f"{info.node_type} [{info.exec_type}]"
        seconds[key] = seconds.get(key, 0.0) + info.real_time.total_seconds()
    return seconds


def profile_routes(runners: Dict, image: np.ndarray, top: int, tmp: str) -> Dict[str, List]:
    """Where each route's network time goes: ``name -> [[operator type, % of time], ...]``.

    Each route's own profiler, one image: torch.profiler's self CPU time per ATen operator
    (eager), ONNX Runtime's kernel time per ONNX operator, OpenVINO's ``PERF_COUNT`` real time
    per node type and kernel (its kernel name says the ISA and precision, e.g.
    ``jit_avx2_FP32``, ``jit_avx2_I8`` or ``ref``). The resize and postprocessing outside the
    network are not in these profiles.
    """
    height, width = image.shape[:2]
    tensor = image.astype("float32").transpose(2, 0, 1).copy()
    profiles = {}
    for name, runner in runners.items():
        if name == "eager":
            seconds = _profile_eager(runner, torch.as_tensor(tensor))
        else:
            path, precision, threads = runner
            if name.startswith("onnxruntime"):
                seconds = _profile_onnxruntime(path, threads, tensor, tmp)
            else:
                seconds = _profile_openvino(path, precision, threads, tensor)
        profiles[name] = {"seconds": sum(seconds.values()), "top": _shares(seconds, top)}
        print(f"profiled {name} ({height}x{width})", flush=True)
    return profiles


def cli(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.size:
        args.height = args.width = args.size
    threads = args.threads or (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    )
    torch.set_num_threads(threads)
    torch.set_float32_matmul_precision("highest")  # fp32 means fp32 (no TF32/bf16 matmuls)
    image = np.random.default_rng(0).integers(0, 256, (args.height, args.width, 3), np.uint8)
    peak = peak_fp32_flops(threads)
    print(
        f"{cpu_name()} ({vector_extensions()}), {threads} threads; peak assumption: "
        f"{peak['assumption']}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        work_dir = args.work_dir or tmp
        os.makedirs(work_dir, exist_ok=True)
        routes, precisions, skipped, flops, runners = build_routes(args, image, work_dir, threads)
        reference = routes["eager"]()
        stats = run_interleaved(
            routes, torch.device("cpu"), rounds=args.rounds, warmup=args.warmup,
            progress=lambda msg: print(msg, flush=True),
        )  # fmt: skip
        outputs = {name: fn() for name, fn in routes.items()}
        profiles = profile_routes(runners, image, args.top, work_dir) if args.profile else {}
    base = stats["eager"].median
    rows = []
    for name, st in stats.items():
        out = outputs[name]
        same = len(out) == len(reference)
        diff = (
            float((out.pred_boxes.tensor - reference.pred_boxes.tensor).abs().max())
            if same and len(out)
            else None
        )
        rows.append(
            {
                "route": name,
                "precision": precisions[name],
                "median_s": st.median,
                "min_s": min(st.times),
                "max_s": max(st.times),
                "speedup_vs_eager": base / st.median,
                "peak_fraction": None
                if peak["flops"] is None
                else flops / st.median / peak["flops"],
                "detections": len(out),
                "same_detection_count": same,
                "max_box_diff_px": diff,
            }
        )
    report = {
        "command": " ".join(["python", "tools/benchmark_deploy.py", *(argv or sys.argv[1:])]),
        "cpu": cpu_name(),
        "vector_extensions": vector_extensions(),
        "threads": threads,
        "image": [args.height, args.width],
        "rounds": args.rounds,
        "model": CONFIG + (f" + {args.weights}" if args.weights else " (random weights, seed 0)"),
        "model_gflops": flops / 1e9,
        "peak": peak,
        "skipped": skipped,
        "routes": rows,
        "profiles": profiles,
    }
    print(format_table(report), flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    atomic_write_json(args.output, report, indent=2)
    print(f"wrote {args.output}")
    return 0


def format_table(report: Dict) -> str:
    """The report as a Markdown table (with the CPU, its vector extensions, the peak assumption)."""
    peak = report["peak"]
    lines = [
        f"SE-R50-FPN Faster R-CNN, {report['image'][0]}x{report['image'][1]}, "
        f"{report['model_gflops']:.0f} GFLOPs; {report['cpu']} ({report['vector_extensions']}), "
        f"{report['threads']} threads; fp32 peak {peak['assumption']}"
        + (f" = {peak['flops'] / 1e9:.0f} GFLOP/s" if peak["flops"] else ""),
        "",
        "| route | precision | median s | speed-up vs eager | % of fp32 peak | boxes vs eager |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["routes"]:
        boxes = (
            f"{r['detections']} det, max diff {r['max_box_diff_px']:.2g} px"
            if r["max_box_diff_px"] is not None
            else f"{r['detections']} det"
            + ("" if r["same_detection_count"] else " (count differs)")
        )
        frac = "-" if r["peak_fraction"] is None else f"{100 * r['peak_fraction']:.1f}"
        lines.append(
            f"| {r['route']} | {r['precision']} | {r['median_s']:.3f} | "
            f"{r['speedup_vs_eager']:.2f}x | {frac} | {boxes} |"
        )
    for name, why in report["skipped"].items():
        lines.append(f"\n{name}: skipped, {why}")
    for name, prof in report.get("profiles", {}).items():
        lines.append(f"\nwhere {name}'s network time goes ({prof['seconds']:.2f} s profiled):")
        lines.append(", ".join(f"{op} {share:.1f}%" for op, share in prof["top"]))
    return "\n".join(lines)
