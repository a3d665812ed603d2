"""notebooks/CHEATSHEET.md against the code: every workbench call it shows exists with the arguments
it shows, and every workbench value it states is the code's value."""
import ast
import builtins
import importlib
import inspect
import re
import typing
from pathlib import Path

import pytest
import torch

from workbench import build_model
from workbench.fit_options import Freeze, Optim
from workbench.optim import auto_lr, make_optimizer, param_groups
from workbench.schedules import YoloSchedule
from workbench.training import DEFAULT_CLIP

SHEET = Path(__file__).resolve().parents[1] / "notebooks" / "CHEATSHEET.md"
MODULES = ("workbench", "workbench.training", "workbench.fit_options", "workbench.optim", "workbench.schedules",
           "workbench.freezing", "workbench.transfer", "workbench.checkpoints", "workbench.models",
           "workbench.layer_map")
FORMULAS = {"lf", "cos"}  # the sheet's formula notation, not workbench calls
EXPECTED_CALLS = {"transfer", "pretrained", "build_model", "suggest_layer_map", "freeze", "fit", "Freeze", "Optim",
                  "make_optimizer", "auto_lr", "param_groups", "YoloSchedule"}


def namespace() -> dict:
    names = {}
    for module in map(importlib.import_module, MODULES):
        names.update({k: v for k, v in vars(module).items() if not k.startswith("_")})
    return names


def workbench_cells(text: str) -> list[str]:
    """The ``workbench`` column of every table in the sheet."""
    cells, column = [], None
    for line in text.splitlines():
        if not line.startswith("|"):
            column = None
            continue
        parts = [p.strip() for p in line.strip().strip("|").split(" | ")]
        if column is None:
            column = parts.index("workbench") if "workbench" in parts else -1
        elif column >= 0 and not set(line) <= set("|- "):
            cells.append(parts[column])
    return cells


def snippets(text: str) -> list[str]:
    return [s for cell in workbench_cells(text) for s in re.findall(r"`([^`]+)`", cell)]


class Checker(ast.NodeVisitor):
    """Resolve the workbench names a snippet uses; record calls, and any name, argument or attribute that is missing."""

    def __init__(self, names: dict):
        self.names, self.called, self.missing = names, set(), []

    def resolve(self, node):
        if isinstance(node, ast.Name):
            if node.id in self.names:
                return self.names[node.id]
            if len(node.id) > 1 and node.id[0].isupper():
                self.missing.append(node.id)
            return None
        if isinstance(node, ast.Attribute):
            base = self.resolve(node.value)
            if base is None:
                return None
            if not hasattr(base, node.attr):
                self.missing.append(f"{getattr(base, '__name__', base)}.{node.attr}")
                return None
            return getattr(base, node.attr)
        if isinstance(node, ast.Call):
            return self.call(node)
        self.generic_visit(node)
        return None

    def call(self, node: ast.Call):
        for arg in [*node.args, *(k.value for k in node.keywords)]:
            self.resolve(arg)
        func = self.resolve(node.func)
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if func is None:
            if name is not None and name not in FORMULAS and not hasattr(builtins, name):
                self.missing.append(f"{name}()")
            return None
        self.called.add(getattr(func, "__name__", name))
        params = inspect.signature(func).parameters
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
        self.missing += [f"{func.__name__}({k.arg}=)" for k in node.keywords if k.arg not in params and not takes_any]
        if inspect.isclass(func):
            return func
        hints = typing.get_type_hints(func) if inspect.isfunction(func) else {}
        result = hints.get("return")
        return result if inspect.isclass(result) else None

    def visit_Name(self, node):
        self.resolve(node)

    visit_Attribute = visit_Call = visit_Name


def test_every_workbench_call_in_the_sheet_exists_with_its_arguments():
    found = snippets(SHEET.read_text())
    assert len(found) > 40
    checker = Checker(namespace())
    for snippet in found:
        try:
            tree = ast.parse(snippet)
        except SyntaxError:
            pytest.fail(f"the workbench column shows {snippet!r}, which is not Python")
        checker.visit(tree)
    assert not checker.missing, f"the sheet names what the workbench does not have: {checker.missing}"
    assert EXPECTED_CALLS <= checker.called


@pytest.mark.parametrize("snippet, missing", [
    ("freeze(model, deep=10)", "freeze(deep=)"), ("YoloSchedule().warmup_bias", "YoloSchedule.warmup_bias"),
    ("FreezeAll(model)", "FreezeAll"), ("transfer(source, model).ledger", "TransferReport.ledger"),
    ("unfreeze_all(model)", "unfreeze_all()")])
