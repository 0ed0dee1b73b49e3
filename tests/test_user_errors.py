"""User mistakes and faults: one ``error:`` line and exit status 2, no lost work.

The table runs every tool's command-line function in-process on tiny inputs (3 images of 64 px,
SE-R18, at most 2 iterations); most probes stop before anything is trained.
"""

import errno
import json
import logging
import os
import re
import tempfile

import pytest
import torch
import torchvision
from detectron2.data import DatasetCatalog
from detectron2.layers import ShapeSpec
from PIL import Image

from se_detectron.checkpoint import SEDetectionCheckpointer, WeightsFileError, load_weights_file
from se_detectron.config import CONFIG_ROOT, get_se_cfg
from se_detectron.convert import cli as convert_cli
from se_detectron.data import register_coco_dataset
from se_detectron.engine import lazy_train_net, train_net
from se_detectron.errors import print_user_error
from se_detectron.export import cli as export_cli
from se_detectron.modeling import build_se_resnet_classifier
from se_detectron.modeling.archs import apply_arch
from se_detectron.modeling.se_resnet import build_se_resnet_backbone
from se_detectron.pretrain import train as pretrain
from se_detectron.pretrain.train_state import save_atomic
from se_detectron.utils.atomic import DiskFullError
from se_detectron.utils.run_dir import remove_stale_temp_files

CONFIG = "Synthetic/faster_rcnn_SE_R_18_FPN_synthetic.yaml"
LAZY_CONFIG = "Synthetic/mask_rcnn_SE_R_18_FPN_synthetic.py"


def _image(path, size=(64, 64), color=(200, 40, 40)):
    image = Image.new("RGB", size, (20, 20, 20))
    image.paste(color, (10, 12, 40, 44))
    image.save(path)


