"""Bad lesson states for the panels' ``from_state``: bad keys, bad values, bad JSON; refused, the model unchanged."""
import copy
import json

import pytest
import torch
from foreign_models import TinyResNet
from unchanged import case, run_case

from workbench import data
from workbench.panels import FreezePanel, TrainPanel, TransferPanel, WarmupPanel

STATES = {  # what each panel's state() gives with its defaults, written out: a test of state() too
    "FreezePanel": {"panel": "FreezePanel", "seed": 0, "controls": {"depth": 0, "bn": "eval"}, "hide": []},
    "WarmupPanel": {"panel": "WarmupPanel", "seed": 0, "hide": [],
                    "controls": {"lr0": 0.01, "warmup_epochs": 3.0, "warmup_bias_lr": 0.1, "head_mult": 1.0,
                                 "profile": "yolov5", "epochs": 10, "nb": 50, "iteration": 0}},
    "TrainPanel": {"panel": "TrainPanel", "seed": 0, "controls": {"epochs": 3, "batch_size": 16}, "hide": []},
}


def _state(panel: str, *path_value, drop: str | None = None):
    """A copy of a panel's state with ``state[path...] = value`` (path as keys), or without key ``drop``."""
    state = copy.deepcopy(STATES[panel])
    if path_value:
        *path, value = path_value
        target = state
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    if drop:
        del state[drop]
    return state


def _freeze(e, state):
    return FreezePanel.from_state(state, e["model"], steps=0)


def _warmup(e, state):
    return WarmupPanel.from_state(state, e["model"])


def _train(e, state):
    return TrainPanel.from_state(state, e["model"], e["data"])


def _transfer(e, state):
    return TransferPanel.from_state(state, source=e["source"], build=lambda nc: TinyResNet(nc))


