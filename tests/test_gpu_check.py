"""make gpu-check's driver, dry-run on the CPU (the real run needs a GPU)."""

import json

import torch

from se_detectron.benchmark import gpu_check


def test_without_cuda_is_a_clear_error(capsys):
    if torch.cuda.is_available():
        return
    assert gpu_check.cli(["--output-dir", "unused"]) == 2
    assert "needs a CUDA device" in capsys.readouterr().err


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
