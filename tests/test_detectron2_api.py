"""The shipped python configs through Detectron2's own public API, as its tools use them.

Detectron2's ``tools/lazyconfig_train_net.py`` (and detrex's, and a notebook) know nothing of
se_detectron: they ``LazyConfig.load`` a config file, ``instantiate`` its model, data loaders,
optimizer and evaluator, train with ``SimpleTrainer`` and evaluate with ``inference_on_dataset``.
The script below does exactly that in a fresh process, importing no se_detectron module itself
(the config does), with ``$DETECTRON2_DATASETS`` pointing at an empty folder: the bundled dataset
must be registered by the import and generated on first use.

The COCO python configs need COCO 2017 on disk (Detectron2's builtin ``coco_2017_*`` names),
which cannot be had here; ``tests/test_lazy_config.py`` trains a step of each on a tiny split.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from se_detectron.config import get_config_file
from se_detectron.model_zoo import list_configs

# python configs whose datasets are bundled (everything else names COCO)
RUNNABLE_HERE = [name for name in list_configs(".py") if name.startswith("Synthetic/")]

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    from detectron2.config import LazyConfig, instantiate
    from detectron2.engine import SimpleTrainer
    from detectron2.evaluation import inference_on_dataset
    from detectron2.utils.env import seed_all_rng

    config_file, out_file = sys.argv[1], sys.argv[2]
    cfg = LazyConfig.load(config_file)
    cfg = LazyConfig.apply_overrides(cfg, sys.argv[3:])
    seed_all_rng(0)
    model = instantiate(cfg.model).to(cfg.train.device)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    trainer = SimpleTrainer(model, instantiate(cfg.dataloader.train), optimizer)
    trainer.train(0, 3)
    losses = trainer.storage.history("total_loss").values()
    model.eval()
    results = inference_on_dataset(
        model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator)
    )
    with open(out_file, "w") as f:
        json.dump({"losses": [v for v, _ in losses], "results": results,
                   "modules": sorted(m for m in sys.modules if m.startswith("se_detectron"))}, f)
    """
)


def test_a_synthetic_config_is_runnable():
    assert RUNNABLE_HERE == ["Synthetic/mask_rcnn_SE_R_18_FPN_synthetic.py"]


@pytest.mark.slow
@pytest.mark.parametrize("name", RUNNABLE_HERE)
def test_detectron2_api_trains_and_evaluates_shipped_config(name, tmp_path):
    out = tmp_path / "out.json"
    overrides = [
        "train.device=cpu",
        "dataloader.train.total_batch_size=2",
        "dataloader.train.num_workers=0",
        "dataloader.test.num_workers=0",
        f"train.output_dir={tmp_path / 'run'}",
    ]
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path / "datasets"), OMP_NUM_THREADS="2")
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, get_config_file(name), str(out), *overrides],
        cwd=tmp_path,  # not the checkout: the installed package is what is imported
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(out.read_text())
    # the import registered the bundled dataset; its first use generated it where the user said
    root = tmp_path / "datasets" / "se_synthetic"
    assert (root / "annotations" / "instances_val.json").is_file()
    assert len(os.listdir(root / "train")) == 600 and len(os.listdir(root / "val")) == 100
    assert len(record["losses"]) == 3 and all(0 < v < 50 for v in record["losses"])
    results = record["results"]
    assert set(results) == {"bbox", "segm"}  # the config's COCOEvaluator, boxes and masks
    for task in ("bbox", "segm"):
        assert 0 <= results[task]["AP"] <= 100 and "AP50" in results[task]
    assert "se_detectron.modeling.se_resnet" in record["modules"]
