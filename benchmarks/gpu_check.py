"""``make gpu-check``: the CUDA tests, a short demo and a GPU benchmark, in one report.

Three steps, each a subprocess in its own process group (so a crash or a CUDA out-of-memory in
one does not take the others down, each starts with an empty GPU, and a step that runs out of
time is killed with every process it started), within one time budget (8 minutes by default).
They run in the order that gives the most information per minute:

1. ``tests`` (at most :data:`STEP_LIMITS` s): ``pytest -m cuda tests/test_cuda.py``: is every
   CUDA path correct?
2. ``demo`` (at most :data:`STEP_LIMITS` s): ``python -m se_detectron run_demo --device cuda``
   with gpu-check's short recipe (:data:`DEMO_PRETRAIN_ARGS`, :data:`DEMO_FINETUNE_OPTS`: 4
   pretraining epochs instead of 16, 600 fine-tuning iterations instead of 1600): does the
   whole path (pretrain, convert, fine-tune, evaluate) train on the GPU, and to what AP?
   ``--demo-recipe full`` runs ``make demo``'s own recipe instead;
3. ``benchmark`` (the rest of the budget): ``python tools/benchmark.py --device cuda``,
   cases in :data:`BENCHMARK_CASES` order (the SE backward's ``_channel_dot`` micro-case, Faster
   R-CNN training and inference at 800x1333, the classifier at batch 256/32/1, the trunk), fp32
   and autocast bf16, NCHW and channels_last, ours vs timm's seresnet50. It writes its JSON after
   every case, so a benchmark stopped by the budget still reports the cases it finished.

``OUTPUT_DIR/report.json`` and ``OUTPUT_DIR/report.md`` are rewritten after every step (a run
killed from outside keeps what it measured): each step's outcome and time, the test counts, the
benchmark's paired SE / plain ratios against their targets, the demo's recipe and AP. The steps'
logs and files stay next to them. Before any step, a CUDA build of torch that cannot use the GPU
(driver too old, no driver) is reported in one line naming both.
"""

import argparse
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Optional

import torch

from se_detectron.demo import DEMO_PRETRAIN_ARGS as DEMO_RECIPE
from se_detectron.utils.atomic import atomic_write, atomic_write_json

from .report import environment

__all__ = [
    "BENCHMARK_CASES",
    "DEMO_FINETUNE_OPTS",
    "DEMO_PRETRAIN_ARGS",
    "STEPS",
    "STEP_LIMITS",
    "benchmark_rows",
    "cli",
    "cuda_problem",
    "format_markdown",
    "run_step",
    "test_counts",
]

STEPS = ("tests", "demo", "benchmark")
#: Seconds a step may take at most (None for what is left of the budget), estimated on an H100 as
#: tests 2-3 min, the short demo 1.5-2 min, the benchmark 2-3 min.
STEP_LIMITS = {"tests": 210.0, "demo": 180.0, "benchmark": None}
#: Seconds between SIGTERM and SIGKILL to the process group of a step that ran out of time.
KILL_GRACE = 5.0
#: The benchmark step's cases, in the order they run.
BENCHMARK_CASES = "channel_dot,rcnn_training,rcnn_inference,classifier,trunk"
#: gpu-check's pretraining recipe for the demo, make demo's (se_detectron/demo.py) with 4 epochs
#: (1 of warmup) instead of 16 (2) and 4 loader workers (the GPU machine has 16 cores); the
#: appended flags override the demo's (argparse keeps the last value).
DEMO_PRETRAIN_ARGS = " ".join(DEMO_RECIPE) + " --epochs 4 --lr-warmup-epochs 1 --workers 4"
#: gpu-check's fine-tuning overrides for the demo, 600 iterations instead of 1600.
DEMO_FINETUNE_OPTS = ("SOLVER.MAX_ITER", "600", "DATALOADER.NUM_WORKERS", "4")
REPO_ROOT = Path(__file__).resolve().parents[1]


def _benchmark_argv(device: str, seconds: float, output: str) -> List[str]:
    return [
        "--device", device,
        "--cases", BENCHMARK_CASES,
        "--batch-sizes", "256,32,1",
        "--layouts", "nchw,channels_last",
        "--precisions", "fp32,bf16",
        "--seconds", str(seconds), "--min-rounds", "5", "--warmup", "3",
        "--output", output,
    ]  # fmt: skip


