"""``make gpu-check``: the CUDA tests, a short GPU benchmark and the demo, in one report.

Three steps, each a subprocess (so a crash or a CUDA out-of-memory in one does not take the
others down, and each starts with an empty GPU), run within one time budget (8 minutes by
default, the issue's limit for one GPU):

1. ``pytest -m cuda tests/test_cuda.py`` (from a checkout; skipped from an installed wheel);
2. ``python -m se_detectron benchmark --device cuda``: trunk, Faster R-CNN inference and
   training at 800x1333, the classifier at batch 1/32/256, fp32 and autocast bf16, NCHW and
   channels_last, ours vs timm's seresnet50;
3. ``python -m se_detectron run_demo --device cuda`` (pretrain, convert, fine-tune, evaluate).

``OUTPUT_DIR/report.json`` and ``OUTPUT_DIR/report.md`` hold each step's outcome and time, the
test counts, the benchmark's paired SE / plain ratios against their targets and the demo's AP;
the steps' logs and files stay next to them.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Optional

import torch

from ..utils.atomic import atomic_write, atomic_write_json
from .report import environment

__all__ = ["STEPS", "benchmark_rows", "cli", "format_markdown", "test_counts"]

STEPS = ("tests", "benchmark", "demo")
REPO_ROOT = Path(__file__).resolve().parents[2]


def _benchmark_argv(device: str, seconds: float, output: str) -> List[str]:
    return [
        "--device", device,
        "--cases", "trunk,rcnn_inference,rcnn_training,classifier",
        "--batch-sizes", "1,32,256",
        "--layouts", "nchw,channels_last",
        "--precisions", "fp32,bf16",
        "--seconds", str(seconds), "--min-rounds", "5", "--warmup", "3",
        "--output", output,
    ]  # fmt: skip


def _commands(args, out: Path) -> Dict[str, Optional[List[str]]]:
    python = [sys.executable]
    tests = REPO_ROOT / "tests" / "test_cuda.py"
    return {
        "tests": python
        + ["-m", "pytest", "-q", "-m", "cuda", str(tests), f"--junitxml={out / 'tests.xml'}"]
        if tests.is_file()
        else None,
        "benchmark": python
        + ["-m", "se_detectron", "benchmark"]
        + _benchmark_argv(args.device, args.benchmark_seconds, str(out / "benchmark.json"))
        + args.benchmark_args,
        "demo": python
        + ["-m", "se_detectron", "run_demo", "--output-dir", str(out / "demo")]
        + ["--device", args.device, *args.demo_args],
    }


def _run(command: List[str], log: Path, timeout: float, env: Dict[str, str]) -> Dict:
    """Run one step, its output going to ``log``; returns its outcome."""
    start = time.monotonic()
    with open(log, "w") as f:
        try:
            proc = subprocess.run(
                command, stdout=f, stderr=subprocess.STDOUT, timeout=timeout, env=env, check=False
            )
            status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
        except subprocess.TimeoutExpired:
            status = f"timed out after {timeout:.0f} s"
    return {"status": status, "seconds": round(time.monotonic() - start, 1), "log": str(log)}


def test_counts(junit_xml: Path) -> Optional[Dict[str, int]]:
    """``{"tests", "failures", "errors", "skipped"}`` of a pytest ``--junitxml`` file."""
    if not junit_xml.is_file():
        return None
    suite = ET.parse(junit_xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    return {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}


def benchmark_rows(benchmark_json: Path) -> List[Dict]:
    """One row per benchmark case: paired SE / plain ratio, target, ours / timm."""
    if not benchmark_json.is_file():
        return []
    with open(benchmark_json) as f:
        cases = json.load(f)["cases"]
    rows = []
    for name, case in cases.items():
        vs_timm = case["paired_ratios"].get("SE-ResNet-50 / timm seresnet50")
        se = case["variants"][case["se_variant"]]
        rows.append(
            {
                "case": name,
                "se_ms": se["median_ms"],
                "se_paired_ratio": case["se_paired_ratio"],
                "target": case["target"],
                "meets_target": case["meets_target"],
                "ours_vs_timm": vs_timm,
                "peak_memory_mb": se.get("peak_memory_mb"),
            }
        )
    return rows


def _demo_summary(path: Path) -> Optional[Dict]:
    if not path.is_file():
        return None
    with open(path) as f:
        summary = json.load(f)
    return {k: summary[k] for k in ("bbox", "pretrain_val_top1", "total_minutes", "device")}


def _number(value, fmt="{:.3f}") -> str:
    return "-" if value is None else fmt.format(value)


def format_markdown(report: Dict) -> str:
    """The report as markdown (the README's GPU table is pasted from it)."""
    env = report["environment"]
    lines = [
        "# gpu-check",
        "",
        f"`{report['command']}` on {env.get('device_name')} (torch {env.get('torch')}, "
        f"CUDA {env.get('cuda')}), {report['started']}, {report['total_seconds']:.0f} s",
        "",
        "| step | status | seconds |",
        "|---|---|---|",
    ]
    lines += [f"| {n} | {s['status']} | {s['seconds']} |" for n, s in report["steps"].items()]
    counts = report.get("tests")
    if counts:
        passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
        lines += ["", f"CUDA tests: {passed} passed, {counts['failures']} failed, "
                  f"{counts['errors']} errors, {counts['skipped']} skipped"]  # fmt: skip
    if report.get("benchmark"):
        lines += [
            "",
            "| case | SE median ms | SE / plain (paired) | target | met | ours / timm seresnet50 |",
            "|---|---|---|---|---|---|",
        ]
        for row in report["benchmark"]:
            met = {None: "-", True: "yes", False: "**no**"}[row["meets_target"]]
            lines.append(
                f"| {row['case']} | {row['se_ms']:.2f} | {row['se_paired_ratio']:.3f} | "
                f"{_number(row['target'], '<= {:.2f}')} | {met} | {_number(row['ours_vs_timm'])} |"
            )
    demo = report.get("demo")
    if demo:
        box = demo["bbox"]
        lines += [
            "",
            f"Demo on {demo['device']}: box AP {box['AP']:.1f} (AP50 {box['AP50']:.1f}), "
            f"pretraining top-1 {demo['pretrain_val_top1']:.1f}%, {demo['total_minutes']:.1f} min",
        ]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default="output/gpu-check", help="report and logs")
    parser.add_argument("--device", default="cuda", help="cuda (cpu: a dry run of the script)")
    parser.add_argument(
        "--time-limit", type=float, default=480, help="seconds for all steps (default 8 min)"
    )
    parser.add_argument(
        "--benchmark-seconds", type=float, default=3.0, help="timed seconds per benchmark case"
    )
    parser.add_argument("--skip", nargs="*", default=[], choices=STEPS, help="steps to leave out")
    parser.add_argument(
        "--benchmark-args",
        type=shlex.split,
        default=[],
        help='extra tools/benchmark.py arguments, one string: --benchmark-args="--seconds 10"',
    )
    parser.add_argument(
        "--demo-args", type=shlex.split, default=[], help="extra tools/run_demo.py arguments"
    )
    return parser