def _coco(path, images, annotations):
    data = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "box"}, {"id": 2, "name": "other"}],
    }
    path.write_text(json.dumps(data))
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Images, COCO files, damaged weights, config files and image folders for the probes."""
    root = tmp_path_factory.mktemp("probes")
    (root / "images").mkdir()
    images = []
    for i in range(3):
        _image(root / "images" / f"{i}.png")
        images.append({"id": i, "file_name": f"{i}.png", "width": 64, "height": 64})
    anns = [
        {"id": 10 + i, "image_id": i, "category_id": 1 + i % 2, "bbox": [10, 12, 30, 32],
         "area": 960, "iscrowd": 0}
        for i in range(3)
    ]  # fmt: skip
    f = {"root": root, "images": str(root / "images")}
    f["good"] = _coco(root / "good.json", images, anns)
    f["no_ann"] = _coco(root / "no_ann.json", images, [])
    wrong = [dict(img, width=128) if img["id"] == 1 else img for img in images]
    f["wrong_size"] = _coco(root / "wrong_size.json", wrong, anns)
    degenerate = anns + [dict(anns[0], id=77, bbox=[30, 12, -8, 20])]
    f["degenerate"] = _coco(root / "degenerate.json", images, degenerate)
    f["crowd"] = _coco(root / "crowd.json", images, [dict(a, iscrowd=1) for a in anns])

    torch.save({"model": {"w": torch.zeros(4096)}}, root / "good.pth")
    data = (root / "good.pth").read_bytes()
    (root / "trunc.pth").write_bytes(data[: len(data) // 2])
    (root / "empty.pth").write_bytes(b"")
    (root / "empty.pkl").write_bytes(b"")
    (root / "trunc.pkl").write_bytes(b"\x80\x04\x95\x10\x00\x00\x00")
    # a pickle header announcing a frame of 2**60 bytes: the unpickler raises MemoryError
    (root / "huge_frame.pkl").write_bytes(b"\x80\x04\x95" + (2**60).to_bytes(8, "little") + b"}.")
    (root / "random.pth").write_bytes(os.urandom(300).replace(b"\x80", b"\x00"))
    # a plain ResNet: no SE units
    torch.save(torchvision.models.resnet18().state_dict(), root / "resnet18.pth")
    cfg = get_se_cfg()
    apply_arch(cfg, "se_resnet18")
    torch.save({"model": build_se_resnet_classifier(cfg, 3).state_dict()}, root / "se18.pth")

    (root / "no_base.yaml").write_text('_BASE_: "nope/Base.yaml"\n')
    (root / "bad_value.yaml").write_text(
        f'_BASE_: "{CONFIG_ROOT / CONFIG}"\nMODEL:\n  SE:\n    REDUCTION: sixteen\n'
    )
    finished = root / "finished"  # an earlier run's checkpoints
    finished.mkdir()
    (finished / "model_final.pth").write_bytes(data)
    (finished / "last_checkpoint").write_text("model_final.pth")
    pre_done = root / "pretrain_done"
    pre_done.mkdir()
    (pre_done / "checkpoint.pth").write_bytes(data)

    for kind, content in (("trunc", None), ("text", b"not an image\n")):
        folder = root / f"folder_{kind}"
        for split in ("train", "val"):
            for c in ("a", "b"):
                (folder / split / c).mkdir(parents=True)
                for i in range(2):
                    _image(folder / split / c / f"{i}.png", size=(32, 32))
        bad = folder / "train" / "a" / "bad.JPEG"
        if content is None:  # a JPEG cut in the middle
            _image(bad, size=(32, 32))
            content = bad.read_bytes()[:200]
        bad.write_bytes(content)
        f[f"folder_{kind}"] = str(folder)
    return f


@pytest.fixture(autouse=True)
def quiet_stale_log_handlers(monkeypatch):
    """Detectron2's loggers keep the stdout of the test that set them up (closed since): no
    "--- Logging error ---" reports in the stderr these tests read."""
    monkeypatch.setattr(logging, "raiseExceptions", False)


def train_args(f, out, *opts, dataset="good", name=None):
    name = name or f"probe_{dataset}"
    return [
        "--config-file", CONFIG,
        "--register-coco", f"{name}:{f[dataset]}:{f['images']}",
        "MODEL.WEIGHTS", "", "MODEL.BACKBONE.FREEZE_AT", "0", "MODEL.DEVICE", "cpu",
        "MODEL.ROI_HEADS.NUM_CLASSES", "2",
        "DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", "()",
        "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64",
        "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2", "SOLVER.WARMUP_ITERS", "1",
        "SOLVER.CHECKPOINT_PERIOD", "1000",
        "OUTPUT_DIR", str(out), *opts,
    ]  # fmt: skip


# a narrower detector for the runs that train
SMALL_MODEL = ["MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "64"]


def lazy_args(f, out, *flags):
    return [*flags, "--config-file", LAZY_CONFIG, f"train.output_dir={out}"]


def pretrain_args(data, out, *extra):
    return [
        "--data-path", str(data), "--output-dir", str(out), "--workers", "0", "--device", "cpu",
        "--arch", "se_resnet18", "--batch-size", "2", "--epochs", "1",
        "--train-crop-size", "32", "--val-resize-size", "32", "--val-crop-size", "32", *extra,
    ]  # fmt: skip


def export_args(f, out, *opts, sample="0.png"):
    return [
        "--config-file", CONFIG, "--output", str(out),
        "--sample-image", os.path.join(f["images"], sample), "MODEL.ROI_HEADS.NUM_CLASSES", "2",
        *opts,
    ]  # fmt: skip


def read_only(monkeypatch):
    """A folder that cannot be written (the tests run as root, who can write anywhere)."""

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", kwargs.get("dir"))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)


TOOLS = {
    "train_net": train_net.cli,
    "lazy_train_net": lazy_train_net.cli,
    "pretrain": pretrain.cli,
    "convert": convert_cli.cli,
    "export": export_cli.cli,
}

# (probe id, tool, argv(files, tmp_path), fault to inject or None, expected start of the error)
PROBES = [
    ("rerun-overwrites-finished", "train_net",
     lambda f, t: train_args(f, f["root"] / "finished"), None,
     r"OUTPUT_DIR '.*finished' holds the checkpoints of an earlier run \(last_checkpoint, "
     r"model_final.pth\): continue it with --resume, start over with --overwrite"),
    ("resume-nothing", "train_net",
     lambda f, t: ["--resume", *train_args(f, t / "typo")], None,
     r"--resume: nothing to resume in OUTPUT_DIR '.*typo' \(no last_checkpoint"),
    ("resume-and-overwrite", "train_net",
     lambda f, t: ["--resume", "--overwrite", *train_args(f, t / "o")], None,
     r"--overwrite and --resume contradict"),
    ("read-only-output", "train_net", lambda f, t: train_args(f, t / "ro"), read_only,
     r"OUTPUT_DIR '.*ro' cannot be written \(Read-only file system\)"),
    ("empty-pth-weights", "train_net",
     lambda f, t: train_args(f, t / "o", "MODEL.WEIGHTS", str(f["root"] / "empty.pth")), None,
     r"MODEL.WEIGHTS '.*empty.pth' is empty \(0 bytes\)"),
    ("truncated-pth-weights", "train_net",
     lambda f, t: train_args(f, t / "o", "MODEL.WEIGHTS", str(f["root"] / "trunc.pth")), None,
     r"MODEL.WEIGHTS '.*trunc.pth' is truncated or damaged"),
    ("truncated-pkl-weights", "train_net",
     lambda f, t: train_args(f, t / "o", "MODEL.WEIGHTS", str(f["root"] / "trunc.pkl")), None,
     r"MODEL.WEIGHTS '.*trunc.pkl' cannot be read: it is truncated"),
    ("huge-frame-pkl-weights", "train_net",
     lambda f, t: train_args(f, t / "o", "MODEL.WEIGHTS", str(f["root"] / "huge_frame.pkl")),
     None, r"MODEL.WEIGHTS '.*huge_frame.pkl' is truncated or damaged: its pickle header "
     r"announces a frame of 1152921504606846976 bytes, but the file has 13 bytes"),
    ("empty-pkl-weights", "train_net",
     lambda f, t: train_args(f, t / "o", "MODEL.WEIGHTS", str(f["root"] / "empty.pkl")), None,
     r"MODEL.WEIGHTS '.*empty.pkl' is empty"),
    ("coco-no-annotations", "train_net",
     lambda f, t: train_args(f, t / "o", dataset="no_ann"), None,
     r"COCO dataset 'probe_no_ann': '.*no_ann.json' has no usable annotations"),
    ("coco-only-crowd", "train_net",
     lambda f, t: train_args(f, t / "o", dataset="crowd"), None,
     r"COCO dataset 'probe_crowd': '.*crowd.json' has no usable annotations \(3 are crowd "
     r"regions \(iscrowd 1\), which mark areas to ignore\) for its 3 images"),
    ("coco-wrong-size", "train_net", lambda f, t: train_args(f, t / "o", dataset="wrong_size"),
     None, r"COCO dataset 'probe_wrong_size': the width/height in '.*wrong_size.json' must be "
     r"those of the image files .*'1.png' is 64x64 \(json: 128x64\); 1 of 3 images differ"),
    ("se-reduction-word", "train_net",
     lambda f, t: train_args(f, t / "o", "MODEL.SE.REDUCTION", "sixteen"), None,
     r"config error in the command-line overrides: .*MODEL.SE.REDUCTION"),
    ("se-reduction-word-yaml", "train_net",
     lambda f, t: ["--config-file", str(f["root"] / "bad_value.yaml")], None,
     r"config error in .*bad_value.yaml: .*MODEL.SE.REDUCTION"),
    ("ims-per-batch-0", "train_net",
     lambda f, t: train_args(f, t / "o", "SOLVER.IMS_PER_BATCH", "0"), None,
     r"SOLVER.IMS_PER_BATCH 0: the total batch must be a positive multiple"),
    ("odd-overrides", "train_net",
     lambda f, t: train_args(f, t / "o", "MODEL.SE.REDUCTION"), None,
     r"config overrides on the command line come in KEY VALUE pairs, but 'MODEL.SE.REDUCTION' "
     r"has no value"),
    ("missing-base", "train_net",
     lambda f, t: ["--config-file", str(f["root"] / "no_base.yaml")], None,
     r"config file '.*no_base.yaml' inherits from _BASE_: 'nope/Base.yaml', but "
     r"'.*nope/Base.yaml' does not exist"),
    ("lazy-rerun-overwrites", "lazy_train_net",
     lambda f, t: lazy_args(f, f["root"] / "finished"), None,
     r"train.output_dir '.*finished' holds the checkpoints of an earlier run"),
    ("lazy-resume-nothing", "lazy_train_net",
     lambda f, t: lazy_args(f, t / "typo", "--resume"), None,
     r"--resume: nothing to resume in train.output_dir"),
    ("pretrain-rerun-overwrites", "pretrain",
     lambda f, t: pretrain_args(f["folder_trunc"], f["root"] / "pretrain_done"), None,
     r"--output-dir '.*pretrain_done' holds the checkpoints of an earlier run \(checkpoint.pth\): "
     r"continue it with --resume auto, start over with --overwrite"),
    ("pretrain-batch-size-0", "pretrain",
     lambda f, t: pretrain_args(f["folder_trunc"], t / "o", "--batch-size", "0"), None,
     r"--batch-size 0: give at least 1 image"),
    ("pretrain-epochs-0", "pretrain",
     lambda f, t: pretrain_args(f["folder_trunc"], t / "o", "--epochs", "0"), None,
     r"--epochs 0: train at least 1 epoch"),
    ("pretrain-truncated-jpeg", "pretrain",
     lambda f, t: pretrain_args(f["folder_trunc"], t / "o", "--batch-size", "6"), None,
     r"cannot read image '.*folder_trunc/train/a/bad.JPEG' \(OSError: [Tt]runcated"),
    ("pretrain-text-as-jpeg", "pretrain",
     lambda f, t: pretrain_args(f["folder_text"], t / "o", "--batch-size", "6"), None,
     r"cannot read image '.*folder_text/train/a/bad.JPEG' \(UnidentifiedImageError"),
    ("pretrain-empty-resume", "pretrain",
     lambda f, t: pretrain_args(f["folder_trunc"], t / "o", "--resume",
                                str(f["root"] / "empty.pth")), None,
     r"checkpoint '.*empty.pth' is empty"),
    ("convert-random-file", "convert",
     lambda f, t: [str(f["root"] / "random.pth"), str(t / "o.pkl")], None,
     r"input checkpoint '.*random.pth' is not a weights file"),
    ("convert-empty", "convert",
     lambda f, t: [str(f["root"] / "empty.pth"), str(t / "o.pkl")], None,
     r"input checkpoint '.*empty.pth' is empty"),
    ("convert-truncated", "convert",
     lambda f, t: [str(f["root"] / "trunc.pth"), str(t / "o.pkl")], None,
     r"input checkpoint '.*trunc.pth' is truncated or damaged"),
    ("convert-missing", "convert",
     lambda f, t: [str(t / "nope.pth"), str(t / "o.pkl")], None,
     r"input checkpoint '.*nope.pth' does not exist"),
    ("convert-plain-resnet", "convert",
     lambda f, t: [str(f["root"] / "resnet18.pth"), str(t / "o.pkl")], None,
     r"the checkpoint \(read as 'timm'\) has no SE units: a plain 18-layer ResNet"),
    ("convert-read-only-output", "convert",
     lambda f, t: [str(f["root"] / "se18.pth"), str(t / "o.pkl")], read_only,
     r"Read-only file system: cannot write '.*o.pkl'"),
    ("export-missing-weights", "export",
     lambda f, t: export_args(f, t / "e", "MODEL.WEIGHTS", str(t / "model_final.pth")), None,
     r"weights file '.*model_final.pth' does not exist"),
    ("export-empty-weights", "export",
     lambda f, t: export_args(f, t / "e", "MODEL.WEIGHTS", str(f["root"] / "empty.pth")), None,
     r"MODEL.WEIGHTS '.*empty.pth' is empty"),
    ("export-missing-sample-image", "export",
     lambda f, t: export_args(f, t / "e", sample="nope.png"), None,
     r"--sample-image '.*nope.png' does not exist"),
]  # fmt: skip


def run_tool(tool, argv):
    """The exit status of a tool's command-line function called in-process."""
    try:
        status = TOOLS[tool](argv)
    except SystemExit as e:
        status = e.code
    return status if isinstance(status, int) else 0


