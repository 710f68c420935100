"""Readers for the on-disk formats of the supported datasets.

Array formats (CIFAR pickles, STL-10 binaries, IDX) are read directly into uint8 arrays.
Image files (JPEG, PNG, ...) are decoded with PIL in a thread pool into one preallocated
uint8 array, and the result is cached on disk (see `load_image_files`).

All arrays returned here are numpy uint8 [N, 3, H, W] (images) or int64 [N] (labels).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import tempfile
import warnings
import zipfile
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from deepclust.config import max_pixels
from deepclust.errors import ConfigError, DataError
from deepclust.progress import bar as progress_bar
from deepclust.progress import note

# deepclust checks its own cap (config.max_pixels) from the header of every image it opens;
# PIL's check would warn from inside the decoding threads, or refuse what --max-pixels allows.
Image.MAX_IMAGE_PIXELS = None

IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".gif",
    ".webp",
    ".tif",
    ".tiff",
)
BAD_IMAGE_MODES: tuple[str, ...] = ("skip", "fail")
CACHE_VERSION = 3  # 3: EXIF orientation applied. Bump when decoding or resizing changes, so old cache files are not reused
_SHOWN_BAD = 5  # how many skipped files a warning names


def is_image_file(name: str) -> bool:
    """True for a non-hidden file name with one of IMAGE_EXTENSIONS (any case)."""
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def check_bad_images(mode: str) -> None:
    if mode not in BAD_IMAGE_MODES:
        raise ConfigError(f"bad_images must be one of {', '.join(BAD_IMAGE_MODES)}, got '{mode}'.")


def extensions_text() -> str:
    return ", ".join(e.lstrip(".") for e in IMAGE_EXTENSIONS)


# --------------------------------------------------------------------------- pickles (CIFAR)


def read_pickle(path: Path) -> dict[Any, Any]:
    """Load one CIFAR python pickle (written by Python 2, so keys are bytes)."""
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="bytes")
    except FileNotFoundError:
        raise DataError(
            f"missing file {path}: the extracted archive is incomplete. Extract it again."
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise DataError(
            f"cannot read {path} ({type(exc).__name__}: {exc}): the file is truncated or "
            "not a CIFAR pickle. Delete it and extract the archive again."
        ) from exc
    if not isinstance(obj, dict):
        raise DataError(f"{path} holds a {type(obj).__name__}, not a CIFAR batch dict.")
    return obj


def pickle_field(batch: dict[Any, Any], key: str, path: Path) -> Any:
    """batch[key], accepting bytes or str keys."""
    for k in (key.encode(), key):
        if k in batch:
            return batch[k]
    found = ", ".join(sorted(str(k) for k in batch))
    raise DataError(f"{path} has no '{key}' entry (found: {found}); it is not the expected file.")


def names_field(batch: dict[Any, Any], key: str, path: Path) -> list[str]:
    return [n.decode() if isinstance(n, bytes) else str(n) for n in pickle_field(batch, key, path)]


def cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR batch file -> images uint8 [N, 3, 32, 32], labels int64 [N]."""
    batch = read_pickle(path)
    data = np.asarray(pickle_field(batch, "data", path))
    labels = np.asarray(pickle_field(batch, label_key, path), dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(
            f"{path}: 'data' is {data.dtype} {data.shape}, expected uint8 [N, 3072]. "
            "The file is corrupt; extract the archive again."
        )
    if labels.shape != (data.shape[0],):
        raise DataError(f"{path}: {data.shape[0]} images but {labels.shape[0]} labels.")
    return data.reshape(-1, 3, 32, 32), labels


# --------------------------------------------------------------------------- STL-10 binaries

STL_SIDE = 96
_STL_BYTES = 3 * STL_SIDE * STL_SIDE


def read_stl10_images(path: Path, chunk: int = 2048) -> np.ndarray:
    """STL-10 `*_X.bin` -> uint8 [N, 3, 96, 96].

    The file stores each image channel by channel, each channel column-major, so a row-major
    reshape gives [N, 3, W, H] and the last two axes are swapped back.
    """
    size = path.stat().st_size
    if size == 0 or size % _STL_BYTES:
        raise DataError(
            f"{path} has {size} bytes, not a whole number of 96x96x3 images: the file is "
            "truncated. Delete it and extract stl10_binary.tar.gz again."
        )
    n = size // _STL_BYTES
    out = np.empty((n, 3, STL_SIDE, STL_SIDE), dtype=np.uint8)
    with open(path, "rb") as f:
        for start in range(0, n, chunk):
            count = min(chunk, n - start)
            raw = np.fromfile(f, dtype=np.uint8, count=count * _STL_BYTES)
            out[start : start + count] = raw.reshape(count, 3, STL_SIDE, STL_SIDE).transpose(
                0, 1, 3, 2
            )
    return out


def read_stl10_labels(path: Path, count: int) -> np.ndarray:
    """STL-10 `*_y.bin` (uint8 1..10) -> int64 [N] in 0..9."""
    labels = np.fromfile(path, dtype=np.uint8).astype(np.int64) - 1
    if labels.shape != (count,):
        raise DataError(
            f"{path} has {labels.shape[0]} labels for {count} images: one of the files is "
            "truncated. Extract stl10_binary.tar.gz again."
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{path} holds labels outside 1..10; it is not an STL-10 label file.")
    return labels


# --------------------------------------------------------------------------- IDX (MNIST family)

IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049


def read_idx(path: Path, magic: int) -> np.ndarray:
    """An IDX file (optionally .gz) of unsigned bytes -> uint8 array of its dimensions."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError) as exc:
        raise DataError(
            f"cannot read {path} ({exc}): the file is corrupt or truncated. Download it again."
        ) from exc
    found = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if found != magic:
        what = "image" if magic == IDX_IMAGES_MAGIC else "label"
        raise DataError(
            f"{path} is not an IDX {what} file: magic number {found}, expected {magic}. "
            "Check that the file is the right one (images vs labels) and not corrupt."
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(data) != header + int(np.prod(dims)):
        raise DataError(
            f"{path} should hold {int(np.prod(dims))} bytes of data for shape {dims} but has "
            f"{len(data) - header}: the file is truncated. Download it again."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


# --------------------------------------------------------------------------- resizing


def fit_image(img: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to `size` (bilinear, antialiased), then centre-crop to a square."""
    w, h = img.size
    if (w, h) == (size, size):
        return img
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.Resampling.BILINEAR)
    left, top = round((nw - size) / 2), round((nh - size) / 2)
    return img.crop((left, top, left + size, top + size))


def fit_array(images: np.ndarray, size: int, chunk: int = 1024) -> np.ndarray:
    """uint8 [N, 3, H, W] -> uint8 [N, 3, size, size]: shorter side to size, centre crop."""
    n, c, h, w = images.shape
    if (h, w) == (size, size):
        return images
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    top, left = round((nh - size) / 2), round((nw - size) / 2)
    out = np.empty((n, c, size, size), dtype=np.uint8)
    for start in range(0, n, chunk):
        x = torch.from_numpy(np.ascontiguousarray(images[start : start + chunk])).float()
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
        x = x[:, :, top : top + size, left : left + size]
        out[start : start + chunk] = x.round_().clamp_(0, 255).to(torch.uint8).numpy()
    return out


# --------------------------------------------------------------------------- image files

# Transparent pixels are shown over this colour (as a browser shows a PNG on a white page).
ALPHA_BACKGROUND = (255, 255, 255)
ALPHA_MODES = ("RGBA", "LA", "PA")


def _gray_to_8bit(im: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit integer or float grayscale image -> mode L, by its value range.

    I;16*: 0..65535. F: 0..1 when its values fit, else like I. I: 0..255 when its values fit
    (an 8-bit image stored as integers), else 0..65535 (16-bit), else its own min..max.
    """
    a = np.asarray(im, dtype=np.float64)
    finite = a[np.isfinite(a)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if im.mode.startswith("I;16"):
        scale, offset = 255 / 65535, 0.0
    elif im.mode == "F" and low >= 0 and high <= 1:
        scale, offset = 255.0, 0.0
    elif low >= 0 and high <= 255:
        scale, offset = 1.0, 0.0
    elif low >= 0 and high <= 65535:
        scale, offset = 255 / 65535, 0.0
    else:
        scale, offset = 255 / max(high - low, 1e-12), low
    out = np.nan_to_num((a - offset) * scale, nan=0.0)
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), "L")


def to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB with its full value range, transparency over ALPHA_BACKGROUND."""
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        return _gray_to_8bit(im).convert("RGB")
    if (im.mode == "P" and "transparency" in im.info) or im.mode == "RGBa":
        im = im.convert("RGBA")  # a palette's transparent entry; premultiplied alpha
    if im.mode in ALPHA_MODES:
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*ALPHA_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


ORIENTATION = 0x0112  # the EXIF tag


class TooManyPixels(DataError):
    """An image over the pixel cap, refused from its header (the decoder skips it)."""


def check_pixels(im: Image.Image, cap: int) -> None:
    w, h = im.size
    if w * h > cap:
        raise TooManyPixels(
            f"{w}x{h} = {w * h:,} pixels, over the limit of {cap:,}; raise it with "
            "--max-pixels N if the image is meant"
        )


def decode_image(path: str, size: int | None, cap: int | None = None) -> np.ndarray:
    """Decode one image file fully -> uint8 [H, W, 3], turned upright by its EXIF
    orientation; resized/cropped when size is given. cap: the pixel cap (config.max_pixels).

    Raises TooManyPixels, or whatever PIL raises for unreadable or truncated files.
    """
    with Image.open(path) as im:
        check_pixels(im, cap or max_pixels())
        if size is not None and im.format == "JPEG":
            w, h = im.size
            scale = size / min(w, h)
            if scale < 1:  # let libjpeg decode at a reduced scale that still covers `size`
                im.draft("RGB", (int(np.ceil(w * scale)), int(np.ceil(h * scale))))
        im.load()
        if im.getexif().get(ORIENTATION, 1) != 1:  # a phone photo taken sideways
            im = ImageOps.exif_transpose(im)
        rgb = to_rgb(im)
    if size is not None:
        rgb = fit_image(rgb, size)
    return np.asarray(rgb, dtype=np.uint8)


@dataclass
class Decoded:
    """Result of decoding a list of files: images uint8 [M, 3, H, W] for the files at `kept`."""

    images: np.ndarray
    kept: np.ndarray  # int64 [M], indices into the input list, ascending
    skipped: list[tuple[str, str]]  # (path, reason) of unreadable files


def default_workers() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(16, cores))


def _decode_chunk(
    paths: Sequence[str], start: int, stop: int, size: int | None, out: np.ndarray
) -> tuple[list[tuple[int, str]], list[tuple[int, tuple[int, int]]]]:
    """Decode paths[start:stop] into out[start:stop]; return (errors, wrong-size files)."""
    errors: list[tuple[int, str]] = []
    mismatched: list[tuple[int, tuple[int, int]]] = []
    expect = out.shape[2:]
    for i in range(start, stop):
        try:
            arr = decode_image(paths[i], size)
        except Exception as exc:
            errors.append((i, f"{type(exc).__name__}: {exc}"))
            continue
        if arr.shape[:2] != expect:
            mismatched.append((i, arr.shape[:2]))
            continue
        out[i] = arr.transpose(2, 0, 1)
    return errors, mismatched


def _bad_file_error(path: str, reason: str) -> DataError:
    return DataError(
        f"cannot decode image {path} ({reason}). Delete or replace the file, or load with "
        "bad_images='skip' to leave unreadable images out."
    )


def _size_mismatch_error(
    first: str, first_hw: Sequence[int], other: str, hw: Sequence[int]
) -> DataError:
    return DataError(
        f"images differ in size: {first} is {first_hw[1]}x{first_hw[0]} but {other} is "
        f"{hw[1]}x{hw[0]} (width x height). Give an image size so that every image is resized "
        "(shorter side) and centre-cropped to it, e.g. --set data.image_size=64."
    )


PROGRESS_FROM = 500  # files: smaller sets decode in about a second, without a bar


def decode_files(
    paths: Sequence[str],
    size: int | None,
    bad_images: str = "skip",
    workers: int | None = None,
) -> Decoded:
    """Decode image files in a thread pool into one preallocated uint8 array.

    size=None keeps the native size, which must then be the same for every file.
    Unreadable files raise DataError (bad_images="fail") or are left out and reported in
    `skipped` (bad_images="skip"; the caller warns).
    """
    check_bad_images(bad_images)
    max_pixels()  # a bad --max-pixels is one error here, not a reason to skip every file
    n = len(paths)
    skipped: dict[int, str] = {}
    first, probe = 0, None
    if size is None:  # the first readable file sets the size
        while first < n:
            try:
                probe = decode_image(paths[first], None)
                break
            except Exception as exc:
                if bad_images == "fail":
                    raise _bad_file_error(paths[first], f"{type(exc).__name__}: {exc}") from exc
                skipped[first] = f"{type(exc).__name__}: {exc}"
                first += 1
    h, w = probe.shape[:2] if probe is not None else (size or 1, size or 1)
    out = np.empty((n, 3, h, w), dtype=np.uint8)
    start = first
    if probe is not None:
        out[first] = probe.transpose(2, 0, 1)
        start += 1
    workers = workers or default_workers()
    remaining = n - start
    step = max(32, min(1024, -(-remaining // (workers * 8)))) if remaining else 1
    mismatched: list[tuple[int, tuple[int, int]]] = []
    shown = progress_bar(total=n, desc="decoding images", unit="img", show=n >= PROGRESS_FROM)
    with shown as bar, ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        bar.update(start)
        sizes = {
            pool.submit(_decode_chunk, paths, s, min(s + step, n), size, out): min(step, n - s)
            for s in range(start, n, step)
        }
        pending = set(sizes)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                errors, wrong = fut.result()
                bar.update(sizes[fut])
                if errors and bad_images == "fail":
                    for p in pending:
                        p.cancel()
                    i, reason = min(errors)
                    raise _bad_file_error(paths[i], reason)
                skipped.update(errors)
                mismatched.extend(wrong)
    if mismatched:
        i, hw = min(mismatched)
        raise _size_mismatch_error(paths[first], (h, w), paths[i], hw)
    kept = np.array([i for i in range(n) if i not in skipped], dtype=np.int64)
    if len(kept) < n:  # compact in place, keeping order
        for j, i in enumerate(kept.tolist()):
            if i != j:
                out[j] = out[i]
        out = out[: len(kept)]
    bad = [(paths[i], skipped[i]) for i in sorted(skipped)]
    return Decoded(out, kept, bad)


def warn_skipped(skipped: list[tuple[str, str]], where: str) -> None:
    """One warning for all unreadable files that were left out."""
    if not skipped:
        return
    shown = "; ".join(f"{p} ({r})" for p, r in skipped[:_SHOWN_BAD])
    more = f"; and {len(skipped) - _SHOWN_BAD} more" if len(skipped) > _SHOWN_BAD else ""
    note(
        f"skipped {len(skipped)} unreadable image file(s) in {where}: {shown}{more}. "
        "Replace or delete them, or use bad_images='fail' to stop at the first one."
    )


# --------------------------------------------------------------------------- decode cache


def cache_root(subfolder: str) -> Path | None:
    """$DEEPCLUST_CACHE/<subfolder> (default ~/.cache/deepclust/<subfolder>); None if DEEPCLUST_NO_CACHE."""
    if os.environ.get("DEEPCLUST_NO_CACHE", "").strip() not in ("", "0"):
        return None
    return Path(os.environ.get("DEEPCLUST_CACHE", "~/.cache/deepclust")).expanduser() / subfolder


def cache_dir() -> Path | None:
    """Where decoded image-file splits are cached; None when DEEPCLUST_NO_CACHE is set."""
    return cache_root("stores")


def cache_key(root: Path, rel_paths: Sequence[str], size: int | None) -> str:
    """Hash of the root, every file's relative path, byte size and mtime, the size and the
    pixel cap (which decides what is skipped)."""
    h = hashlib.sha256()
    h.update(json.dumps([CACHE_VERSION, str(root.resolve()), size, max_pixels()]).encode())
    base = str(root)
    for rel in rel_paths:
        try:
            st = os.stat(os.path.join(base, rel))
        except OSError:  # a broken link: the decoder skips it
            h.update(f"\0{rel}\0broken".encode())
            continue
        h.update(f"\0{rel}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()[:32]


def _read_cache(path: Path) -> Decoded | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            images, kept = z["images"], z["kept"]
            bad = list(zip(z["bad_paths"].tolist(), z["bad_reasons"].tolist(), strict=True))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError):
        return None  # missing or damaged: decode again
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) != len(kept):
        return None
    return Decoded(images, kept.astype(np.int64), bad)


def _write_cache(path: Path, dec: Decoded) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(
                    f,
                    images=dec.images,
                    kept=dec.kept,
                    bad_paths=np.array([p for p, _ in dec.skipped], dtype=str),
                    bad_reasons=np.array([r for _, r in dec.skipped], dtype=str),
                )
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        warnings.warn(
            f"could not write the decoded-image cache {path} ({exc}); the next load will decode "
            "again. Set DEEPCLUST_CACHE to a writable folder, or DEEPCLUST_NO_CACHE=1.",
            stacklevel=3,
        )


def load_image_files(
    root: Path,
    rel_paths: Sequence[str],
    size: int | None,
    bad_images: str = "skip",
    tag: str = "images",
) -> Decoded:
    """Decode root/rel for each rel (cached on disk), warn once about skipped files.

    The cache file is keyed by `cache_key`, so any added, removed or modified file, or a
    different size, gives a fresh decode. Skipped files are remembered in the cache, so a
    cached load warns (or fails, with bad_images="fail") exactly like the first one.
    """
    check_bad_images(bad_images)
    folder = cache_dir()
    target = None
    dec = None
    if folder is not None:
        safe_tag = "".join(c if c.isalnum() or c in "-_." else "_" for c in tag)
        where = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:8]
        prefix = f"{safe_tag}-{where}-{size or 'native'}"
        target = folder / f"{prefix}-{cache_key(root, rel_paths, size)}.npz"
        dec = _read_cache(target)
    if dec is None:
        base = str(root)
        dec = decode_files([os.path.join(base, r) for r in rel_paths], size, bad_images)
        if target is not None and len(dec.kept):
            _write_cache(target, dec)
            for old in target.parent.glob(f"{prefix}-*.npz"):  # same split, older file set
                if old != target:
                    old.unlink(missing_ok=True)
    if dec.skipped and bad_images == "fail":
        raise _bad_file_error(*dec.skipped[0])
    warn_skipped(dec.skipped, str(root))
    return dec


# --------------------------------------------------------------------------- folder listings


# A folder holding config.yaml and one of these is a deepclust run folder (engine/runfolder.py):
# its clusters/ export links back to the photos, so it is never read as photos.
RUN_FOLDER_MARKERS = ("summary.json", ".deepclust.lock", "last.pt", "previous.pt")


def is_run_folder(folder: str | Path) -> bool:
    folder = Path(folder)
    return (folder / "config.yaml").is_file() and any(
        (folder / m).exists() for m in RUN_FOLDER_MARKERS
    )


def _problem(entry: os.DirEntry[str]) -> str | None:
    """Why an entry cannot be read (a dangling or self-looping link), or None."""
    if not entry.is_symlink():  # scandir's own type, no extra system call
        return None
    try:
        os.stat(entry.path)
    except OSError as exc:
        return f"a broken link: {exc.strerror}"
    return None


def _scan(path: str) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """(image file names, sub-folder names, (path, reason) of unreadable entries), sorted;
    hidden names are left out. A broken link with an image name is listed as a file, so the
    decoder skips it with the unreadable images."""
    files, dirs, bad = [], [], []
    with os.scandir(path) as it:
        entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    for e in entries:
        problem = _problem(e)
        if problem is not None and is_image_file(e.name):
            files.append(e.name)
        elif problem is not None:
            bad.append((e.path, problem))
        elif e.is_dir():
            dirs.append(e.name)
        elif e.is_file() and is_image_file(e.name):
            files.append(e.name)
    return files, dirs, bad


def list_images(folder: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """(image files under folder as posix paths relative to it, unreadable entries).

    The tree is walked once by real path: a folder reached again through a link (a loop, a
    second link) is not read again, a file reached twice is listed once, and deepclust's own
    run folders (with their clusters/ exports) are never read. Order is os.walk's, sorted.
    """
    found: list[str] = []
    bad: list[tuple[str, str]] = []
    seen_dirs: set[str] = set()
    seen_files: set[str] = set()
    stack = [(str(folder), "")]
    while stack:
        path, prefix = stack.pop()
        real = os.path.realpath(path)
        if real in seen_dirs or (prefix and is_run_folder(path)):
            continue
        seen_dirs.add(real)
        try:
            files, dirs, unreadable = _scan(path)
        except OSError as exc:
            bad.append((path, f"an unreadable folder: {exc.strerror}"))
            continue
        bad += unreadable
        for f in files:
            if (real_file := os.path.realpath(os.path.join(path, f))) not in seen_files:
                seen_files.add(real_file)
                found.append(prefix + f)
        stack += [(os.path.join(path, d), f"{prefix}{d}/") for d in reversed(dirs)]
    return found, bad


def images_in(folder: Path, recursive: bool = False) -> list[str]:
    """Image files in folder as sorted posix paths relative to it (hidden entries ignored);
    recursive: see list_images, whose unreadable entries get the skip note."""
    if not recursive:
        with os.scandir(folder) as it:
            return sorted(e.name for e in it if is_image_file(e.name) and e.is_file())
    found, bad = list_images(folder)
    warn_skipped(bad, str(folder))
    return found


# Images whose shorter side is below this say nothing about what they show (icons, tracking
# pixels): they are still read and clustered, but never set the stored side of a collection.
MIN_MEANINGFUL_SIDE = 16


def typical_shorter_side(paths: Sequence[str], sample: int = 200) -> int | None:
    """The median shorter side (px) of up to `sample` evenly spaced files, read from their
    headers only (no decoding), leaving out sides below MIN_MEANINGFUL_SIDE (with a note)
    unless all are below it; None when none can be opened."""
    step = max(1, len(paths) // sample)
    sides = []
    for path in paths[::step][:sample]:
        try:
            with Image.open(path) as im:
                sides.append(min(im.size))
        except Exception:  # unreadable files are reported by the decoder
            continue
    meaningful = [s for s in sides if s >= MIN_MEANINGFUL_SIDE] or sides  # all tiny: by design
    if len(meaningful) < len(sides):
        note(
            f"{len(sides) - len(meaningful)} of the {len(sides)} images sampled are smaller than "
            f"{MIN_MEANINGFUL_SIDE} px (shorter side): the stored size ignores them, and they are "
            "read upscaled. Remove them if they are icons or thumbnails rather than photos."
        )
    return int(np.median(meaningful)) if meaningful else None


def class_folders(folder: Path) -> list[str]:
    """Names of the non-hidden sub-folders of folder, sorted."""
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))
