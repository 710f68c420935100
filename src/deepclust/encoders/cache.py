"""Features of a frozen encoder, extracted once and cached on disk.

The cache key covers the encoder and its weights (`Encoder.identity`), the preprocessing
(mean, std, input size), the view (clean, flipped, or augmented copy j of a seed) and a
fingerprint of the images themselves, so a changed dataset, split or resolution never
reuses stale features. Extraction runs in chunks that are saved as they finish: a killed
extraction resumes from its last complete chunk. When all chunks are there they are joined
into one file, which is read back memory-mapped (encoders/feature_file.py), so memory holds
one chunk at a time however large the collection. Under torch.distributed each process
extracts its share of the chunks into the same folder. Files are safetensors (tensors only,
no code).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from deepclust.data.readers import cache_root
from deepclust.data.store import ImageSet
from deepclust.data.views import CropSpec, ViewGenerator, ViewSpec, batch_generator, eval_images
from deepclust.encoders.base import Encoder
from deepclust.encoders.feature_file import open_mapped, write_from_chunks
from deepclust.engine.distributed import all_reduce_sum, barrier, rank, world_size
from deepclust.engine.machine import load_average
from deepclust.errors import DataError
from deepclust.progress import bar as progress_bar

CHUNK = 2048
# Memory for one extraction batch of a frozen encoder (activations, not the weights); the
# batch is the largest that fits (see extraction_batch_size). DEEPCLUST_EXTRACT_MB overrides.
EXTRACT_BUDGET_MB = 512
# Names the preprocessing algorithm (eval_images: shorter side resized bilinear with
# antialias, centre crop; the view functions below) and the key's layout. Change it when
# either changes, so features computed the old way are never read back.
PREPROCESSING = "v2:resize-shorter-bilinear-antialias,centre-crop"


def images_fingerprint(images: torch.Tensor) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(str(tuple(images.shape)).encode())
    h.update(images.contiguous().numpy().data)  # the buffer itself: no copy of the images
    return h.hexdigest()


def cache_key(encoder: Encoder, kind: str, images: torch.Tensor) -> str:
    """The file name stem of `encoder`'s features of uint8 `images` [N, 3, H, W] under view `kind`."""
    t = encoder.eval_transform()
    desc = f"{PREPROCESSING}|{encoder.identity}|{t.mean}|{t.std}|{t.size}|{kind}|{images_fingerprint(images)}"
    return hashlib.blake2b(desc.encode(), digest_size=16).hexdigest()


def augmentation_spec(encoder: Encoder, image_size: int) -> ViewSpec:
    """The augmented copies for frozen training: a SimCLR-style crop at the encoder's resolution."""
    crop = CropSpec(
        count=1,
        size=encoder.input_size or image_size,
        scale=(0.2, 1.0),
        jitter_p=0.8,
        grayscale_p=0.2,
    )
    return ViewSpec((crop,), mean=encoder.mean, std=encoder.std)  # type: ignore[arg-type]


def view_function(
    encoder: Encoder, kind: str, image_size: int
) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """(uint8 batch, batch index) -> normalised encoder input, for kind 'clean', 'flip' or 'aug<j>-s<seed>'."""
    transform = encoder.eval_transform()
    if kind == "clean":
        return lambda x, i: eval_images(x, transform)
    if kind == "flip":
        return lambda x, i: eval_images(x.flip(-1), transform)
    copy, seed = (int(p) for p in kind[3:].split("-s"))
    views = ViewGenerator(augmentation_spec(encoder, image_size))
    return lambda x, i: views(x, batch_generator(seed, -1 - copy, i))[0]


