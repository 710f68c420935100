from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands(text):
    return [
        line.strip()
        for line in text.splitlines()
        if "python3.11 -m venv" in line and "#" not in line
    ]


def test_ci_runs_exactly_the_readme_test_command():
    readme = _commands((ROOT / "README.md").read_text())
    ci = _commands((ROOT / ".ci" / "run").read_text())
    assert len(readme) == 2 and "deepclust demo" in readme[0] and "pytest" in readme[1]
    assert ci == [readme[1]]


def test_readme_numbers_are_the_benchmarks_json():
    """Every measured number in README.md is rendered from benchmarks/results (no stale copy)."""
    import subprocess
    import sys

    script = ROOT / "benchmarks" / "readme_numbers.py"
    done = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (ROOT / "README.md").read_text().count("<!-- numbers:") == 10
