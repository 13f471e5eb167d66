"""Writes that never leave a half-written file, and keep the format the file's name asks for."""

import cv2
import numpy as np
import pytest

from mtha_tf import atomic_files, visualize


def test_a_failed_write_keeps_the_old_file_and_leaves_no_partial(tmp_path):
    path = tmp_path / "metrics.json"
    atomic_files.write_json(str(path), {"pckh": 80.0})
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_files.replacing(str(path)) as partial:
            with open(partial, "w") as f:
                f.write('{"pckh": ')
            raise RuntimeError("killed mid-write")
    assert path.read_text() == '{\n "pckh": 80.0\n}'
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_images_are_written_in_the_format_their_extension_names(tmp_path):
    picture = np.zeros((8, 12, 3), np.uint8)
    picture[..., 0] = 255  # red
    visualize.write_image(str(tmp_path / "grid.png"), picture)
    visualize.write_image(str(tmp_path / "grid.jpg"), picture)
    assert (tmp_path / "grid.png").read_bytes()[:4] == b"\x89PNG"
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "grid.png"))[..., ::-1], picture)  # RGB in, RGB out
    assert (tmp_path / "grid.jpg").read_bytes()[:2] == b"\xff\xd8"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.jpg", "grid.png"]
    with pytest.raises(OSError, match="missing/grid.png: could not be written"):
        visualize.write_image(str(tmp_path / "missing" / "grid.png"), picture)
    (tmp_path / "notes").write_text("a file where a folder was meant")
    with pytest.raises(OSError, match="notes/grid.png: could not be written"):  # not the clean-up's own error
        visualize.write_image(str(tmp_path / "notes" / "grid.png"), picture)
    (tmp_path / "notes").unlink()
    with pytest.raises(ValueError, match="grid.txt: expected an image file name"):
        visualize.write_image(str(tmp_path / "grid.txt"), picture)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.jpg", "grid.png"]