@pytest.mark.slow
@pytest.mark.parametrize("tool, make_argv, fault, expected", [p[1:] for p in PROBES],
                         ids=[p[0] for p in PROBES])  # fmt: skip
def test_probe_is_one_error_line(
    files, tmp_path, monkeypatch, capsys, tool, make_argv, fault, expected
):
    argv = make_argv(files, tmp_path)
    if fault is not None:
        fault(monkeypatch)
    status = run_tool(tool, argv)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert status == 2, err[-2000:]
    assert len(errors) == 1 and "Traceback" not in err, err[-2000:]
    assert re.match("error: " + expected, errors[0]), errors[0]


@pytest.mark.slow
def test_finished_run_is_kept_and_resumed(files, tmp_path, capsys):
    """Real 2-iteration runs: --resume-if-possible starts in an empty folder; a plain rerun is
    refused and leaves the run untouched; --resume continues it (removing a stale temp file);
    --overwrite starts over."""
    out = tmp_path / "run"
    args = train_args(files, out, *SMALL_MODEL)
    assert run_tool("train_net", ["--resume-if-possible", *args]) == 0
    final = (out / "model_final.pth").read_bytes()
    capsys.readouterr()
    assert run_tool("train_net", args) == 2
    assert "error: OUTPUT_DIR" in capsys.readouterr().err
    assert (out / "model_final.pth").read_bytes() == final
    assert (out / "last_checkpoint").read_text() == "model_final.pth"

    stale = out / ".model_final.pth.0123456789ab.tmp.pth"
    stale.write_bytes(b"partial")
    assert run_tool("train_net", ["--resume", *args]) == 0
    assert not stale.exists()
    assert "Resuming from iteration 2" in capsys.readouterr().out
    assert run_tool("train_net", ["--overwrite", *args]) == 0
    assert "error:" not in capsys.readouterr().err