def _is_config_key(token: str) -> bool:
    """``SOLVER.MAX_ITER``-like: where run_demo's trailing KEY VALUE overrides begin."""
    return "." in token and token.replace(".", "").replace("_", "").isalnum() and token.isupper()


def _demo_argv(args) -> List[str]:
    """run_demo's arguments: the recipe, then ``--demo-args`` (whose options and overrides win)."""
    extra = list(args.demo_args)
    first_key = next((i for i, t in enumerate(extra) if _is_config_key(t)), len(extra))
    options, overrides = extra[:first_key], extra[first_key:]
    if args.demo_recipe == "full":
        return options + overrides
    return ["--pretrain-args", DEMO_PRETRAIN_ARGS, *options, *DEMO_FINETUNE_OPTS, *overrides]


def _commands(args, out: Path) -> Dict[str, Optional[List[str]]]:
    python = [sys.executable]
    tests = REPO_ROOT / "tests" / "test_cuda.py"
    return {
        "tests": python
        + ["-m", "pytest", "-q", "-m", "cuda", str(tests), f"--junitxml={out / 'tests.xml'}"]
        if tests.is_file()
        else None,
        "demo": python
        + ["-m", "se_detectron", "run_demo", "--output-dir", str(out / "demo")]
        + ["--device", args.device, *_demo_argv(args)],
        "benchmark": python
        + [str(REPO_ROOT / "tools" / "benchmark.py")]
        + _benchmark_argv(args.device, args.benchmark_seconds, str(out / "benchmark.json"))
        + args.benchmark_args,
    }


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group of ``proc``, SIGKILL it after :data:`KILL_GRACE` s, reap."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            break  # the group is gone
        if sig == signal.SIGTERM:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=KILL_GRACE)
    proc.wait()


