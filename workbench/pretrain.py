"""The recipe that produced the shipped weights: ``python -m workbench.pretrain``.

It trains the ``n`` classify model on the source task (ten shapes, 32x32, ``SOURCE_CLASSES``)
with :func:`workbench.fit`, measures accuracy on the source validation split with the weights
as stored (float16), and writes ``workbench/weights/shapes_n.safetensors`` with the recipe, the
class names, the seed, that accuracy and the torch version in the file's metadata. The same
recipe and seed give the same weights on the same machine and thread count.

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
from .training import fit

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
DEFAULT_OUT = Path(__file__).parent / "weights" / PRETRAINED["shapes_n"]


def source_data(recipe: dict = RECIPE) -> tuple[data.ImageSet, data.ImageSet]:
    """The recipe's source images, split into (train, validation) exactly as during pretraining."""
    images = data.shapes(recipe["n_per_class"], recipe["classes"], size=recipe["size"], gap=recipe["gap"],
                         seed=recipe["data_seed"])
    return data.split(images, recipe["val_fraction"], seed=recipe["data_seed"])


def source_accuracy(model: nn.Module, recipe: dict = RECIPE, batch_size: int = 500) -> dict:
    """Loss and accuracy of ``model`` on the recipe's source validation split."""
    _, val = source_data(recipe)
    batches = [(val.x[i:i + batch_size], val.y[i:i + batch_size]) for i in range(0, len(val), batch_size)]
    return evaluate(model, batches)


def _as_stored(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Round the floating tensors to the stored dtype and back, so the accuracy recorded is the file's."""
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.to(dtype))
    return model


def pretrain(recipe: dict | None = None, *, progress: bool = True) -> tuple[nn.Module, dict]:
    """Train the source model by the recipe; return it with the metadata to store beside its weights.

    Example:
        >>> tiny = {**RECIPE, "n_per_class": 4, "epochs": 1, "batch_size": 16}
        >>> model, info = pretrain(tiny, progress=False)
        >>> 0.0 <= info["source_val_accuracy"] <= 1.0
        True
    """
    recipe = {**RECIPE, **(recipe or {})}
    train, val = source_data(recipe)
    torch.manual_seed(recipe["seed"])
    model = build_model(recipe["scale"], recipe["task"], nc=len(recipe["classes"]))
    started = time.perf_counter()
    history = fit(model, train, val, epochs=recipe["epochs"], batch_size=recipe["batch_size"],
                  optimizer=recipe["optimizer"], seed=recipe["seed"], device="cpu", progress=progress)
    seconds = time.perf_counter() - started
    if history.status != "completed":
        raise RuntimeError(f"pretraining stopped early ({history.status}): {history.events}")
    _as_stored(model.cpu(), getattr(torch, recipe["dtype"]))
    measured = source_accuracy(model, recipe)
    info = {
        "recipe": recipe,
        "classes": recipe["classes"],
        "scale": recipe["scale"],
        "task": recipe["task"],
        "ch": 3,
        "seed": recipe["seed"],
        "source_val_accuracy": round(measured["accuracy"], 6),
        "source_val_loss": round(measured["loss"], 6),
        "val_accuracy_per_epoch": [round(a, 4) for a in history.val.get("accuracy", [])],
        "train_seconds": round(seconds, 1),
        "torch_version": torch.__version__,
    }
    return model, info


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m workbench.pretrain", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the .safetensors file")
    parser.add_argument("--epochs", type=int, default=RECIPE["epochs"])
    parser.add_argument("--n-per-class", type=int, default=RECIPE["n_per_class"])
    parser.add_argument("--seed", type=int, default=RECIPE["seed"])
    args = parser.parse_args(argv)
    model, info = pretrain({"epochs": args.epochs, "n_per_class": args.n_per_class, "seed": args.seed})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_weights(model, args.out, metadata=info, dtype=getattr(torch, info["recipe"]["dtype"]))
    print(f"source val accuracy {info['source_val_accuracy']:.4f} after {info['train_seconds']} s "
          f"(per epoch: {info['val_accuracy_per_epoch']}); wrote {args.out} ({args.out.stat().st_size:,} bytes)")
    return args.out


if __name__ == "__main__":
    main()
