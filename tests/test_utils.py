import json

import pytest

from se_detectron.utils import atomic_write, atomic_write_json


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "sub" / "metrics.json"
    atomic_write_json(str(path), {"AP": 51.5})
    assert json.loads(path.read_text()) == {"AP": 51.5}
    atomic_write(str(path), lambda f: f.write(b'{"AP": 60.0}'))
    assert json.loads(path.read_text()) == {"AP": 60.0}
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "model.pth"
    path.write_bytes(b"old")

    def half_write(f):
        f.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(str(path), half_write)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pth"]
