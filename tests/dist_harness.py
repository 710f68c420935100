"""Run a function in N CPU processes joined by torch.distributed (gloo), for tests.

`run_in_processes(fn, n, *args)` spawns n processes, initialises a gloo group in each,
calls fn(rank, *args) and returns the list of per-rank results (picklable values).
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(
    rank: int, n: int, port: int, out_dir: str, fn: Callable[..., Any], args: tuple[Any, ...]
) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(n),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=n)
    try:
        result = fn(rank, *args)
        torch.save(result, os.path.join(out_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


def run_in_processes(fn: Callable[..., Any], n: int, *args: Any) -> list[Any]:
    with tempfile.TemporaryDirectory() as out_dir:
        mp.start_processes(
            _worker, args=(n, _free_port(), out_dir, fn, args), nprocs=n, start_method="spawn"
        )
        return [torch.load(os.path.join(out_dir, f"{r}.pt"), weights_only=False) for r in range(n)]
