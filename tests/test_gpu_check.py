"""make gpu-check's driver, dry-run on the CPU (the real run needs a GPU)."""

import json
import os
import shlex
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

from benchmarks import gpu_check
from se_detectron.pretrain import get_args_parser

ROOT = Path(__file__).resolve().parent.parent


def test_without_cuda_is_a_clear_error(capsys):
    if torch.cuda.is_available():
        return
    assert gpu_check.cli(["--output-dir", "unused"]) == 2
    err = capsys.readouterr().err
    assert "needs a CUDA device" in err and len(err.strip().splitlines()) == 1
    if torch.version.cuda:  # a CUDA build without a usable GPU: the build and the driver named
        assert f"built for CUDA {torch.version.cuda} but cannot use the GPU" in err
        assert "driver" in err


def test_cuda_build_and_driver_mismatch_is_one_line(monkeypatch):
    """torch's own initialisation warning (driver too old) is carried into the line."""

    def too_old():
        warnings.warn(
            "CUDA initialization: The NVIDIA driver on your system is too old (found version "
            "12040). Please update your GPU driver.\nmore text",
            UserWarning,
            stacklevel=1,
        )
        return False

    monkeypatch.setattr(gpu_check.torch.cuda, "is_available", too_old)
    monkeypatch.setattr(gpu_check.torch.version, "cuda", "13.0")
    monkeypatch.setattr(gpu_check, "_nvidia_driver", lambda: "550.54")
    line = gpu_check.cuda_problem()
    assert "\n" not in line
    assert "built for CUDA 13.0" in line and "NVIDIA driver 550.54" in line
    assert "driver on your system is too old (found version 12040)" in line
    monkeypatch.setattr(gpu_check.torch.version, "cuda", None)
    assert "CPU-only build" in gpu_check.cuda_problem()
    monkeypatch.setattr(gpu_check.torch.cuda, "is_available", lambda: True)
    assert gpu_check.cuda_problem() is None


def _fake_steps(monkeypatch, commands):
    """Replace the steps' commands (name -> python source) with tiny python programs."""
    monkeypatch.setattr(
        gpu_check,
        "_commands",
        lambda args, out: {
            n: [sys.executable, "-c", commands[n].format(out=out)] for n in commands
        },
    )


