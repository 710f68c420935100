"""The equivalence scripts (benchmarks/equivalence/) skip cleanly without the authors' code.

CI has no checkout of the authors' repositories: each script then prints one line saying
it skipped and exits 0 (docs/fidelity.md, "Checked against the authors' code").
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "benchmarks" / "equivalence").glob("*.py"))
METHOD_SCRIPTS = [p for p in SCRIPTS if p.name != "common.py"]


def test_there_is_one_script_per_method():
    names = {p.stem for p in METHOD_SCRIPTS}
    assert {"concurl", "sic"} <= names, names


@pytest.mark.parametrize("script", METHOD_SCRIPTS, ids=lambda p: p.stem)
def test_equivalence_script_skips_in_one_line_without_official(script):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and "skipped" in lines[0], result.stdout
    assert result.stderr.strip() == "", result.stderr