def run_step(command: List[str], log: Path, timeout: float, env: Dict[str, str]) -> Dict:
    """Run one step in its own process group, its output going to ``log``; returns its outcome.

    Whatever happens (exit, timeout, an interrupt of gpu-check itself), every process left in
    the step's group afterwards (data-loader workers, a ``torchrun`` child) is killed.
    """
    start = time.monotonic()
    with open(log, "w") as f:
        proc = subprocess.Popen(
            command, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        try:
            code = proc.wait(timeout=timeout)
            status = "ok" if code == 0 else f"failed (exit {code})"
        except subprocess.TimeoutExpired:
            status = f"timed out after {timeout:.0f} s"
        finally:
            _kill_group(proc)
    return {"status": status, "seconds": round(time.monotonic() - start, 1), "log": str(log)}


def _nvidia_driver() -> Optional[str]:
    try:
        proc = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip().splitlines()[0] if proc.returncode == 0 and proc.stdout else None


def cuda_problem() -> Optional[str]:
    """One line saying why this torch cannot use a GPU here, or None if it can.

    Names torch's CUDA build, the driver (``nvidia-smi``) and torch's own initialisation
    warning, e.g. a driver too old for the CUDA version torch was built for.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
    if available:
        return None
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build: install a CUDA build of torch"
    reason = next(
        (str(w.message).split("\n")[0] for w in caught if "CUDA" in str(w.message)),
        "torch.cuda.is_available() is False",
    )
    driver = _nvidia_driver()
    driver = f"NVIDIA driver {driver}" if driver else "no NVIDIA driver found (nvidia-smi)"
    return (
        f"torch {torch.__version__} is built for CUDA {torch.version.cuda} but cannot use the "
        f"GPU; {driver}; {reason}. The driver must support CUDA {torch.version.cuda}, or "
        "install a torch built for the driver's CUDA version"
    )


def test_counts(junit_xml: Path) -> Optional[Dict[str, int]]:
    """``{"tests", "failures", "errors", "skipped"}`` of a pytest ``--junitxml`` file."""
    if not junit_xml.is_file():
        return None
    try:
        suite = ET.parse(junit_xml).getroot()
    except ET.ParseError:  # written by a run that was killed
        return None
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
    return {k: summary.get(k) for k in ("bbox", "pretrain_val_top1", "total_minutes", "device")}


def _number(value, fmt="{:.3f}") -> str:
    return "-" if value is None else fmt.format(value)


def _demo_lines(report: Dict) -> List[str]:
    recipe = report.get("demo_recipe")
    lines = []
    if recipe:
        lines += ["", f"Demo recipe ({recipe['name']}): pretraining `{recipe['pretrain_args']}`, "
                  f"fine-tuning overrides `{recipe['finetune_opts']}`"]  # fmt: skip
    demo = report.get("demo")
    if demo and demo.get("bbox"):
        box = demo["bbox"]
        lines += [
            "",
            f"Demo on {demo['device']}: box AP {box['AP']:.1f} (AP50 {box['AP50']:.1f}), "
            f"pretraining top-1 {_number(demo['pretrain_val_top1'], '{:.1f}')}%, "
            f"{_number(demo['total_minutes'], '{:.1f}')} min",
        ]
    return lines


def format_markdown(report: Dict) -> str:
    """The report as markdown (the GPU table of docs/notes/benchmarks.md is pasted from it)."""
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
    return "\n".join(lines + _demo_lines(report)) + "\n"


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
        "--demo-recipe",
        choices=("short", "full"),
        default="short",
        help="short: gpu-check's recipe (4 pretraining epochs, 600 fine-tuning iterations); "
        "full: make demo's (16 epochs, 1600 iterations; does not fit the 8 minutes)",
    )
    parser.add_argument(
        "--demo-args",
        type=shlex.split,
        default=[],
        help="extra tools/run_demo.py arguments, one string; they override the recipe's",
    )
    return parser


def _write_report(out: Path, report: Dict, start: float) -> str:
    """Write report.json and report.md from the steps so far and the files they left."""
    report["total_seconds"] = time.monotonic() - start
    report["tests"] = test_counts(out / "tests.xml")
    report["benchmark"] = benchmark_rows(out / "benchmark.json")
    report["demo"] = _demo_summary(out / "demo" / "summary.json")
    atomic_write_json(str(out / "report.json"), report, indent=2)
    markdown = format_markdown(report)
    atomic_write(str(out / "report.md"), lambda f: f.write(markdown), binary=False)
    return markdown


def cli(argv: Optional[List[str]] = None) -> int:
    """Run the steps and write the report; exit 0 only if every step that ran succeeded.

    Exit 2 before any step when ``--device cuda`` cannot be used (the line printed says why:
    see :func:`cuda_problem`).
    """
    args = build_parser().parse_args(argv)
    if args.device.startswith("cuda"):
        problem = cuda_problem()
        if problem:
            print(f"error: gpu-check needs a CUDA device: {problem}", file=sys.stderr)
            return 2
    out = Path(args.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    if args.device != "cuda":
        env["SE_TEST_DEVICE"] = args.device
    commands = _commands(args, out)
    report = {
        "command": " ".join(
            ["python tools/gpu_check.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "environment": environment(torch.device(args.device)),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "demo_recipe": {
            "name": args.demo_recipe,
            "pretrain_args": DEMO_PRETRAIN_ARGS if args.demo_recipe == "short" else "make demo's",
            "finetune_opts": " ".join(DEMO_FINETUNE_OPTS) if args.demo_recipe == "short" else "",
            "demo_args": " ".join(args.demo_args),
        },
        "steps": {name: {"status": "pending", "seconds": 0} for name in STEPS},
    }
    start = time.monotonic()
    _write_report(out, report, start)
    for name, command in commands.items():
        left = args.time_limit - (time.monotonic() - start)
        if name in args.skip or command is None or left < 10:
            reason = "--skip" if name in args.skip else "no tests/ (installed package)"
            reason = reason if left >= 10 else "no time left"
            report["steps"][name] = {"status": f"skipped ({reason})", "seconds": 0}
        else:
            limit = min(left, STEP_LIMITS[name] or left)
            print(f"[gpu-check] {name} (at most {limit:.0f} s): {shlex.join(command)}", flush=True)
            report["steps"][name] = {"status": "running", "seconds": 0}
            _write_report(out, report, start)
            report["steps"][name] = run_step(command, out / f"{name}.log", limit, env)
            print(f"[gpu-check] {name}: {report['steps'][name]['status']}", flush=True)
        markdown = _write_report(out, report, start)
    print(markdown + f"[gpu-check] wrote {out / 'report.json'} and {out / 'report.md'}")
    ran = [s for s in report["steps"].values() if not s["status"].startswith("skipped")]
    return 0 if all(s["status"] == "ok" for s in ran) else 1