def cli(argv: Optional[List[str]] = None) -> int:
    """Run the steps and write the report; exit 0 only if every step that ran succeeded."""
    args = build_parser().parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: gpu-check needs a CUDA device (torch.cuda.is_available() is False)",
              file=sys.stderr)  # fmt: skip
        return 2
    out = Path(args.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    if args.device != "cuda":
        env["SE_TEST_DEVICE"] = args.device
    report = {
        "command": " ".join(["make gpu-check" if argv is None else "gpu_check", *(argv or [])]),
        "environment": environment(torch.device(args.device)),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "steps": {},
    }
    start = time.monotonic()
    for name, command in _commands(args, out).items():
        left = args.time_limit - (time.monotonic() - start)
        if name in args.skip or command is None or left < 10:
            reason = "--skip" if name in args.skip else "no tests/ (installed package)"
            reason = reason if left >= 10 else "no time left"
            report["steps"][name] = {"status": f"skipped ({reason})", "seconds": 0}
            continue
        print(f"[gpu-check] {name}: {' '.join(command)}", flush=True)
        report["steps"][name] = _run(command, out / f"{name}.log", left, env)
        print(f"[gpu-check] {name}: {report['steps'][name]['status']}", flush=True)
    report["total_seconds"] = time.monotonic() - start
    report["tests"] = test_counts(out / "tests.xml")
    report["benchmark"] = benchmark_rows(out / "benchmark.json")
    report["demo"] = _demo_summary(out / "demo" / "summary.json")
    atomic_write_json(str(out / "report.json"), report, indent=2)
    markdown = format_markdown(report)
    atomic_write(str(out / "report.md"), lambda f: f.write(markdown), binary=False)
    print(markdown + f"[gpu-check] wrote {out / 'report.json'} and {out / 'report.md'}")
    ran = [s for s in report["steps"].values() if not s["status"].startswith("skipped")]
    return 0 if all(s["status"] == "ok" for s in ran) else 1
