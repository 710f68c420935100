"""Which photos are read, and how (issue 29, group B): pixel caps, links and loops, deepclust's
own run folders, tiny images, EXIF orientation, hidden names, and the skip note."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepclust.data import readers
from deepclust.data.datasets import load_protocol, load_split, photo_files, photo_store_side
from deepclust.data.images import expand_paths

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _pngs(folder: Path, n: int, side: int = 32, start: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(start)
    paths = []
    for i in range(start, start + n):
        pixels = rng.integers(0, 255, (side, side, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"p{i:02d}.png")
        paths.append(folder / f"p{i:02d}.png")
    return paths


def _png_header(path: Path, width: int, height: int) -> None:
    """A 16-bit grayscale PNG that claims width x height but holds a few bytes of data."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


def _skip_messages(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if "skipped" in str(w.message)]


# --------------------------------------------------------------------------- item 5: pixel cap


def test_an_image_over_the_pixel_cap_is_skipped_from_its_header(tmp_path, monkeypatch):
    _pngs(tmp_path / "photos", 3)
    big = Image.fromarray(np.zeros((100, 120, 3), np.uint8))
    big.save(tmp_path / "photos" / "big.png")
    monkeypatch.setenv("DEEPCLUST_MAX_PIXELS", "5000")
    decoded = []
    monkeypatch.setattr(readers, "to_rgb", lambda im: decoded.append(im.size) or im.convert("RGB"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = load_split("photos", "train", tmp_path / "photos", image_size=16)
    assert len(s) == 3 and not any("big" in p for p in s.paths)
    assert (120, 100) not in decoded  # refused from the header, never decoded
    (message,) = _skip_messages(caught)
    assert "big.png" in message and "12,000 pixels" in message and "--max-pixels" in message


def test_pil_bomb_checks_never_leak_and_bombs_are_skipped(tmp_path):
    _pngs(tmp_path / "photos", 2)
    _png_header(tmp_path / "photos" / "bomb16.png", 13000, 13000)  # PIL: an error
    _png_header(tmp_path / "photos" / "warn16.png", 9500, 9500)  # PIL: a warning
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = load_split("photos", "train", tmp_path / "photos", image_size=16)
    assert len(s) == 2
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    (message,) = _skip_messages(caught)
    assert "bomb16.png" in message and "warn16.png" in message
    assert "169,000,000 pixels" in message and "DecompressionBomb" not in message


def test_a_bad_max_pixels_value_is_one_line(monkeypatch):
    from deepclust.errors import ConfigError

    monkeypatch.setenv("DEEPCLUST_MAX_PIXELS", "lots")
    with pytest.raises(ConfigError, match="--max-pixels"):
        readers.max_pixels()


# --------------------------------------------------------------------------- item 7: links


def test_a_link_loop_lists_every_photo_once(tmp_path):
    root = tmp_path / "photos"
    _pngs(root / "a", 4)
    os.symlink("..", root / "a" / "loop")
    (root / "b").mkdir()
    os.symlink(root / "a", root / "b" / "also_a")  # the same real folder again
    files, _, _ = photo_files(root)
    assert files == [f"a/p{i:02d}.png" for i in range(4)]


def test_two_link_loops_do_not_hang_the_listing(tmp_path):
    root = tmp_path / "photos"
    _pngs(root / "a", 3)
    os.symlink("..", root / "a" / "up1")
    os.symlink("..", root / "a" / "up2")
    code = (
        "import sys; from deepclust.data.readers import images_in; "
        "print(len(images_in(__import__('pathlib').Path(sys.argv[1]), recursive=True)))"
    )
    env = {**os.environ, "PYTHONPATH": SRC}
    try:
        done = subprocess.run(
            [sys.executable, "-c", code, str(root)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the listing of two link loops did not finish in 60 s")
    assert done.stdout.strip() == "3", done.stderr


@pytest.mark.parametrize("link", ["self", "dangling"])
def test_a_broken_link_is_skipped_with_the_skip_note(tmp_path, link):
    root = tmp_path / "photos"
    _pngs(root, 3)
    if link == "self":
        os.symlink("self.jpg", root / "self.jpg")
        os.symlink("loopdir", root / "loopdir")
    else:
        os.symlink(tmp_path / "gone.jpg", root / "dangling.jpg")
        os.symlink(tmp_path / "gone", root / "gone_folder")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = load_split("photos", "train", root, image_size=16)
    assert len(s) == 3
    (skipped,) = s.skipped  # with the unreadable images: one note, and in summary.json
    assert skipped[0] == str(root / f"{link}.jpg")
    folder = "loopdir" if link == "self" else "gone_folder"
    assert [m for m in _skip_messages(caught) if f"{folder} (a broken link" in m]


# --------------------------------------------------------------------------- item 8: run folders


def _fake_run(run: Path, photos: list[Path]) -> None:
    (run / "clusters" / "0").mkdir(parents=True)
    (run / "config.yaml").write_text("method: kmeans\n")
    (run / "summary.json").write_text("{}")
    for p in photos:
        os.symlink(p, run / "clusters" / "0" / p.name)


def test_deepclusts_own_run_folders_are_never_read_as_photos(tmp_path):
    root = tmp_path / "photos"
    photos = _pngs(root, 4)
    _fake_run(root / "runs" / "photos-clusters-1", photos)
    _fake_run(root / "elsewhere", photos)
    (root / "elsewhere" / "summary.json").unlink()
    (root / "elsewhere" / ".deepclust.lock").write_text("")  # a run still in progress
    files, _, _ = photo_files(root)
    assert files == [p.name for p in photos]


def test_the_default_run_folder_is_outside_the_photos(tmp_path, monkeypatch):
    from deepclust.practice.folder import default_out

    root = tmp_path / "photos"
    (root / "album").mkdir(parents=True)
    for cwd in (root, root / "album"):
        monkeypatch.chdir(cwd)
        out = default_out(root).resolve()
        assert not out.is_relative_to(root.resolve())
        assert out.parent == tmp_path.resolve() / "runs"
    monkeypatch.chdir(tmp_path)
    assert default_out(root).parts[0] == "runs"  # elsewhere: ./runs as before


# --------------------------------------------------------------------------- item 10: tiny images


def test_tiny_images_do_not_set_the_stored_side(tmp_path):
    root = tmp_path / "photos"
    files = [p.name for p in _pngs(root, 40, side=32)]
    for i in range(41):
        Image.new("RGB", (1, 1), (i, i, i)).save(root / f"tiny{i:02d}.png")
        files.append(f"tiny{i:02d}.png")
    with pytest.warns(UserWarning, match=r"41 of the 81 .*smaller than 16 px"):
        assert photo_store_side(root, files) == 32
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a collection of small images by design: no note
        assert photo_store_side(root, [f for f in files if f.startswith("tiny")]) == 1


# --------------------------------------------------------------------------- item 11: EXIF


def test_exif_orientation_is_applied(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = (255, 0, 0)  # left half red
    pixels[:, 20:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise: the left half on top
    Image.fromarray(pixels).save(root / "phone.jpg", exif=exif, quality=95)
    assert readers.decode_image(str(root / "phone.jpg"), None).shape == (40, 20, 3)
    s = load_split("photos", "train", root, image_size=20)
    top, bottom = s.images[0, :, 0].float().mean(1), s.images[0, :, -1].float().mean(1)
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60


def test_the_decode_cache_forgets_decodes_without_orientation():
    assert readers.CACHE_VERSION >= 3


# --------------------------------------------------------------------------- item 19: hidden


def test_a_typed_path_through_dot_folders_finds_its_images(tmp_path, monkeypatch):
    cat = tmp_path / "photos" / "cat"
    _pngs(cat, 2)
    _pngs(cat / ".thumbnails", 1, start=5)
    Image.new("RGB", (8, 8)).save(cat / ".hidden.png")
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    assert expand_paths(["../photos/cat"]) == ["../photos/cat/p00.png", "../photos/cat/p01.png"]
    monkeypatch.chdir(cat)
    assert expand_paths(["."]) == ["p00.png", "p01.png"]
    assert expand_paths(["./p00.png", "../cat/.hidden.png"]) == ["p00.png", "../cat/.hidden.png"]


# --------------------------------------------------------------------------- item 17: the note


def test_the_skip_note_is_one_line_once_and_recorded(tmp_path):
    root = tmp_path / "photos"
    _pngs(root / "red", 6)
    _pngs(root / "blue", 6, start=20)
    (root / "red" / "broken.png").write_bytes(b"\x89PNG not really")
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": SRC}
    argv = [sys.executable, "-m", "deepclust", "--no-progress", "cluster", str(root), "--k", "2"]
    argv += ["--out", str(run), "--method", "kmeans", "--set", "encoder.name=efficientnet_lite0"]
    argv += ["--set", "encoder.input_size=32"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if "broken.png" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: skipped 1 unreadable"), done.stderr
    assert "UserWarning" not in done.stderr and "warnings.warn" not in done.stderr
    skipped = json.loads((run / "summary.json").read_text())["skipped_images"]
    assert skipped["count"] == 1 and skipped["files"][0]["path"].endswith("red/broken.png")
    assert "cannot identify image file" in skipped["files"][0]["reason"]
    page = (run / "report.html").read_text()
    assert "1 image file skipped" in page and "red/broken.png" in page


def test_an_image_folder_of_link_loops_alone_is_one_clear_error(tmp_path):
    from deepclust.errors import DataError

    root = tmp_path / "empty"
    (root / "a").mkdir(parents=True)
    for i in range(12):  # each level doubles os.walk's paths without the real-path check
        os.symlink("..", root / "a" / f"up{i}")
    with pytest.raises(DataError, match="no images found"):
        load_protocol("imagefolder", "all", root)
