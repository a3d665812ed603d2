"""The recipes that produced the shipped weights: ``python -m workbench.pretrain [--name NAME]``.

``shapes_n`` (the default) trains the ``n`` classify model on the source task (ten shapes,
32x32, ``SOURCE_CLASSES``) with :func:`workbench.fit`, measures accuracy on the source validation
split with the weights as stored (float16), and writes ``workbench/weights/shapes_n.safetensors``
with the recipe, the class names, the seed, that accuracy and the torch version in the file's
metadata. ``shapes_detect_n`` (``DETECT_RECIPE``) does the same for the ``n`` detector on 800
scenes of the ten shapes (64x64) with the light head (``reg_max=1``, recorded in the metadata) and
records mAP@0.5 on 300 held-out scenes. The same recipe
and seed give the same weights on the same machine and thread count.

Example:
    >>> train, val = source_data({**RECIPE, "n_per_class": 5})
    >>> len(train), len(val), val.classes[0]
    (40, 10, 'circle')
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn

from . import data
from .checkpoints import PRETRAINED, save_weights
from .metrics import evaluate
from .models import build_model
from .scenes import shape_scenes
from .training import Batches, fit

RECIPE = {
    "scale": "n",
    "task": "classify",
    "classes": list(data.SOURCE_CLASSES),
    "n_per_class": 400,
    "size": 32,
    "gap": 0.0,
    "data_seed": 0,
    "val_fraction": 0.2,
    "epochs": 12,
    "batch_size": 64,
    "optimizer": "auto",
    "seed": 0,
    "dtype": "float16",
}
DETECT_RECIPE = {
    "scale": "n",
    "task": "detect",
    "reg_max": 1,  # the light head (softplus distances, no DFL): quick to train on a CPU
    "classes": list(data.SOURCE_CLASSES),
    "n_scenes": 800,
    "val_scenes": 300,
    "size": 64,
    "gap": 0.0,
    "data_seed": 0,
    "val_seed": 10_000,
    "epochs": 3,
    "batch_size": 8,
    "optimizer": "adamw",
    "lr": 0.002,
    "seed": 0,
    "dtype": "float16",
}
RECIPES = {"shapes_n": RECIPE, "shapes_detect_n": DETECT_RECIPE}
DEFAULT_OUT = Path(__file__).parent / "weights" / PRETRAINED["shapes_n"]


def _recipe(name: str, recipe: dict | None = None) -> dict:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {sorted(RECIPES)}")
    return {**RECIPES[name], **(recipe or {})}


def source_data(recipe: dict = RECIPE) -> tuple[data.ImageSet, data.ImageSet]:
    """The recipe's source images (or scenes, for a detect recipe) as (train, validation), as during pretraining."""
    if recipe["task"] == "detect":
        sizes = ((recipe["n_scenes"], recipe["data_seed"]), (recipe["val_scenes"], recipe["val_seed"]))
        return tuple(shape_scenes(n, recipe["classes"], size=recipe["size"], gap=recipe["gap"], seed=seed)
                     for n, seed in sizes)
    images = data.shapes(recipe["n_per_class"], recipe["classes"], size=recipe["size"], gap=recipe["gap"],
                         seed=recipe["data_seed"])
    return data.split(images, recipe["val_fraction"], seed=recipe["data_seed"])


def source_accuracy(model: nn.Module, recipe: dict = RECIPE, batch_size: int = 500) -> dict:
    """Loss and accuracy of ``model`` on the recipe's source validation split."""
    _, val = source_data(recipe)
    batches = [(val.x[i:i + batch_size], val.y[i:i + batch_size]) for i in range(0, len(val), batch_size)]
    return evaluate(model, batches)


def source_map(model: nn.Module, recipe: dict = DETECT_RECIPE, batch_size: int = 64) -> dict:
    """Loss and mAP@0.5 of a detector on the recipe's held-out source scenes.

    Example:
        >>> tiny = {**DETECT_RECIPE, "val_scenes": 2}
        >>> 0.0 <= source_map(build_model("n", "detect", nc=10), tiny)["mAP50"] <= 1.0
        True
    """
    _, val = source_data(recipe)
    return evaluate(model, Batches(val, batch_size, shuffle=False))