def test_only_our_temp_files_are_removed(tmp_path):
    ours = [
        ".model_0000999.pth.k2j4_x9a.pth.tmp",  # SEDetectionCheckpointer.save (atomic_write)
        ".model_0000999.pth.0123456789ab.tmp.pth",  # SEDetectionCheckpointer.save, earlier
        ".last_checkpoint.k2j4_x9a.tmp",  # its marker
        ".checkpoint.pth.k2j4_x9a.pth.tmp",  # atomic_write (pretraining)
        ".metrics.jsonl.ab_cd123.jsonl.tmp",
    ]
    theirs = ["notes.tmp", ".my.tmp", "model_final.pth", ".checkpoint.pth.k2j4_x9a.json.tmp"]
    for name in ours + theirs:
        (tmp_path / name).write_bytes(b"x")
    removed = remove_stale_temp_files(str(tmp_path))
    assert sorted(os.path.basename(p) for p in removed) == sorted(ours)
    assert sorted(os.listdir(tmp_path)) == sorted(theirs)


def _no_space(real_save, after):
    calls = []

    def save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) > after:  # torch reports the file's OSError as a RuntimeError
            try:
                raise OSError(errno.ENOSPC, "No space left on device")
            except OSError as e:
                raise RuntimeError("[enforce fail at inline_container.cc:672] pos") from e
        return real_save(obj, f, *args, **kwargs)

    return save


