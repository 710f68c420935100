"""Decoded image files on disk, memory-mapped: the store of a collection too large for memory.

`load_image_files` (readers) decodes every file into one in-memory uint8 array. When that
array would take more than STORE_SHARE of the memory available now (MemAvailable), image
files are instead decoded chunk by chunk (CHUNK files, in readers' thread pool) into one
raw uint8 file under the decode cache, which is then memory-mapped: the
process holds one chunk of decoded images at a time, and training or extraction reads
pages of the file as it needs them (the kernel keeps what fits in its page cache).

Each chunk is written to its own file with a small JSON record of the files it kept and
skipped (both atomic), then the chunks are joined into one file: a killed decode resumes
at the chunks without a record. Under torch.distributed process r decodes chunks r, r+W, ...
and rank 0 joins them (all processes must see the same cache folder).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deepclust.data import readers
from deepclust.engine.distributed import barrier, rank, world_size
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
    """Decode root/rel for each rel into a memory-mapped on-disk store (resumable, and shared
    out over torch.distributed processes; see the module docstring); images of the result are
    uint8 [M, 3, size, size], copy-on-write."""
    readers.check_bad_images(bad_images)
    folder = readers.cache_dir()
    assert folder is not None, "on_disk() refuses to run without a cache folder"
    key = readers.cache_key(root, rel_paths, size)
    safe_tag = "".join(c if c.isalnum() or c in "-_." else "_" for c in tag)
    store = folder / f"{safe_tag}-{size}-{key}.disk"
    store.mkdir(parents=True, exist_ok=True)
    if not (store / "state.json").exists():
        paths = [os.path.join(str(root), r) for r in rel_paths]
        chunks = -(-len(paths) // CHUNK)
        _decode_chunks(store, paths, range(rank(), chunks, world_size()), size, bad_images)
        barrier()
        _check_chunks(store, chunks)  # every process checks: all fail together
        if rank() == 0:
            _join(store, chunks, size)
        barrier()
    state = json.loads((store / "state.json").read_text())
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


def _replace(path: Path, data: bytes) -> None:
    """Write path so that readers see no file or the whole file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _decode_chunks(store: Path, paths: list[str], mine: range, size: int, bad_images: str) -> None:
    """Decode chunks `mine` (CHUNK files each) into store/<c>.u8 with <c>.json (the files
    kept and skipped) written after it: a chunk with its .json is complete, so a killed
    decode resumes at the chunks without one."""
    todo = [c for c in mine if not (store / f"{c:06d}.json").exists()]
    done = sum(min(CHUNK, len(paths) - c * CHUNK) for c in mine if c not in todo)
    total = sum(min(CHUNK, len(paths) - c * CHUNK) for c in mine)
    shown = progress_bar(
        total=total, desc="decoding images to disk", unit="img", initial=done, show=rank() == 0
    )
    with shown as bar:
        for c in todo:
            start = c * CHUNK
            dec = readers.decode_files(paths[start : start + CHUNK], size, bad_images)
            _replace(store / f"{c:06d}.u8", np.ascontiguousarray(dec.images).tobytes())
            record = {
                "kept": (dec.kept + start).tolist(),
                "skipped": [list(s) for s in dec.skipped],
            }
            _replace(store / f"{c:06d}.json", json.dumps(record).encode())
            bar.update(len(paths[start : start + CHUNK]))


def _check_chunks(store: Path, chunks: int) -> None:
    """A one-line error naming the decoded chunks this process cannot see."""
    missing = [f"{c:06d}.json" for c in range(chunks) if not (store / f"{c:06d}.json").exists()]
    if missing:
        raise DataError(
            f"decoded chunks {', '.join(missing[:3])} are missing from {store}: every process "
            "must see the same cache folder. Set DEEPCLUST_CACHE to a folder all nodes share."
        )


def _join(store: Path, chunks: int, size: int) -> None:
    """Concatenate the chunk files into store/images.u8 and write state.json (the store is
    complete when it exists); the chunk files are removed."""
    state: dict[str, list] = {"kept": [], "skipped": []}
    tmp = store / f".images.u8.tmp-{os.getpid()}"
    with open(tmp, "wb") as out:
        for c in range(chunks):
            record = json.loads((store / f"{c:06d}.json").read_text())
            with open(store / f"{c:06d}.u8", "rb") as part:
                shutil.copyfileobj(part, out, 64 * 2**20)
            state["kept"] += record["kept"]
            state["skipped"] += record["skipped"]
        out.flush()
        os.fsync(out.fileno())
    if tmp.stat().st_size != store_bytes(len(state["kept"]), size):
        raise DataError(f"the decoded chunks in {store} are damaged: delete the folder.")
    os.replace(tmp, store / "images.u8")
    _replace(store / "state.json", json.dumps(state).encode())
    for c in range(chunks):
        (store / f"{c:06d}.u8").unlink(missing_ok=True)
        (store / f"{c:06d}.json").unlink(missing_ok=True)