def _gone(pid, wait=10.0):
    """True once ``pid`` has exited (a zombie waiting for its reaper counts as gone)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state == "Z":
            return True
        time.sleep(0.1)
    return False


# a step that starts a grandchild (as a data-loader worker would), records its pid and hangs
HANGING = (
    "import subprocess, sys, time; "
    "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
    "open(r'{out}/grandchild.pid', 'w').write(str(p.pid)); time.sleep(120)"
)


def test_timed_out_step_leaves_no_process_behind(tmp_path):
    out = tmp_path
    command = [sys.executable, "-c", HANGING.format(out=out)]
    start = time.monotonic()
    result = gpu_check.run_step(command, out / "hang.log", timeout=3, env=dict(os.environ))
    assert result["status"] == "timed out after 3 s"
    assert time.monotonic() - start < 3 + gpu_check.KILL_GRACE + 5
    assert _gone(int((out / "grandchild.pid").read_text()))


def test_order_per_step_reports_and_a_killed_step(tmp_path, monkeypatch, capsys):
    """The new order; report.json rewritten after each step; the timed-out demo is killed with
    its children and the benchmark still runs after it."""
    assert gpu_check.STEPS == ("tests", "demo", "benchmark")
    _fake_steps(
        monkeypatch,
        {
            "tests": "print('tests ran')",
            # the demo step starts after the tests step: report.json already has its outcome
            "demo": "import shutil; shutil.copy(r'{out}/report.json', r'{out}/seen_by_demo.json');"
            + HANGING,
            "benchmark": "import shutil; "
            "shutil.copy(r'{out}/report.json', r'{out}/seen_by_benchmark.json')",
        },
    )
    monkeypatch.setitem(gpu_check.STEP_LIMITS, "demo", 3.0)
    out = tmp_path / "check"
    assert gpu_check.cli(["--device", "cpu", "--output-dir", str(out)]) == 1
    printed = capsys.readouterr().out
    positions = [printed.index(f"[gpu-check] {name} (at most") for name in gpu_check.STEPS]
    assert positions == sorted(positions)

    seen_by_demo = json.loads((out / "seen_by_demo.json").read_text())["steps"]
    assert seen_by_demo["tests"]["status"] == "ok"
    assert seen_by_demo["demo"]["status"] == "running"
    assert seen_by_demo["benchmark"]["status"] == "pending"
    seen_by_benchmark = json.loads((out / "seen_by_benchmark.json").read_text())["steps"]
    assert seen_by_benchmark["demo"]["status"] == "timed out after 3 s"
    assert _gone(int((out / "grandchild.pid").read_text()))

    report = json.loads((out / "report.json").read_text())
    assert list(report["steps"]) == list(gpu_check.STEPS)
    assert [s["status"] for s in report["steps"].values()] == [
        "ok",
        "timed out after 3 s",
        "ok",
    ]
    assert (out / "tests.log").read_text() == "tests ran\n"
    assert "| demo | timed out after 3 s |" in (out / "report.md").read_text()


def test_demo_gets_the_short_recipe_and_user_arguments_win(tmp_path):
    args = gpu_check.build_parser().parse_args(
        ["--demo-args", "--num-pictures 2 SOLVER.MAX_ITER 50"]
    )
    demo = gpu_check._commands(args, tmp_path)["demo"]
    tail = demo[demo.index("run_demo") + 1 :]
    recipe = tail[tail.index("--pretrain-args") + 1]
    assert recipe == gpu_check.DEMO_PRETRAIN_ARGS
    # options before the overrides (run_demo's KEY VALUE list is its last argument); the
    # user's MAX_ITER after the recipe's, so it wins
    assert tail[-6:] == [*gpu_check.DEMO_FINETUNE_OPTS, "SOLVER.MAX_ITER", "50"]
    assert "--num-pictures" in tail[:-6]
    full = gpu_check.build_parser().parse_args(["--demo-recipe", "full"])
    assert "--pretrain-args" not in gpu_check._commands(full, tmp_path)["demo"]


def test_short_demo_recipe_is_make_demos_with_fewer_epochs():
    from se_detectron.demo import DEMO_PRETRAIN_ARGS

    parser = get_args_parser()
    short = vars(parser.parse_args(shlex.split(gpu_check.DEMO_PRETRAIN_ARGS)))
    full = vars(parser.parse_args(shlex.split(" ".join(DEMO_PRETRAIN_ARGS))))
    differ = {k for k in full if short[k] != full[k]}
    assert differ == {"epochs", "lr_warmup_epochs", "workers"}
    assert short["epochs"] < full["epochs"] and short["lr_warmup_epochs"] < short["epochs"]
    assert dict(zip(*[iter(gpu_check.DEMO_FINETUNE_OPTS)] * 2))["SOLVER.MAX_ITER"] == "600"


def test_documented_command_on_a_bare_checkout(tmp_path):
    """README: `python tools/gpu_check.py ...` from any directory, no PYTHONPATH, no make setup;
    an interpreter without the requirements gets one line listing what it lacks."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = tmp_path / "check"
    argv = ["--device", "cpu", "--output-dir", str(out), "--skip", *gpu_check.STEPS]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gpu_check.py"), *argv],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["command"].startswith("python tools/gpu_check.py --device cpu")
    bare = subprocess.run(
        [sys.executable, "-S", str(ROOT / "tools" / "gpu_check.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bare.returncode == 2
    assert bare.stderr.count("\n") == 1 and "lacks torch, torchvision, detectron2" in bare.stderr


def test_dry_run_writes_report(tmp_path):
    """The benchmark step for real (tiny), tests and demo skipped: report.json and report.md."""
    tiny = "--cases trunk,classifier --height 64 --width 96 --batch-sizes 2 --layouts nchw "
    tiny += "--classifier-size 32 --rounds 1 --min-rounds 1 --warmup 0 --no-memory"
    out = tmp_path / "check"
    argv = ["--device", "cpu", "--output-dir", str(out), "--skip", "tests", "demo"]
    assert gpu_check.cli([*argv, f"--benchmark-args={tiny}"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["steps"]["benchmark"]["status"] == "ok"
    assert report["steps"]["demo"]["status"] == "skipped (--skip)"
    cases = {row["case"] for row in report["benchmark"]}
    assert cases == {"trunk", "trunk_bf16", "classifier_b2_nchw", "classifier_b2_nchw_bf16"}
    classifier = next(r for r in report["benchmark"] if r["case"] == "classifier_b2_nchw")
    assert classifier["ours_vs_timm"] > 0 and classifier["se_paired_ratio"] > 0
    markdown = (out / "report.md").read_text()
    assert "| classifier_b2_nchw_bf16 |" in markdown and "| benchmark | ok |" in markdown


def test_failed_step_and_junit_counts(tmp_path):
    xml = tmp_path / "tests.xml"
    xml.write_text(
        '<testsuites><testsuite name="pytest" tests="9" failures="1" errors="0" skipped="2">'
        "</testsuite></testsuites>"
    )
    assert gpu_check.test_counts(xml) == {"tests": 9, "failures": 1, "errors": 0, "skipped": 2}
    assert gpu_check.test_counts(tmp_path / "missing.xml") is None
    report = {
        "command": "make gpu-check",
        "environment": {"device_name": "GPU", "torch": "2", "cuda": "13"},
        "started": "now",
        "total_seconds": 5.0,
        "steps": {"tests": {"status": "failed (exit 1)", "seconds": 3}},
        "tests": gpu_check.test_counts(xml),
    }
    markdown = gpu_check.format_markdown(report)
    assert "| tests | failed (exit 1) | 3 |" in markdown
    assert "CUDA tests: 6 passed, 1 failed, 0 errors, 2 skipped" in markdown
