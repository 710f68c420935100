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