def _as_stored(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Round the floating tensors to the stored dtype and back, so the accuracy recorded is the file's."""
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.to(dtype))
    return model


def pretrain(recipe: dict | None = None, *, name: str = "shapes_n", progress: bool = True) -> tuple[nn.Module, dict]:
    """Train the source model by the recipe ``name`` (``recipe`` overrides its values); return it with its metadata.

    Example:
        >>> tiny = {**RECIPE, "n_per_class": 4, "epochs": 1, "batch_size": 16}
        >>> model, info = pretrain(tiny, progress=False)
        >>> 0.0 <= info["source_val_accuracy"] <= 1.0
        True
    """
    recipe = _recipe(name, recipe)
    detect = recipe["task"] == "detect"
    train, val = source_data(recipe)
    torch.manual_seed(recipe["seed"])
    head = {"reg_max": recipe["reg_max"]} if "reg_max" in recipe else {}
    model = build_model(recipe["scale"], recipe["task"], nc=len(recipe["classes"]), **head)
    started = time.perf_counter()
    history = fit(model, train, None if detect else val, epochs=recipe["epochs"], batch_size=recipe["batch_size"],
                  optimizer=recipe["optimizer"], lr=recipe.get("lr"), seed=recipe["seed"], device="cpu",
                  progress=progress)
    seconds = time.perf_counter() - started
    if history.status != "completed":
        raise RuntimeError(f"pretraining stopped early ({history.status}): {history.events}")
    _as_stored(model.cpu(), getattr(torch, recipe["dtype"]))
    if detect:
        measured = source_map(model, recipe)
        scores = {"source_val_mAP50": round(measured["mAP50"], 6), "train_loss_last": round(history.loss[-1], 6)}
    else:
        measured = source_accuracy(model, recipe)
        scores = {"source_val_accuracy": round(measured["accuracy"], 6),
                  "val_accuracy_per_epoch": [round(a, 4) for a in history.val.get("accuracy", [])]}
    info = {
        "recipe": recipe,
        "classes": recipe["classes"],
        "scale": recipe["scale"],
        "task": recipe["task"],
        **head,
        "ch": 3,
        "seed": recipe["seed"],
        **scores,
        "source_val_loss": round(measured["loss"], 6),
        "train_seconds": round(seconds, 1),
        "torch_version": torch.__version__,
    }
    return model, info


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m workbench.pretrain", description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", choices=sorted(RECIPES), default="shapes_n", help="which recipe to run")
    parser.add_argument("--out", type=Path, default=None, help="where to write the .safetensors file "
                        "(default: the shipped file of --name)")
    parser.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--n-per-class", type=int, default=None, help="classify recipes: images per class")
    parser.add_argument("--n-scenes", type=int, default=None, help="detect recipes: training scenes")
    parser.add_argument("--seed", type=int, default=None, help="default: the recipe's")
    args = parser.parse_args(argv)
    given = {"epochs": args.epochs, "n_per_class": args.n_per_class, "n_scenes": args.n_scenes, "seed": args.seed}
    overrides = {k: v for k, v in given.items() if v is not None and k in RECIPES[args.name]}
    out = args.out or Path(__file__).parent / "weights" / PRETRAINED[args.name]
    model, info = pretrain(overrides, name=args.name)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_weights(model, out, metadata=info, dtype=getattr(torch, info["recipe"]["dtype"]))
    score = (f"source val mAP50 {info['source_val_mAP50']:.4f}" if "source_val_mAP50" in info else
             f"source val accuracy {info['source_val_accuracy']:.4f} (per epoch: {info['val_accuracy_per_epoch']})")
    print(f"{score} after {info['train_seconds']} s; wrote {out} ({out.stat().st_size:,} bytes)")
    return out


if __name__ == "__main__":
    main()
