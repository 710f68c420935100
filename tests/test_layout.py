"""The tree tells the truth about its layers, and no function is too long to read.

Layers, lowest first: errors/config/registry/progress -> data, encoders, engine (the
runtime the methods may use: collectives, checkpoints, sampler, schedule, frozen-feature
views; data and encoders use its leaf modules transfer and machine) -> losses -> methods
-> evaluation -> training (the loop) -> api -> practice (the verbs on a folder of photos)
-> cli. A package never imports one above it
(checked on the import statements, so a lazy import inside a function counts too).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "deepclust"
MAX_FUNCTION_LINES = 80


# package -> the deepclust packages/modules it must never import
FORBIDDEN = {
    "data": ("encoders", "losses", "methods", "evaluation", "training", "api", "practice"),
    "encoders": ("losses", "methods", "evaluation", "training", "api", "practice"),
    "engine": ("losses", "methods", "evaluation", "training", "api", "cli", "practice"),
    "cluster": ("methods", "evaluation", "training", "api", "cli", "practice"),
    "losses": ("data", "encoders", "methods", "evaluation", "training", "api", "cli"),
    "methods": ("evaluation", "training", "api", "cli", "practice"),
    "evaluation": ("training", "api", "cli", "practice"),
    "training": ("api", "cli", "practice", "choose_k"),
    "api": ("cli", "practice"),
    "practice": ("cli",),
}


def imported_modules(path: Path) -> set[str]:
    """Every deepclust module a file imports (top level or inside functions), without the prefix."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found |= {n.removeprefix("deepclust.") for n in names if n.startswith("deepclust.")}
    return found


def function_lengths(root: Path = SRC) -> list[tuple[str, int]]:
    """(file:qualified name, lines) of every function under root, longest first."""
    found = []
    for path in sorted(root.rglob("*.py")):
        stack: list[tuple[ast.AST, str]] = [(ast.parse(path.read_text()), "")]
        while stack:
            node, prefix = stack.pop()
            for child in ast.iter_child_nodes(node):
                name = prefix
                if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    name = f"{prefix}{child.name}."
                    if not isinstance(child, ast.ClassDef):
                        lines = child.end_lineno - child.lineno + 1  # type: ignore[operator]
                        found.append((f"{path.relative_to(root)}:{name[:-1]}", lines))
                stack.append((child, name))
    return sorted(found, key=lambda item: -item[1])


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_package_imports_a_layer_above_it(package: str) -> None:
    files = [SRC / f"{package}.py"] if (SRC / f"{package}.py").is_file() else []
    files += sorted((SRC / package).rglob("*.py")) if (SRC / package).is_dir() else []
    assert files, package
    wrong = [
        f"{path.relative_to(SRC)} imports deepclust.{module}"
        for path in files
        for module in sorted(imported_modules(path))
        if any(module == f or module.startswith(f + ".") for f in FORBIDDEN[package])
    ]
    assert not wrong, wrong


def test_no_function_is_80_lines_or_longer() -> None:
    too_long = [(name, n) for name, n in function_lengths() if n >= MAX_FUNCTION_LINES]
    assert not too_long, too_long


def test_the_import_walker_sees_lazy_imports(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from deepclust.api import train\n    import deepclust.cli\n")
    assert imported_modules(module) == {"api", "api.train", "cli"}
    module.write_text(
        "import matplotlib.pyplot\nfrom typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import jinja2\ndef f():\n    import jinja2\n"
    )
    assert module_level_imports(module) == {"matplotlib", "typing"}


def test_every_report_section_is_a_template_and_a_function() -> None:
    from deepclust.evaluation import report

    templates = SRC / "evaluation" / "templates" / "report"
    for name, build in report.PAGE:
        assert (templates / f"{name}.html.j2").is_file(), name
        assert build.__name__ == f"section_{name}", name


def module_level_imports(path: Path) -> set[str]:
    """Top-level modules a file imports when it is loaded (not inside functions, classes or
    an `if TYPE_CHECKING:` block)."""
    found: set[str] = set()
    stack = list(ast.parse(path.read_text()).body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack += node.orelse
        elif isinstance(node, ast.If | ast.Try | ast.With):
            stack += [n for n in ast.iter_child_nodes(node) if isinstance(n, ast.stmt)]
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_plotting_and_templating_load_only_when_a_report_is_drawn() -> None:
    """No module imports matplotlib or Jinja2 at load time, so no command start-up pays for them."""
    eager = [
        f"{path.relative_to(SRC)}: {module}"
        for path in sorted(SRC.rglob("*.py"))
        for module in sorted(module_level_imports(path) & {"matplotlib", "jinja2"})
    ]
    assert not eager, eager
