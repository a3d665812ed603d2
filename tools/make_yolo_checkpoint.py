"""Write ``workbench/weights/shapes_yolov8n.pt``: a small detector in Ultralytics' own checkpoint format.

The weights come from the workbench's recipe ``shapes_yolov8n`` (``workbench.pretrain.YOLO_RECIPE``:
the ``n`` detector with Ultralytics' head, trained with ``fit`` on the ten source shapes' scenes).
They are loaded into Ultralytics' ``DetectionModel("yolov8n.yaml", nc=10)`` (every entry must
fill it), and the file is written as Ultralytics 8.4 writes one: the dict of
``BaseTrainer.save_model`` (the model as its half-precision EMA copy, ``train_args``, metrics,
``date``, ``version``), then ``strip_optimizer`` (the released form: ``model`` in float16,
``epoch=-1``, optimiser and EMA removed). The lesson reads it without Ultralytics.

Run with Ultralytics importable (see README: ``build/ultralytics``)::

    PYTHONPATH=.:build/ultralytics OMP_NUM_THREADS=1 python tools/make_yolo_checkpoint.py [--out PATH]

``tests/test_pretrained.py`` runs it on a few scenes and loads the result with Ultralytics' own
loader.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
NAME = "shapes_yolov8n"


def _ultralytics():
    """``ultralytics.nn.tasks`` and friends, with their settings in a temporary folder and their logging quiet."""
    if "ultralytics" not in sys.modules:  # settings are read once, at the first import
        os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="ultralytics_settings"))
        os.environ.setdefault("YOLO_VERBOSE", "False")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import ultralytics
    from ultralytics.cfg import get_cfg
    from ultralytics.nn import tasks
    from ultralytics.utils import torch_utils

    return ultralytics.__version__, get_cfg, tasks, torch_utils


def as_ultralytics_model(model, classes, args):
    """A ``DetectionModel`` from ``yolov8n.yaml`` with ``model``'s weights, set up as Ultralytics' trainer sets it."""
    import workbench as wb

    _, _, tasks, _ = _ultralytics()
    yolo = tasks.DetectionModel(f"yolov8{model.scale}.yaml", nc=len(classes), verbose=False)
    report = wb.transfer(model, yolo)
    if report.n_transferred != report.n_items:
        raise RuntimeError(f"the workbench detector does not fill Ultralytics' whole:\n{report}")
    yolo.args, yolo.names, yolo.nc = args, dict(enumerate(classes)), len(classes)
    return yolo.eval()


def trainer_checkpoint(yolo, info: dict, args, steps: int) -> dict:
    """The dict ``BaseTrainer.save_model`` writes after the last epoch (Ultralytics 8.4)."""
    version, _, _, torch_utils = _ultralytics()
    fitness = info["source_val_mAP50"]
    optimizer = torch.optim.AdamW(yolo.parameters(), lr=args.lr0)  # its state is dropped by strip_optimizer
    epochs = info["recipe"]["epochs"]
    return {"epoch": epochs - 1, "best_fitness": fitness,
            "stopper": {"best_fitness": fitness, "best_epoch": epochs - 1}, "model": None,
            "ema": copy.deepcopy(yolo).half(), "updates": steps, "modelopt": None,
            "optimizer": torch_utils.convert_optimizer_state_dict_to_fp16(optimizer.state_dict()), "scaler": {},
            "train_args": vars(args),
            "train_metrics": {"metrics/mAP50(B)": fitness, "val/loss": info["source_val_loss"], "fitness": fitness},
            "train_results": {"epoch": list(range(1, epochs + 1))},
            "date": datetime.now().astimezone().isoformat(), "version": version,
            "git": {"root": None, "branch": None, "commit": None, "message": None, "origin": None},
            "license": "AGPL-3.0 (https://ultralytics.com/license)", "docs": "https://docs.ultralytics.com"}


def check_file(path: Path, model, classes) -> None:
    """The written file rebuilds the same detector in Ultralytics (same boxes and scores), and reads safely."""
    from workbench.checkpoints import load_weights, read_metadata
    from workbench.detection import decode, detect_head

    _, _, tasks, _ = _ultralytics()
    meta = read_metadata(path)
    assert meta["names"] == list(classes) and meta["epoch"] == -1 and meta["stored_dtype"] == ["float16"], meta
    fresh = tasks.DetectionModel(f"yolov8{model.scale}.yaml", nc=len(classes), verbose=False).eval()
    fresh.load_state_dict(load_weights(path), strict=True)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        theirs = fresh(x)[0]  # (batch, 4 + nc, anchors): xywh boxes in pixels, class probabilities
        boxes, logits, _, _ = decode(model.eval()(x), detect_head(model).stride.tolist(), reg_max=16)
    xywh, scores = theirs.transpose(1, 2).split((4, theirs.shape[1] - 4), -1)
    xyxy = torch.cat([xywh[..., :2] - xywh[..., 2:] / 2, xywh[..., :2] + xywh[..., 2:] / 2], -1)
    torch.testing.assert_close(boxes, xyxy, atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(logits.sigmoid(), scores, atol=1e-5, rtol=1e-5)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "workbench" / "weights" / f"{NAME}.pt")
    parser.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--n-scenes", type=int, default=None, help="training scenes (default: the recipe's)")
    parser.add_argument("--val-scenes", type=int, default=None, help="held-out scenes (default: the recipe's)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    _, get_cfg, _, torch_utils = _ultralytics()
    from workbench import pretrain

    given = {"epochs": args.epochs, "n_scenes": args.n_scenes, "val_scenes": args.val_scenes}
    overrides = {k: v for k, v in given.items() if v is not None}
    model, info = pretrain.pretrain(overrides, name=NAME, progress=not args.quiet)
    classes = info["classes"]
    train_args = get_cfg(overrides=pretrain.ultralytics_args(NAME, overrides))
    yolo = as_ultralytics_model(model, classes, train_args)
    steps = info["recipe"]["epochs"] * -(-info["recipe"]["n_scenes"] // info["recipe"]["batch_size"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        last = Path(tmp) / "last.pt"
        torch.save(trainer_checkpoint(yolo, info, train_args, steps), last)
        torch_utils.strip_optimizer(last, str(args.out))
    check_file(args.out, model, classes)
    print(f"source val mAP50 {info['source_val_mAP50']:.4f} after {info['train_seconds']} s; "
          f"wrote {args.out} ({args.out.stat().st_size:,} bytes)")
    return args.out


if __name__ == "__main__":
    main()
