"""The package as users install it: a wheel in a fresh venv, used from outside the checkout.

Builds the wheel with ``pip wheel`` (no build isolation: nothing is downloaded), installs it into
a new venv that sees the same torch/Detectron2 (the test venv's site-packages, appended through a
``.pth`` file, as a system-wide Detectron2 would be), and from a folder outside the repository:
loads every shipped config (yacs and LazyConfig), builds and trains one step through the installed
``se-train-net``, and checks that every tool of ``python -m se_detectron`` is an installed console
script (and that the benchmark harness, which stays in the checkout, is not in the wheel).
"""

import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from se_detectron.__main__ import TOOLS
from se_detectron.model_zoo import list_configs

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow

CHECK = r"""
import json, sys
import se_detectron
from detectron2.config import instantiate
from se_detectron.model_zoo import CONFIG_ROOT, get_config, list_configs
assert "site-packages" in se_detectron.__file__, se_detectron.__file__
loaded = []
for name in list_configs():  # yacs .yaml and LazyConfig .py (their relative imports too)
    cfg = get_config(name)
    loaded.append(name)
model = instantiate(get_config("Synthetic/mask_rcnn_SE_R_18_FPN_synthetic.py").model)
assert type(model.backbone.bottom_up.res5[0]).__name__ == "SEBasicBlock"
print(json.dumps({"file": se_detectron.__file__, "root": str(CONFIG_ROOT), "configs": loaded}))
"""


def _run(cmd, cwd, env, timeout=600):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    env = dict(os.environ, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.pop("PYTHONPATH", None)
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "-w", str(tmp / "dist"), str(ROOT)],
        cwd=tmp, env=env,
    )  # fmt: skip
    (wheel,) = (tmp / "dist").glob("se_detectron-*.whl")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp, env=env)  # pip from ensurepip
    python = venv / "bin" / "python"
    purelib = Path(
        subprocess.check_output(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            text=True,
        ).strip()
    )
    # the same torch / Detectron2 as the test venv, after the new venv's own site-packages
    (purelib / "_test_venv_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # the venv's own pip, so that the console scripts run the venv's python
    _run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)], tmp, env)
    outside = tmp / "work"
    outside.mkdir()
    env = dict(env, DETECTRON2_DATASETS=str(tmp / "datasets"), OMP_NUM_THREADS="1")
    return {"python": python, "bin": venv / "bin", "cwd": outside, "env": env, "wheel": wheel}


def test_wheel_ships_configs_and_loads_them(installed):
    import json

    proc = _run([str(installed["python"]), "-c", CHECK], installed["cwd"], installed["env"])
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not info["file"].startswith(str(ROOT))  # the wheel's copy, not the checkout
    assert info["configs"] == list_configs() and len(info["configs"]) >= 13
    assert "new_baselines/mask_rcnn_SE_R_50_FPN_100ep_LSJ.py" in info["configs"]


def test_every_tool_is_a_console_script(installed):
    setup_py = (ROOT / "setup.py").read_text()
    declared = dict(re.findall(r'"(se-[\w-]+) = (se_detectron[\w.]+:\w+)"', setup_py))
    assert declared == {script: target for target, script, _ in TOOLS.values()}
    for script in declared:
        assert (installed["bin"] / script).is_file(), script
    proc = _run([str(installed["python"]), "-m", "se_detectron", "--help"], installed["cwd"],
                installed["env"])  # fmt: skip
    assert all(name in proc.stdout for name in TOOLS)
    for name in TOOLS:
        assert (ROOT / "tools" / f"{name}.py").is_file(), name
    # the benchmark harness stays in the checkout: the wheel's `benchmark` names where it is
    with zipfile.ZipFile(installed["wheel"]) as wheel:
        assert not [n for n in wheel.namelist() if n.startswith("benchmarks/")]
    proc = subprocess.run(
        [str(installed["python"]), "-m", "se_detectron", "benchmark"], cwd=installed["cwd"],
        env=installed["env"], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2 and "tools/benchmark.py" in proc.stderr.strip().splitlines()[-1]


def test_installed_train_net_runs_a_step(installed):
    out = installed["cwd"] / "run"
    _run(
        [str(installed["bin"] / "se-train-net"),
         "--config-file", "quick_schedules/faster_rcnn_SE_R_50_FPN_instant_test.yaml",
         "SOLVER.MAX_ITER", "1", "TEST.EVAL_PERIOD", "0", "DATASETS.TEST", "()",
         "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64",
         "MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(out)],
        installed["cwd"], installed["env"],
    )  # fmt: skip
    assert (out / "model_final.pth").is_file()
    assert (Path(installed["env"]["DETECTRON2_DATASETS"]) / "se_synthetic").is_dir()
