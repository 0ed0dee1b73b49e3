"""se-predict (tools/predict.py): pictures and detections.json, with and without masks; output
names, earlier outputs, unreadable and 16-bit images, damaged weights."""

import json
import os
import uuid

import numpy as np
import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.structures import Boxes, Instances
from PIL import Image
from pycocotools import mask as mask_util

from se_detectron import get_se_cfg
from se_detectron.engine import predict

MASK = np.zeros((48, 64), dtype=bool)
MASK[10:30, 20:44] = True


class FakePredictor:
    """Stands in for DefaultPredictor: one 'circle' detection, with a mask if ``masks``."""

    masks = False

    def __init__(self, cfg):
        pass

    def __call__(self, image):
        instances = Instances(image.shape[:2])
        instances.pred_boxes = Boxes(torch.tensor([[18.0, 8.0, 46.0, 32.0], [0.0, 0.0, 4.0, 4.0]]))
        instances.scores = torch.tensor([0.9, 0.1])
        instances.pred_classes = torch.tensor([0, 1])
        if self.masks:
            instances.pred_masks = torch.from_numpy(np.stack([MASK, MASK]))
        return {"instances": instances}


@pytest.mark.parametrize("masks", [False, True])
def test_pictures_and_json(tmp_path, monkeypatch, masks):
    monkeypatch.setattr(predict, "DefaultPredictor", FakePredictor)
    monkeypatch.setattr(FakePredictor, "masks", masks)
    image = tmp_path / "in.png"
    Image.fromarray(np.full((48, 64, 3), 128, dtype=np.uint8)).save(image)
    cfg = get_se_cfg("Synthetic/faster_rcnn_SE_R_18_FPN_synthetic.yaml")
    out = tmp_path / "out"
    name = f"se_predict_test_{uuid.uuid4().hex[:8]}"
    MetadataCatalog.get(name).set(thing_classes=["circle", "star"])
    try:
        results = predict.predict_images(cfg, [str(image)], str(out), 0.5, metadata_name=name)
    finally:
        MetadataCatalog.pop(name)
    written = json.loads((out / "detections.json").read_text())
    assert written == results and len(written[0]["detections"]) == 1  # 0.1 is below 0.5
    det = written[0]["detections"][0]
    assert det["bbox"] == [18.0, 8.0, 46.0, 32.0] and det["category"] == "circle"
    assert ("segmentation" in det) == masks
    picture = np.asarray(Image.open(out / "in.png.png").convert("RGB")).astype(int)
    scale = picture.shape[1] // 64  # the Visualizer draws at >= 512 px wide
    inside = picture[15 * scale : 25 * scale, 25 * scale : 40 * scale]  # inside box and mask
    if masks:
        assert (mask_util.decode(det["segmentation"]).astype(bool) == MASK).all()
        assert np.abs(inside - 128).max() > 20  # the mask is painted over the object
    else:
        assert np.abs(inside - 128).max() <= 2  # only the box outline is drawn


# ----------------------------------------------------------------------------------------------
# The command line: output names, earlier outputs, unreadable images, 16-bit images
# ----------------------------------------------------------------------------------------------
class RecordingPredictor(FakePredictor):
    """FakePredictor that keeps the (BGR) images it was given."""

    seen = []

    def __call__(self, image):
        RecordingPredictor.seen.append(image)
        return super().__call__(image)


@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    """Tiny inputs, a weights file to name and the model replaced by RecordingPredictor; the
    config's datasets are not registered again (their metadata, with the class names, is
    registered at import: the catalogs stay as other tests expect them)."""
    monkeypatch.setattr(predict, "DefaultPredictor", RecordingPredictor)
    monkeypatch.setattr(predict, "register_datasets_from_cfg", lambda cfg: [])
    monkeypatch.setattr(RecordingPredictor, "seen", [])
    weights = tmp_path / "model.pth"
    torch.save({"model": {}}, weights)
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    for rel, value in (("img0.jpg", 60), ("img0.png", 120), ("sub/img0.jpg", 180)):
        Image.fromarray(np.full((48, 64, 3), value, dtype=np.uint8)).save(images / rel)

    def run(*args):
        argv = ["--config-file", "Synthetic/faster_rcnn_SE_R_18_FPN_synthetic.yaml", *args]
        return predict.cli([*argv, "--opts", "MODEL.WEIGHTS", str(weights)])

    return tmp_path, images, run


def _errors(err):
    return [line for line in err.splitlines() if line.startswith("error:")]