@torch.no_grad()
def extract_features(
    encoder: Encoder,
    images: ImageSet,
    kind: str = "clean",
    device: torch.device | str = "cpu",
    batch_size: int = 256,
    autocast_dtype: torch.dtype | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """Features [N, D] (float32, CPU) of `images` under view `kind`, from the cache when present.

    With a cache, the features come back memory-mapped from its file (nothing is copied into
    memory until read). Under torch.distributed each process extracts every world-th chunk
    into the shared cache folder and rank 0 joins them; every process then maps the file.
    """
    job = _Extraction(encoder, images, kind, torch.device(device), batch_size, autocast_dtype)
    folder = cache_root("features")
    if folder is None:
        return job.in_memory(progress)
    key = cache_key(encoder, kind, images.images)
    target, partial = folder / f"{key}.safetensors", folder / f"{key}.partial"
    # another run extracting the same features holds the key's lock: wait for its file
    with _KeyLock(folder / f".{key}.lock", rank() == 0) as lock:
        barrier()
        if not target.exists():
            features = _extract_to_cache(job, target, partial, progress)
            if features is not None:
                return features
        lock.done = True
    return open_mapped(target, "features")


def _extract_to_cache(
    job: _Extraction, target: Path, partial: Path, progress: bool
) -> torch.Tensor | None:
    """Extract into chunk files and join them into target; None when that worked, else the
    features held in memory (the cache could not be written, e.g. a full disk: one warning)."""
    n = len(job.images)
    share = chunk_share(n, rank(), world_size())
    ok = _writable(partial) and job.to_files(partial, share, progress)
    if not _all_saved(ok):
        return job.in_memory(progress)
    files = _chunk_files(partial, n)  # every process checks: all fail together
    merged = rank() != 0 or _try_merge(job, files, target)
    if not _all_saved(merged):  # the chunks stay: a later run joins them without extracting
        return read_chunks(files, job.encoder.feature_dim)
    if rank() == 0:
        shutil.rmtree(partial, ignore_errors=True)
    barrier()
    return None


def _try_merge(job: _Extraction, files: list[Path], target: Path) -> bool:
    """job.merge, or False with one warning naming the file and the space it needs."""
    try:
        job.merge(files, target)
    except OSError as e:
        need = len(job.images) * job.encoder.feature_dim * 4
        _warn_no_cache(target, e, need, f"the extracted chunks stay in {files[0].parent}")
        return False
    return True


def read_chunks(files: list[Path], dim: int) -> torch.Tensor:
    """The features of chunk files, joined in memory."""
    parts = [load_file(str(f))["features"] for f in files]
    return torch.cat(parts) if parts else torch.empty(0, dim)


class _KeyLock:
    """An flock on a cache key's lock file, held while its features are extracted, so that a
    second run waits for the first one's file instead of extracting the same chunks. The
    kernel releases it when the holder dies (a killed run's lock is never stale). Without
    flock (some network file systems), or when `take` is False, it does nothing."""

    def __init__(self, path: Path, take: bool) -> None:
        self.path, self.take, self.fd, self.done = path, take, None, False

    def __enter__(self) -> _KeyLock:
        if not self.take:
            return self
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self.fd, fcntl.LOCK_EX)  # waits while another run extracts
        except OSError:  # no flock here, or an unwritable folder: run unlocked
            self._close()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None and self.done:
            self.path.unlink(missing_ok=True)  # its file exists: later runs need no lock
        self._close()

    def _close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def chunk_share(n: int, rank: int, world: int) -> list[int]:
    """The chunk indices (CHUNK rows each) of n rows that process `rank` of `world` extracts."""
    return list(range(rank, -(-n // CHUNK), world))


def _all_saved(ok: bool) -> bool:
    """True when every process saved all its chunks (a process whose cache folder is not
    writable, or not the one the others see, makes every process fall back together)."""
    failed = all_reduce_sum(torch.tensor([0 if ok else 1]))
    return int(failed) == 0


class _Extraction:
    """Features of one ImageSet under one view, chunk by chunk (CHUNK rows each)."""

    def __init__(
        self,
        encoder: Encoder,
        images: ImageSet,
        kind: str,
        device: torch.device,
        batch_size: int,
        autocast_dtype: torch.dtype | None,
    ) -> None:
        self.encoder, self.images, self.kind, self.device = encoder, images, kind, device
        self.batch_size, self.autocast_dtype = batch_size, autocast_dtype
        self.make_input = view_function(encoder, kind, images.image_size[0])
        self.micro = 0  # encoder batch within the memory budget, set from the first input
        self.layout = torch.contiguous_format
        self.load_start = load_average()

    @contextmanager
    def running(self, total: int, progress: bool, done: int = 0) -> Iterator[Any]:
        """The encoder in eval mode and its fast layout, and a progress bar (images/s, time left)."""
        bar = progress_bar(
            total=total, desc=f"features ({self.kind})", unit="img", show=progress, initial=done
        )
        self.encoder = self.encoder.to(self.device).eval()
        with fast_layout(self.encoder) as self.layout:
            try:
                yield bar
            finally:
                bar.close()

    def chunk(self, c: int, bar: Any) -> torch.Tensor:
        """Features [<=CHUNK, D] of rows c*CHUNK.. (the batch index keys augmented views)."""
        n, bs = len(self.images), self.batch_size
        start, stop = c * CHUNK, min((c + 1) * CHUNK, n)
        outs = []
        for b in range(start, stop, bs):
            x = self.make_input(self.images.images[b : min(b + bs, stop)].to(self.device), b // bs)
            x = x.contiguous(memory_format=self.layout)
            self.micro = self.micro or extraction_batch_size(self.encoder, x[:1], bs)
            outs += _encode(self.encoder, x, self.micro, self.autocast_dtype, bar)
        return torch.cat(outs)

    def in_memory(self, progress: bool) -> torch.Tensor:
        """Every chunk in this process, held in memory (no cache to write)."""
        n = len(self.images)
        with self.running(n, progress) as bar:
            parts = [self.chunk(c, bar) for c in range(-(-n // CHUNK))]
        return torch.cat(parts) if parts else torch.empty(0, self.encoder.feature_dim)

    def to_files(self, partial: Path, chunks: list[int], progress: bool) -> bool:
        """Extract `chunks` into partial/<c>.safetensors, skipping those a killed run saved;
        False when a file could not be written."""
        n = len(self.images)
        todo = [
            c for c in chunks if not _chunk_ok(_chunk_path(partial, c), min(CHUNK, n - c * CHUNK))
        ]
        world = world_size()
        done = sum(min(CHUNK, n - c * CHUNK) for c in chunks if c not in todo)
        shown = progress and rank() == 0
        with self.running(-(-n // world) if world > 1 else n, shown, done) as bar:
            for c in todo:
                t0 = time.perf_counter()
                features = self.chunk(c, bar)
                info = {"seconds": f"{time.perf_counter() - t0:.3f}"}
                if not _try_save({"features": features}, _chunk_path(partial, c), info):
                    return False
        return True

    def merge(self, files: list[Path], target: Path) -> None:
        """Join the chunk files into target (streamed, never all in memory)."""
        n = len(self.images)
        info = {
            "seconds": f"{sum(float(_metadata(f).get('seconds', 'nan')) for f in files):.3f}",
            "device": str(self.device),
            "threads": str(torch.get_num_threads()),
            "processes": str(world_size()),
            "batch_size": str(self.batch_size),
            "encoder_batch": str(self.micro),  # what ran at once: the memory budget's batch
            "loadavg_start": self.load_start,
            "loadavg_end": load_average(),
        }
        write_from_chunks(target, "features", files, (n, self.encoder.feature_dim), metadata=info)


def _chunk_files(partial: Path, n: int) -> list[Path]:
    """The chunk files of n rows, or a one-line error naming those this process cannot see."""
    files = [_chunk_path(partial, c) for c in range(-(-n // CHUNK))]
    missing = [f.name for f in files if not f.exists()]
    if missing:
        raise DataError(
            f"feature chunks {', '.join(missing[:3])} are missing from {partial}: every "
            "process must see the same cache folder. Set DEEPCLUST_CACHE to a folder "
            "that all nodes share."
        )
    return files


def _chunk_ok(path: Path, rows: int) -> bool:
    """Whether a saved chunk file holds its rows; a damaged one is removed (extracted again)."""
    if not path.exists():
        return False
    try:
        with safe_open(str(path), framework="pt") as f:
            if f.get_slice("features").get_shape()[0] == rows:
                return True
    except (OSError, SafetensorError):
        pass
    path.unlink(missing_ok=True)
    return False


def _chunk_path(partial: Path, c: int) -> Path:
    return partial / f"{c:05d}.safetensors"


def _encode(
    encoder: Encoder, x: torch.Tensor, micro: int, autocast_dtype: torch.dtype | None, bar: Any
) -> list[torch.Tensor]:
    """Encoder inputs [b, ...] -> features, float32 on the CPU, in encoder batches of `micro`
    (the progress bar moves after each)."""
    amp = autocast_dtype is not None
    out = []
    for part in x.split(micro):
        with torch.autocast(x.device.type, dtype=autocast_dtype, enabled=amp):
            out.append(encoder(part).float().cpu())
        bar.update(part.shape[0])
    return out


@contextmanager
def fast_layout(encoder: Encoder) -> Iterator[torch.memory_format]:
    """Run a convolutional encoder in channels_last while extracting (EfficientNet-Lite2 at
    224 px: about 1.4x faster on 2 CPU cores; the same features up to float rounding); its
    contiguous layout is restored afterwards, even on an error. Others stay contiguous."""
    has_conv = any(isinstance(m, torch.nn.Conv2d) for m in encoder.modules())
    layout = torch.channels_last if has_conv else torch.contiguous_format
    encoder.to(memory_format=layout)
    try:
        yield layout
    finally:
        encoder.to(memory_format=torch.contiguous_format)


@torch.no_grad()
def activation_bytes_per_image(encoder: Encoder, one_input: torch.Tensor) -> int:
    """Peak activation memory of one input [1, ...] through `encoder`, estimated as three
    times its largest module output (a block's input, output and a residual alive at once)."""
    largest = [one_input.numel() * one_input.element_size()]

    def hook(_module: torch.nn.Module, _inp: object, out: object) -> None:
        if isinstance(out, torch.Tensor):
            largest[0] = max(largest[0], out.numel() * out.element_size())

    handles = [m.register_forward_hook(hook) for m in encoder.modules()]
    try:
        encoder(one_input)
    finally:
        for h in handles:
            h.remove()
    return 3 * largest[0]


def extraction_batch_size(encoder: Encoder, one_input: torch.Tensor, requested: int) -> int:
    """The largest encoder batch up to `requested` whose activations fit the memory budget
    (EXTRACT_BUDGET_MB, or DEEPCLUST_EXTRACT_MB)."""
    budget = int(os.environ.get("DEEPCLUST_EXTRACT_MB", EXTRACT_BUDGET_MB)) * 2**20
    per_image = activation_bytes_per_image(encoder, one_input)
    return max(1, min(requested, budget // max(per_image, 1)))


def extraction_info(
    encoder: Encoder, images: ImageSet, kind: str = "clean"
) -> dict[str, str] | None:
    """How the cached features were extracted (wall seconds, device, threads, batch size,
    /proc/loadavg at start and end), or None when they are not cached."""
    folder = cache_root("features")
    if folder is None:
        return None
    path = folder / f"{cache_key(encoder, kind, images.images)}.safetensors"
    return _metadata(path) if path.exists() else None


def _metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def save_atomic(
    tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None
) -> None:
    """Write a safetensors file so that readers see the old file or the whole new one."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _warn_no_cache(
    path: Path, error: Exception, need: int | None = None, kept: str | None = None
) -> None:
    """One warning: the cache file that could not be written, why, and (a full disk) the
    space it needs; extraction goes on in memory."""
    why = getattr(error, "strerror", None) or str(error)
    problem = f"is not writable ({path}: {why})"
    if getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT) and need is not None:
        free = shutil.disk_usage(path.parent).free if path.parent.exists() else 0
        problem = f"is full: {path} needs {_size(need)}, {_size(free)} are free ({why})"
    more = f"; {kept}" if kept else ""
    warnings.warn(
        f"the feature cache {path.parent} {problem}; running without it{more}, so features "
        "are extracted again next time. Free space or set DEEPCLUST_CACHE to a writable "
        "folder, or DEEPCLUST_NO_CACHE=1.",
        stacklevel=4,
    )


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 // 10 else f"{-(-n // 1024)} KB"


def _writable(folder: Path) -> bool:
    """Create a cache folder; False (with a warning) when that is not possible."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        _warn_no_cache(folder / ".", e)
        return False
    return True


def _try_save(
    tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None
) -> bool:
    """save_atomic, or False with a warning when the cache cannot be written (full, read-only)."""
    try:
        save_atomic(tensors, path, metadata)
    except (OSError, SafetensorError) as e:  # safetensors reports I/O errors as its own
        _warn_no_cache(path, e, sum(t.numel() * t.element_size() for t in tensors.values()))
        return False
    return True
