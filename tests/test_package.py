import subprocess
import sys
from pathlib import Path

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