def test_outputs_mirror_the_inputs_relative_paths(cli_env, capsys):
    tmp_path, images, run = cli_env
    out = tmp_path / "out"
    # the folder and one of its images again: each image once
    assert run("--input", str(images), str(images / "img0.png"), "--output", str(out)) == 0
    pictures = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert pictures == ["img0.jpg.png", "img0.png.png", "sub/img0.jpg.png"]
    records = json.loads((out / "detections.json").read_text())
    assert [r["file_name"] for r in records] == [
        str(images / "img0.jpg"), str(images / "img0.png"), str(images / "sub/img0.jpg"),
    ]  # fmt: skip
    assert sorted(os.path.relpath(r["visualization"], out) for r in records) == pictures
    assert "3 images, 3 detections" in capsys.readouterr().out
    # file inputs from two folders: named relative to their common folder
    out2 = tmp_path / "out2"
    assert run("--input", str(images / "img0.jpg"), str(images / "sub/img0.jpg"),
               "--output", str(out2)) == 0  # fmt: skip
    assert sorted(str(p.relative_to(out2)) for p in out2.rglob("*.png")) == [
        "img0.jpg.png", "sub/img0.jpg.png",
    ]  # fmt: skip


def test_earlier_outputs_are_refused_unless_overwrite(cli_env, capsys):
    tmp_path, images, run = cli_env
    out = tmp_path / "out"
    assert run("--input", str(images), "--output", str(out)) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert run("--input", str(images / "img0.jpg"), "--output", str(out)) == 2
    err = capsys.readouterr().err
    assert _errors(err) == [
        f"error: --output '{out}' holds the outputs of an earlier run (detections.json, "
        "img0.jpg.png): start over with --overwrite (replaces them), or choose another --output"
    ]
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    # --overwrite: this run's outputs only (the earlier run's other pictures are removed)
    assert run("--input", str(images / "img0.jpg"), "--output", str(out), "--overwrite") == 0
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.png")) == ["img0.jpg.png"]
    assert len(json.loads((out / "detections.json").read_text())) == 1
    # the output folder inside the input folder is not read as input; the input folder itself
    # is no output folder
    inner = images / "pred"
    assert run("--input", str(images), "--output", str(inner)) == 0
    assert run("--input", str(images), "--output", str(inner), "--overwrite") == 0
    assert len(json.loads((inner / "detections.json").read_text())) == 3
    capsys.readouterr()
    assert run("--input", str(images), "--output", str(images), "--overwrite") == 2
    assert _errors(capsys.readouterr().err)[0].startswith(
        f"error: --output '{images}' is also an --input folder"
    )


def test_unreadable_image_is_skipped_and_reported(cli_env, capsys):
    tmp_path, images, run = cli_env
    (images / "broken.jpg").write_bytes(b"not an image\n")
    out = tmp_path / "out"
    assert run("--input", str(images), "--output", str(out)) == 1
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and f"'{images / 'broken.jpg'}'" in warnings[0]
    assert "UnidentifiedImageError" in warnings[0] and "Traceback" not in captured.err
    assert _errors(captured.err) == [
        f"error: 1 of 4 images could not be read and were skipped (first: "
        f"'{images / 'broken.jpg'}'); detections.json lists the 3 others"
    ]
    records = json.loads((out / "detections.json").read_text())
    assert [os.path.basename(r["file_name"]) for r in records] == [
        "img0.jpg",
        "img0.png",
        "img0.jpg",
    ]
    assert not (out / "broken.jpg.png").exists() and (out / "sub" / "img0.jpg.png").exists()


def test_16_bit_image_reaches_the_model_scaled_not_white(cli_env):
    tmp_path, _, run = cli_env
    gray = tmp_path / "gray16"
    gray.mkdir()
    Image.fromarray(np.full((48, 64), 32768, dtype=np.uint16)).save(gray / "depth.png")
    assert run("--input", str(gray), "--output", str(tmp_path / "out")) == 0
    (image,) = RecordingPredictor.seen
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8
    assert (image == 128).all()  # 32768 of 65535 (Detectron2's reader gives 255: white)


def test_damaged_weights_are_one_error_line(cli_env, capsys):
    tmp_path, images, _ = cli_env
    weights = tmp_path / "huge_frame.pkl"
    weights.write_bytes(b"\x80\x04\x95" + (2**60).to_bytes(8, "little") + b"\x00" * 40)
    argv = ["--config-file", "Synthetic/faster_rcnn_SE_R_18_FPN_synthetic.yaml", "--input",
            str(images), "--output", str(tmp_path / "out"),
            "--opts", "MODEL.WEIGHTS", str(weights)]  # fmt: skip
    assert predict.cli(argv) == 2
    err = capsys.readouterr().err
    assert _errors(err) == [
        f"error: MODEL.WEIGHTS '{weights}' is truncated or damaged: its pickle header announces "
        f"a frame of {2**60} bytes, but the file has 51 bytes: save or copy it again"
    ]
    assert not (tmp_path / "out").exists()