def test_the_check_catches_what_the_workbench_does_not_have(snippet, missing):
    checker = Checker(namespace())
    checker.visit(ast.parse(snippet))
    assert missing in checker.missing


def stated_values(text: str) -> dict[str, str]:
    block = re.search(r"```cheatsheet\n(.*?)```", text, re.S).group(1)
    return dict(line.split(" = ", 1) for line in block.strip().splitlines())


def preview(profile: str, nb: int, epochs: int, **settings):
    groups = param_groups(build_model("n", task="classify", nc=3), 0.01)
    return YoloSchedule(profile, **settings).preview(groups, nb=nb, epochs=epochs)


def auto_choice(iterations: int, nc: int = 10) -> str:
    optimizer = make_optimizer(build_model("n", task="classify", nc=3), "auto", iterations=iterations, nc=nc)
    d = optimizer.defaults
    if isinstance(optimizer, torch.optim.SGD) and d["nesterov"]:
        return f"SGD lr {d['lr']} momentum {d['momentum']}"
    if isinstance(optimizer, torch.optim.AdamW):
        return f"AdamW lr {'auto_lr(nc)' if d['lr'] == auto_lr(nc) else d['lr']} beta1 {d['betas'][0]}"
    return type(optimizer).__name__


def auto_threshold() -> int | None:
    """The largest run that still gets AdamW, found from the optimiser ``auto`` picks."""
    return 10_000 if auto_choice(10_000).startswith("AdamW") and auto_choice(10_001).startswith("SGD") else None


def default_lr(name: str) -> float:
    return make_optimizer(build_model("n", task="classify", nc=3), name).defaults["lr"]


def last_momentum(profile: str) -> float:
    return round(float(next(iter(preview(profile, 10, 100).momentum.values()))[-1]), 6)


ACTUAL = {
    "DEFAULT_CLIP": lambda: DEFAULT_CLIP,
    "Optim().name": lambda: Optim().name,
    "Optim().momentum": lambda: Optim().momentum,
    "Optim().weight_decay": lambda: Optim().weight_decay,
    "Freeze({0: 10}).bn": lambda: Freeze({0: 10}).bn,
    **{f"YoloSchedule().{field}": (lambda field=field: getattr(YoloSchedule(), field))
       for field in ("profile", "lrf", "cos", "warmup_epochs", "warmup_momentum", "warmup_bias_lr", "momentum")},
    "auto_lr(3)": lambda: auto_lr(3),
    "auto_lr(10)": lambda: auto_lr(10),
    "auto threshold (iterations)": auto_threshold,
    "auto long run": lambda: auto_choice(10_001),
    "auto short run": lambda: auto_choice(100, nc=3),
    "sgd default lr": lambda: default_lr("sgd"),
    "adamw default lr": lambda: default_lr("adamw"),
    "yolov5 warmup iterations (nb=10, epochs=100)": lambda: preview("yolov5", 10, 100).warmup,
    "yolov5 warmup iterations (nb=10, epochs=100, warmup_epochs=0)":
        lambda: preview("yolov5", 10, 100, warmup_epochs=0).warmup,
    "yolov5 warmup iterations (nb=100, epochs=10)": lambda: preview("yolov5", 100, 10).warmup,
    "ultralytics warmup iterations (nb=100, epochs=10)": lambda: preview("ultralytics", 100, 10).warmup,
    "ultralytics warmup iterations (nb=10, epochs=100)": lambda: preview("ultralytics", 10, 100).warmup,
    "ultralytics warmup iterations (nb=10, epochs=2)": lambda: preview("ultralytics", 10, 2).warmup,
    "ultralytics momentum after warmup (nb=10, epochs=100)": lambda: last_momentum("ultralytics"),
    "yolov5 momentum after warmup (nb=10, epochs=100)": lambda: last_momentum("yolov5"),
}


def test_the_sheet_states_every_value_the_test_checks():
    assert set(stated_values(SHEET.read_text())) == set(ACTUAL)


@pytest.mark.parametrize("key", list(ACTUAL))
def test_each_stated_value_is_the_codes(key):
    stated, actual = stated_values(SHEET.read_text())[key], ACTUAL[key]()
    if isinstance(actual, (int, float)) and not isinstance(actual, bool):
        assert float(stated) == actual, key
    else:
        assert stated == str(actual), key


def test_the_sheet_is_linked_from_the_readme():
    assert "notebooks/CHEATSHEET.md" in (SHEET.parents[1] / "README.md").read_text()
