"""One safetensors file of features, written from chunk files and read memory-mapped.

The format is safetensors' own (an 8-byte little-endian header length, a JSON header naming
each tensor's dtype, shape and byte offsets, then the raw little-endian bytes), so
safetensors.torch.load_file reads these files like any other. Writing streams the chunks'
bytes one after another, and reading maps the file instead of loading it, so neither holds
more than one chunk of features in memory however many rows there are.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

_DTYPES = {torch.float32: ("F32", np.float32), torch.float16: ("F16", np.float16)}
_NUMPY_OF = {name: dtype for name, dtype in _DTYPES.values()}
_TORCH_OF = {name: dtype for dtype, (name, _) in _DTYPES.items()}


def write_from_chunks(
    target: Path,
    name: str,
    chunks: list[Path],
    shape: tuple[int, int],
    dtype: torch.dtype = torch.float32,
    metadata: dict[str, str] | None = None,
) -> None:
    """Concatenate tensor `name` of each chunk file (rows in order) into one safetensors file
    holding `name` [N, D]; atomic (readers see no file or the whole file)."""
    code, _ = _DTYPES[dtype]
    nbytes = shape[0] * shape[1] * torch.finfo(dtype).bits // 8
    header: dict[str, object] = {
        name: {"dtype": code, "shape": list(shape), "data_offsets": [0, nbytes]}
    }
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    written = 0
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(raw)) + raw)
            for chunk in chunks:
                part = load_file(str(chunk))[name].to(dtype).contiguous()
                f.write(part.numpy().tobytes())
                written += part.numel() * part.element_size()
            f.flush()
            os.fsync(f.fileno())
        if written != nbytes:
            raise ValueError(f"the chunks of {target.name} hold {written} bytes, not {nbytes}")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def open_mapped(path: Path, name: str) -> torch.Tensor:
    """Tensor `name` of a safetensors file, memory-mapped copy-on-write: pages are read when
    touched, and writes to the tensor stay in this process (the file never changes)."""
    with open(path, "rb") as f:
        length = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(length))
    info = header[name]
    begin, end = info["data_offsets"]
    if begin == end:  # an empty tensor: nothing to map
        return torch.empty(info["shape"], dtype=_TORCH_OF[info["dtype"]])
    array = np.memmap(
        path,
        dtype=_NUMPY_OF[info["dtype"]],
        mode="c",
        offset=8 + length + begin,
        shape=tuple(info["shape"]),
    )
    return torch.from_numpy(array)
