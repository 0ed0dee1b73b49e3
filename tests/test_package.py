import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_clear_error_without_detectron2():
    code = "import sys; sys.modules['detectron2'] = None; import se_detectron"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "se_detectron needs Detectron2" in last and "make setup" in last


def test_get_config_file_lists_available(tmp_path):
    import pytest

    from se_detectron import get_config_file

    assert get_config_file("Base-SE-RCNN-FPN.yaml").endswith("configs/Base-SE-RCNN-FPN.yaml")
    with pytest.raises(FileNotFoundError, match="COCO-Detection/faster_rcnn_SE_R_50_FPN_1x.yaml"):
        get_config_file("COCO-Detection/nope.yaml")


def test_model_zoo_get(tmp_path):
    import pytest
    import torch

    from se_detectron import model_zoo

    model = model_zoo.get("Synthetic/faster_rcnn_SE_R_18_FPN_synthetic.yaml", device="cpu")
    assert not model.training and model.roi_heads.num_classes == 5
    assert "SE" in type(model.backbone.bottom_up.res5[0]).__name__
    with torch.no_grad():
        (out,) = model([{"image": torch.rand(3, 64, 64) * 255}])
    assert out["instances"].image_size == (64, 64)
    with pytest.raises(ValueError, match="trained=True"):
        model_zoo.get("COCO-Detection/faster_rcnn_SE_R_50_FPN_1x.yaml", trained=True)
    # the COCO configs load the converted ImageNet trunk, which is not here: a clear error
    with pytest.raises(FileNotFoundError, match="pretrained/SE-R-50.pkl"):
        model_zoo.get("COCO-Detection/faster_rcnn_SE_R_50_FPN_1x.yaml", device="cpu")


def test_python_m_se_detectron_dispatches():
    from se_detectron.__main__ import TOOLS

    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "se_detectron", *a], cwd=ROOT, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    proc = run("--help")
    assert proc.returncode == 0 and all(name in proc.stdout for name in TOOLS)
    proc = run("convert_pretrained", "--help")
    assert proc.returncode == 0 and "--write-config" in proc.stdout
    proc = run("train_nett")
    assert proc.returncode == 2 and "unknown tool 'train_nett'" in proc.stderr


def test_old_tool_names_warn_or_name_the_new_place(capsys):
    """``demo`` runs the predictor with one warning naming ``predict``; the benchmark and
    gpu-check, which are not in the installed package, answer with one error line naming the
    checkout's tools (exit 2)."""
    from se_detectron.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--help"])
    captured = capsys.readouterr()
    assert exit_info.value.code == 0 and "--confidence-threshold" in captured.out
    assert captured.err.strip() == (
        "warning: `python -m se_detectron demo` is now `python -m se_detectron predict`"
    )
    for name, script in (("benchmark", "tools/benchmark.py"), ("gpu_check", "tools/gpu_check.py")):
        assert main([name, "--help"]) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.startswith(f"error: {name} ") and script in line


def test_tools_demo_py_runs_tools_predict_py(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "demo.py"), "--help"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.returncode == 0 and "--confidence-threshold" in proc.stdout
    assert proc.stderr.strip().splitlines()[0] == (
        "warning: tools/demo.py is now tools/predict.py; run that instead"
    )


def test_checkpoint_names_of_conversion_warn_once_naming_convert():
    import warnings

    import se_detectron.checkpoint as checkpoint
    import se_detectron.convert as convert
    import se_detectron.utils.run_dir as run_dir

    checkpoint._warned.discard("convert_checkpoint")
    with pytest.warns(DeprecationWarning, match=r"se_detectron\.convert\.convert_checkpoint"):
        assert checkpoint.convert_checkpoint is convert.convert_checkpoint
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from se_detectron.checkpoint import convert_checkpoint  # a second time: no warning
    assert convert_checkpoint is convert.convert_checkpoint
    checkpoint._warned.discard("prepare_run_dir")
    with pytest.warns(DeprecationWarning, match=r"se_detectron\.utils\.run_dir"):
        assert checkpoint.prepare_run_dir is run_dir.prepare_run_dir
    with pytest.raises(AttributeError, match="no_such_name"):
        checkpoint.no_such_name  # noqa: B018


def test_config_and_model_zoo_list_configs_are_one():
    from se_detectron import config, model_zoo

    assert model_zoo.list_configs is config.list_configs
    names = config.list_configs()
    assert set(names) == set(config.list_configs(".yaml")) | set(config.list_configs(".py"))
    assert "Synthetic/mask_rcnn_SE_R_18_FPN_synthetic.py" in names


def test_pip_check_lists_only_known_detectron2_metadata():
    """The environment's only dependency conflicts are the known ones of the sal-detectron2 wheel.

    Its 2024 metadata asks for numpy<2 and black, and its tag is CPython 3.10; Detectron2's Python
    code runs on the pinned numpy 2 (this suite) and black is its formatter
    (scripts/install_detectron2.sh). Anything else that `pip check` reports is a real conflict.
    """
    import importlib.metadata as metadata

    import pytest

    try:
        metadata.distribution("sal-detectron2")
    except metadata.PackageNotFoundError:
        pytest.skip("Detectron2 was not installed from the sal-detectron2 wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120
    )
    known = (
        "sal-detectron2 0.7.2 requires black, which is not installed.",
        "sal-detectron2 0.7.2 has requirement numpy<2, but you have numpy ",
        "sal-detectron2 0.7.2 is not supported on this platform",
    )
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    unexpected = [line for line in lines if not line.startswith(known)]
    assert not unexpected, f"pip check reports conflicts beyond the known wheel metadata: {lines}"
