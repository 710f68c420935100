"""Decoded image files on disk, memory-mapped: the store of a collection too large for memory.

`load_image_files` (readers) decodes every file into one in-memory uint8 array. When that
array would take more than STORE_SHARE of the memory available now (MemAvailable), image
files are instead decoded chunk by chunk (CHUNK files, in readers' thread pool) and
appended to one raw uint8 file under the decode cache, which is then memory-mapped: the
process holds one chunk of decoded images at a time, and training or extraction reads
pages of the file as it needs them (the kernel keeps what fits in its page cache).

A killed decode resumes at its last complete chunk: after each chunk the file is flushed
and a small JSON record (files done, files kept, files skipped) is replaced atomically.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deepclust.data import readers
from deepclust.errors import DataError
from deepclust.progress import bar as progress_bar

STORE_SHARE = 0.25  # of MemAvailable an in-memory uint8 store may take
# Files decoded, then written, at a time: below readers.PROGRESS_FROM, so that each chunk's
# decode shows no bar of its own inside the store's bar.
CHUNK = 496
_ENV_BUDGET = "DEEPCLUST_STORE_MB"  # the in-memory budget in MiB instead of STORE_SHARE


def available_memory() -> int:
    """Bytes of memory available now (/proc/meminfo MemAvailable; 4 GiB where unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 * 2**30


def memory_budget() -> int:
    """Bytes an in-memory store may take: DEEPCLUST_STORE_MB, else STORE_SHARE of MemAvailable."""
    env = os.environ.get(_ENV_BUDGET, "").strip()
    return int(float(env) * 2**20) if env else int(STORE_SHARE * available_memory())


def store_bytes(count: int, side: int) -> int:
    return count * 3 * side * side


def on_disk(count: int, size: int | None) -> bool:
    """True when `count` images stored at `size` px would not fit the in-memory budget;
    then they need the decode cache folder (one-line error without it). Native sizes (size
    None: array datasets and same-size folders) stay in memory."""
    if size is None or store_bytes(count, size) <= memory_budget():
        return False
    if readers.cache_dir() is None:
        raise DataError(
            f"{count:,} images at {size} px need {store_bytes(count, size) / 2**30:.2f} GiB, more "
            f"than the {memory_budget() / 2**30:.2f} GiB that fits in memory now: unset "
            "DEEPCLUST_NO_CACHE so they are decoded to disk, or give a smaller image size."
        )
    return True


def load_image_files(
    root: Path, rel_paths: Sequence[str], size: int, bad_images: str = "skip", tag: str = "images"
) -> readers.Decoded:
    """Decode root/rel for each rel into a memory-mapped on-disk store (resumable; see the
    module docstring); images of the result are uint8 [M, 3, size, size], copy-on-write."""
    readers.check_bad_images(bad_images)
    folder = readers.cache_dir()
    assert folder is not None, "on_disk() refuses to run without a cache folder"
    key = readers.cache_key(root, rel_paths, size)
    safe_tag = "".join(c if c.isalnum() or c in "-_." else "_" for c in tag)
    store = folder / f"{safe_tag}-{size}-{key}.disk"
    store.mkdir(parents=True, exist_ok=True)
    state = _read_state(store)
    if not state.get("complete"):
        paths = [os.path.join(str(root), r) for r in rel_paths]
        state = _decode_into(store, state, paths, size, bad_images)
    skipped = [(p, r) for p, r in state["skipped"]]
    if skipped and bad_images == "fail":
        raise readers._bad_file_error(*skipped[0])
    readers.warn_skipped(skipped, str(root))
    kept = np.asarray(state["kept"], dtype=np.int64)
    shape = (len(kept), 3, size, size)
    images = (
        np.memmap(store / "images.u8", dtype=np.uint8, mode="c", shape=shape)
        if len(kept)
        else np.empty(shape, np.uint8)
    )
    return readers.Decoded(images, kept, skipped)


def _read_state(store: Path) -> dict:
    try:
        return json.loads((store / "state.json").read_text())
    except (OSError, ValueError):
        return {"done": 0, "kept": [], "skipped": []}


def _write_state(store: Path, state: dict) -> None:
    tmp = store / f".state.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(state))
    os.replace(tmp, store / "state.json")


def _decode_into(store: Path, state: dict, paths: list[str], size: int, bad_images: str) -> dict:
    """Append the decoded chunks after state["done"] files to store/images.u8, recording each."""
    per_image = store_bytes(1, size)
    n = len(paths)
    shown = progress_bar(
        total=n, desc="decoding images to disk", unit="img", initial=state["done"], leave=True
    )
    with open(store / "images.u8", "ab") as f, shown as bar:
        f.truncate(len(state["kept"]) * per_image)  # drop a chunk a kill left half-written
        for start in range(state["done"], n, CHUNK):
            stop = min(start + CHUNK, n)
            dec = readers.decode_files(paths[start:stop], size, bad_images)
            f.write(np.ascontiguousarray(dec.images).tobytes())
            f.flush()
            os.fsync(f.fileno())
            state["kept"] += (dec.kept + start).tolist()
            state["skipped"] += [list(s) for s in dec.skipped]
            state["done"] = stop
            _write_state(store, state)
            bar.update(stop - start)
    state["complete"] = True
    _write_state(store, state)
    return state