def test_out_of_memory_while_loading_weights_names_the_file(tmp_path):
    path = tmp_path / "w.pth"
    torch.save({"model": {}}, path)

    def load(_):
        raise MemoryError

    with pytest.raises(WeightsFileError, match=r"MODEL.WEIGHTS '.*w.pth' cannot be read: .*"
                       r"ran out of memory \(MemoryError\)"):  # fmt: skip
        load_weights_file(str(path), load, "MODEL.WEIGHTS")


def test_disk_full_keeps_the_previous_checkpoint(tmp_path, monkeypatch, capsys):
    checkpointer = SEDetectionCheckpointer(torch.nn.Linear(2, 2), str(tmp_path))
    checkpointer.save("model_0000001")
    monkeypatch.setattr(torch, "save", _no_space(torch.save, after=0))
    with pytest.raises(DiskFullError) as err:
        checkpointer.save("model_0000003")
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth"]
    assert print_user_error(err.value)
    line = capsys.readouterr().err.strip()
    assert re.fullmatch(
        r"error: No space left on device while saving '.*model_0000003.pth': the previous file "
        r"'.*model_0000001.pth' was kept intact \(the partial file was removed\)\. Free space "
        r"in '.*' and resume the run",
        line,
    ), line

    monkeypatch.undo()
    path = tmp_path / "checkpoint.pth"
    save_atomic({"epoch": 1}, str(path))
    monkeypatch.setattr(torch, "save", _no_space(torch.save, after=0))
    with pytest.raises(DiskFullError, match=r"previous file '.*checkpoint.pth' was kept"):
        save_atomic({"epoch": 2}, str(path))
    monkeypatch.undo()
    assert torch.load(path)["epoch"] == 1 and os.listdir(tmp_path).count("checkpoint.pth") == 1


def test_degenerate_boxes_are_dropped_with_a_warning(files, caplog):
    name = "probe_degenerate_boxes"
    register_coco_dataset(name, files["degenerate"], files["images"])
    with caplog.at_level(logging.WARNING):
        dicts = DatasetCatalog.get(name)
    assert sum(len(d["annotations"]) for d in dicts) == 3
    warnings = [r.getMessage() for r in caplog.records if "dropping" in r.getMessage()]
    assert len(warnings) == 1
    assert "dropping 1 annotation(s)" in warnings[0] and "annotation id 77" in warnings[0]


def test_c4_with_detectron2_res5_head_warns(caplog):
    cfg = get_se_cfg("Base-SE-RCNN-C4.yaml", ["MODEL.ROI_HEADS.NAME", "Res5ROIHeads"])
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.STEM_OUT_CHANNELS = 16
    cfg.MODEL.RESNETS.WIDTH_PER_GROUP = 16
    with caplog.at_level(logging.WARNING):
        build_se_resnet_backbone(cfg, ShapeSpec(channels=3))
    assert any("MODEL.ROI_HEADS.NAME SERes5ROIHeads" in r.getMessage() for r in caplog.records)


def test_refused_runs_left_the_earlier_run_untouched(files):
    # .run.lock, where present, is the finished run's own folder lock (released at its end)
    kept = sorted(n for n in os.listdir(files["root"] / "finished") if n != ".run.lock")
    assert kept == ["last_checkpoint", "model_final.pth"]