C = "controls"
CASES = [
    case("error", "from_state", "json-cut", lambda e: _freeze(e, '{"panel": "FreezePanel", '), ValueError,
         ("state is not valid JSON", "panel.state()")),
    case("error", "from_state", "json-list", lambda e: _freeze(e, "[1, 2]"), ValueError, ("state must be a dict",
                                                                                        "list")),
    case("error", "from_state", "state-int", lambda e: _freeze(e, 5), ValueError, "state must be a dict"),
    case("error", "from_state", "state-none", lambda e: _freeze(e, None), ValueError, "state must be a dict"),
    case("error", "from_state", "key-typo", lambda e: _freeze(e, {**_state("FreezePanel", drop=C), "control": {}}),
         ValueError, ("unknown state keys", "'control'")),
    case("error", "from_state", "other-panel", lambda e: _freeze(e, STATES["WarmupPanel"]), ValueError,
         ("WarmupPanel", "WarmupPanel.from_state")),
    case("error", "from_state", "controls-list", lambda e: _freeze(e, _state("FreezePanel", C, [0, "eval"])),
         ValueError, "state['controls']"),
    case("error", "from_state", "control-unknown", lambda e: _freeze(e, _state("FreezePanel", C, "dpth", 3)),
         ValueError, ("unknown controls", "'dpth'")),
    case("error", "from_state", "seed-negative", lambda e: _freeze(e, _state("FreezePanel", "seed", -1)), ValueError,
         "state['seed']"),
    case("error", "from_state", "seed-string", lambda e: _freeze(e, _state("FreezePanel", "seed", "0")), ValueError,
         "state['seed']"),
    case("error", "from_state", "seed-bool", lambda e: _freeze(e, _state("FreezePanel", "seed", True)), ValueError,
         "state['seed']"),
    case("error", "from_state", "hide-string", lambda e: _freeze(e, _state("FreezePanel", "hide", "depth")),
         ValueError, "state['hide']"),
    case("error", "from_state", "hide-unknown", lambda e: _freeze(e, _state("FreezePanel", "hide", ["nope"])),
         ValueError, ("'nope'", "depth")),
    case("error", "FreezePanel", "depth-string", lambda e: _freeze(e, _state("FreezePanel", C, "depth", "3")),
         ValueError, "'depth'"),
    case("error", "FreezePanel", "depth-too-large", lambda e: _freeze(e, _state("FreezePanel", C, "depth", 99)),
         ValueError, "depth"),
    case("error", "FreezePanel", "depth-negative", lambda e: _freeze(e, _state("FreezePanel", C, "depth", -1)),
         ValueError, "depth"),
    case("error", "FreezePanel", "bn-unknown", lambda e: _freeze(e, _state("FreezePanel", C, "bn", "bogus")),
         ValueError, ("state['controls']", "'bn': 'bogus'")),
    case("error", "FreezePanel", "bn-number", lambda e: _freeze(e, _state("FreezePanel", C, "bn", 3)), ValueError,
         "'bn'"),
    case("error", "WarmupPanel", "lr0-above-slider", lambda e: _warmup(e, _state("WarmupPanel", C, "lr0", 5.0)),
         ValueError, ("'lr0'", "range 0.0001..1")),
    case("error", "WarmupPanel", "iteration-negative", lambda e: _warmup(e, _state("WarmupPanel", C, "iteration", -5)),
         ValueError, ("'iteration'", "range 0..499")),
    case("error", "WarmupPanel", "head_mult-below-slider",
         lambda e: _warmup(e, _state("WarmupPanel", C, "head_mult", 0.5)), ValueError, "'head_mult'"),
    case("error", "WarmupPanel", "profile-number", lambda e: _warmup(e, _state("WarmupPanel", C, "profile", 3)),
         ValueError, "'profile'"),
    case("error", "WarmupPanel", "profile-unknown", lambda e: _warmup(e, _state("WarmupPanel", C, "profile", "v8")),
         ValueError, "'profile': 'v8'"),
    case("error", "WarmupPanel", "nb-float", lambda e: _warmup(e, _state("WarmupPanel", C, "nb", 2.5)), ValueError,
         "'nb'"),
    case("error", "WarmupPanel", "lr0-nan", lambda e: _warmup(e, _state("WarmupPanel", C, "lr0", float("nan"))),
         ValueError, "'lr0'"),
    case("error", "WarmupPanel", "epochs-bool", lambda e: _warmup(e, _state("WarmupPanel", C, "epochs", True)),
         ValueError, "'epochs'"),
    case("error", "TrainPanel", "epochs-zero", lambda e: _train(e, _state("TrainPanel", C, "epochs", 0)), ValueError,
         ("'epochs'", "range 1..10000")),
    case("error", "TrainPanel", "batch_size-float", lambda e: _train(e, _state("TrainPanel", C, "batch_size", 2.5)),
         ValueError, "'batch_size'"),
    case("error", "TrainPanel", "batch_size-zero", lambda e: _train(e, _state("TrainPanel", C, "batch_size", 0)),
         ValueError, "'batch_size'"),
    case("error", "TransferPanel", "target_nc-zero",
         lambda e: _transfer(e, {"panel": "TransferPanel", C: {"target_nc": 0}}), ValueError, "'target_nc'"),
    case("error", "TransferPanel", "match_names-string",
         lambda e: _transfer(e, {"panel": "TransferPanel", C: {"match_names": "yes"}}), ValueError, "'match_names'"),
    case("error", "TransferPanel", "layer_map-number",
         lambda e: _transfer(e, {"panel": "TransferPanel", C: {"layer_map": 5}}), ValueError, "'layer_map'"),
]


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    return TinyResNet(num_classes=3), data.shapes(2, classes=3, size=16), TinyResNet()


@pytest.fixture
def env(parts):
    model, train, source = (copy.deepcopy(p) for p in parts)
    return {"model": model, "data": train, "source": source}


@pytest.mark.parametrize("call, kind, expected, names", CASES)
def test_bad_input(env, call, kind, expected, names):
    run_case(env, call, kind, expected, names)


@pytest.mark.parametrize("name", sorted(STATES))
def test_the_states_above_are_what_the_panels_give_and_rebuild(env, name):
    build = {"FreezePanel": _freeze, "WarmupPanel": _warmup, "TrainPanel": _train}[name]
    panel = build(env, json.dumps(STATES[name]))
    assert panel.state() == STATES[name]
