"""Dependencies point one way: primitives -> runs -> experiments -> plots -> panels (see DESIGN.md).

Every module of the package is parsed (``ast``, nothing is imported) and each of its imports,
at any depth of the code, is checked against the layer rules below.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "workbench"
WIDGETS = {"ipywidgets", "plotly", "matplotlib", "IPython"}

# layer -> what it may never import (package layers by their first name under workbench, or top-level libraries)
FORBIDDEN = {
    "primitives": {"runs", "experiments", "plots", "panels"} | WIDGETS,
    "runs": {"experiments", "plots", "panels"} | WIDGETS,
    "experiments": {"panels", "ipywidgets", "plotly", "matplotlib", "IPython"},
    "plots": {"panels", "ipywidgets", "runs", "experiments"},
    "panels": set(),
}


def layer_of(module: str) -> str:
    """``workbench.experiments.scratch`` -> ``experiments``; every module not named in FORBIDDEN is a primitive."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in FORBIDDEN else "primitives"


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path = PACKAGE) -> list[tuple[int, str]]:
    """``(line, absolute module name)`` for every import statement in the file, relative ones resolved."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join([*base, node.module] if node.module else base)
            # `from . import data` names a module: count each imported name as a possible submodule
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names] if not node.module else []
            found.append((node.lineno, target))
    return found


def violations(path: Path, root: Path = PACKAGE) -> list[str]:
    """The offending imports of one file, each as ``file:line: layer imports target (layer)``."""
    layer = layer_of(module_name(path, root))
    out = []
    for line, target in imports_of(path, root):
        top = target.split(".")[0]
        kind = layer_of(target) if top == "workbench" else top
        if kind in FORBIDDEN[layer]:
            out.append(f"{path.relative_to(root.parent)}:{line}: {layer} module imports {target} ({kind})")
    return out


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=[module_name(p) for p in MODULES])
def test_every_import_points_down_the_layers(path):
    bad = violations(path)
    assert not bad, "imports against the layering (primitives -> runs -> experiments -> plots -> panels):\n" + \
        "\n".join(bad)


def test_the_check_sees_every_layer_and_names_an_offending_import(tmp_path):
    assert {layer_of(module_name(p)) for p in MODULES} == set(FORBIDDEN)
    fake = tmp_path / "workbench"
    (fake / "experiments").mkdir(parents=True)
    lesson = fake / "experiments" / "lesson.py"
    lesson.write_text("import torch\nfrom ..runs import Run\n\ndef f():\n    from ..panels.base import Panel\n"
                      "    import plotly.express\n")
    assert violations(lesson, fake) == [
        "workbench/experiments/lesson.py:5: experiments module imports workbench.panels.base (panels)",
        "workbench/experiments/lesson.py:6: experiments module imports plotly.express (plotly)",
    ]
    primitive = fake / "freezing.py"
    primitive.write_text("from .runs import Run\nfrom . import plots\nfrom .layers import numbered_layers\n")
    assert [v.split(": ", 1)[1] for v in violations(primitive, fake)] == [
        "primitives module imports workbench.runs (runs)",
        "primitives module imports workbench.plots (plots)",
    ]
    runs = fake / "runs.py"
    runs.write_text("from .experiments.pretraining import target_data\nfrom .training import fit\n")
    assert len(violations(runs, fake)) == 1
