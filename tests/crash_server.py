"""A forking training server for test_crash.py: Python and torch start once, not per run.

Reads one JSON job a line, {"argv": [...], "kill_after": seconds or null}; forks a child
that runs `deepclust <argv>`; with kill_after, SIGKILLs the child that many seconds after
its training set-up is done (config.yaml written), unless it has ended. Prints the child's
exit code (-9: killed) a line. Only this process reaps its children, so a pid it kills is
always its own child.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import warnings
from pathlib import Path

import toy_method  # noqa: F401 - registers the test-only method "toy" (tests/ is sys.path[0])
from deepclust.cli import main


def _ended(pid: int) -> int | None:
    """The child's exit code once it has ended (reaped), else None."""
    done, status = os.waitpid(pid, os.WNOHANG)
    return os.waitstatus_to_exitcode(status) if done else None


def _started(out: Path, since: float) -> bool:
    config = out / "config.yaml"
    try:
        return config.stat().st_mtime >= since
    except FileNotFoundError:
        return False


def run_job(argv: list[str], kill_after: float | None) -> int:
    """Run one training in a child; kill it kill_after seconds into its epochs."""
    out = Path(argv[argv.index("--out") + 1])
    since = time.time() - 0.05
    pid = os.fork()
    if pid == 0:
        warnings.simplefilter("ignore")
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)  # stdout is the server's answer channel
        os.dup2(devnull, 2)
        os._exit(main(argv))
    if kill_after is not None:
        while not _started(out, since):
            if (code := _ended(pid)) is not None:
                return code
            time.sleep(0.002)
        deadline = time.time() + kill_after
        while time.time() < deadline:
            if (code := _ended(pid)) is not None:
                return code
            time.sleep(0.002)
        os.kill(pid, signal.SIGKILL)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def serve() -> None:
    for line in sys.stdin:
        job = json.loads(line)
        print(run_job(job["argv"], job.get("kill_after")), flush=True)


if __name__ == "__main__":
    serve()
