"""Panel latency, server side: a control changes -> the observer has run and the figure is updated.

Setting a widget's ``.value`` runs its observers synchronously, so the time of the assignment is
the time from the change to the updated figure (the FigureWidget's state is set; sending it to
the browser is asynchronous and not counted). Every case is a panel, a control and a cycle of
values; rounds interleave the cases (one change of each per round, so all see the same machine
load); the first round is a warm-up and is not counted. Training itself is not a case: its
panels' cost per redraw is (the dashboard and the paired-run view on a recorded run), and they
redraw at most twice a second.

The baseline, measured in the same rounds, is the pure plotting function alone for the same state
(``plot-only``); ``ratio`` is the panel's median over it. The target is 100 ms per change.

    OMP_NUM_THREADS=1 python bench/bench_panels.py [--rounds 15] [--threads 1]
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import time
import warnings

import torch

from workbench import History, build_model, data, plots
from workbench.panels import ComparePanel, FreezePanel, TrainPanel, TransferPanel, WarmupPanel

TARGET_MS = 100.0


def _ms(fn) -> float:
    started = time.perf_counter()
    fn()
    return 1000 * (time.perf_counter() - started)


class Case:
    """One control of one panel, the values it cycles through, and the plot function it redraws."""

    def __init__(self, panel_name: str, control: str, change, values, baseline=None):
        self.name, self.control, self.change, self.baseline = panel_name, control, change, baseline
        self.values = itertools.cycle(values)
        self.times: list[float] = []
        self.plot_times: list[float] = []

    def run(self, record: bool) -> None:
        elapsed = _ms(lambda: self.change(next(self.values)))
        plot = _ms(self.baseline) if self.baseline is not None else None
        if record:
            self.times.append(elapsed)
            if plot is not None:
                self.plot_times.append(plot)


def _set(widget):
    return lambda value: setattr(widget, "value", value)


def synthetic_history(steps: int, layers: int, groups=("weight", "norm", "bias"), seed: int = 0) -> History:
    """A recorded-looking run: losses, LRs per group, per-layer gradient norms, validation per epoch."""
    g = torch.Generator().manual_seed(seed)
    norms = torch.pow(10.0, torch.rand(steps, layers, generator=g).mul(3).sub(2))
    epochs = [k * 10 // steps for k in range(steps)]
    return History(loss=torch.rand(steps, generator=g).add(1).tolist(), epoch=epochs,
                   lr={name: torch.linspace(0, 0.01, steps).tolist() for name in groups},
                   momentum={name: [0.9] * steps for name in groups}, grad_norm=norms.norm(dim=1).tolist(),
                   layer_names=[f"layers.{i}" for i in range(layers)], layer_grad_norms=norms.tolist(),
                   clip_coef=[1.0] * steps, val={"accuracy": torch.rand(10, generator=g).tolist()},
                   status="running", epochs_done=10)


def cases() -> list[Case]:
    model = build_model(nc=3)
    freeze_timed = FreezePanel(model, steps=2)
    freeze_map_only = FreezePanel(model, steps=0)
    source = build_model(nc=10)
    transfer = TransferPanel(source, target_nc=3, source_names=data.SOURCE_CLASSES)
    names = TransferPanel(source, target_nc=3, source_names=data.SOURCE_CLASSES)
    warmup = WarmupPanel(model, epochs=10, nb=50, head_mult=10.0)
    train_set = data.shapes(2, classes=3, size=16)
    train = TrainPanel(build_model(nc=3), train_set)
    train.history = synthetic_history(300, 10)
    compare = ComparePanel(train_set, source=source, runs=("pretrained", "scratch", "frozen", "staged"))
    compare.histories = {name: synthetic_history(100, 10, seed=k) for k, name in enumerate(compare.runs.value)}
    return [
        Case("FreezePanel", "depth (2 timed steps)", _set(freeze_timed.depth), [3, 6, 9, 0, 5, 8, 1, 4, 7, 2],
             lambda: plots.freeze_map(freeze_timed.model)),
        Case("FreezePanel", "depth (steps=0)", _set(freeze_map_only.depth), [3, 6, 9, 0, 5, 8, 1, 4, 7, 2],
             lambda: plots.freeze_map(freeze_map_only.model)),
        Case("FreezePanel", "bn policy", _set(freeze_map_only.bn), ["train", "affine", "frozen", "eval"],
             lambda: plots.freeze_map(freeze_map_only.model)),
        Case("TransferPanel", "target classes", _set(transfer.target_nc), [4, 10, 2, 3],
             lambda: plots.transfer_map(transfer.report)),
        Case("TransferPanel", "target class names", _set(names.target_names),
             ["triangle, ring, tee", "circle, square, plus", "hbar, vbar, cross"],
             lambda: plots.transfer_map(names.report)),
        Case("WarmupPanel", "lr0", _set(warmup.lr0), [0.001, 0.02, 0.005, 0.01],
             lambda: plots.lr_curves(warmup.preview, at=warmup.iteration.value)),
        Case("WarmupPanel", "head multiplier", _set(warmup.head_mult), [5.0, 1.0, 20.0, 10.0],
             lambda: plots.lr_curves(warmup.preview, at=warmup.iteration.value)),
        Case("WarmupPanel", "warmup epochs", _set(warmup.warmup_epochs), [1.0, 5.0, 3.0],
             lambda: plots.lr_curves(warmup.preview, at=warmup.iteration.value)),
        Case("WarmupPanel", "profile", _set(warmup.profile), ["ultralytics", "yolov5"],
             lambda: plots.lr_curves(warmup.preview, at=warmup.iteration.value)),
        Case("WarmupPanel", "iteration scrubber", _set(warmup.iteration), [10, 120, 260, 499, 0]),
        Case("TrainPanel", "redraw (300 steps)", lambda _: train.redraw(), [None],
             lambda: plots.training_dashboard(train.history)),
        Case("ComparePanel", "redraw (4 runs x 100)", lambda _: compare.redraw(), [None],
             lambda: plots.compare_runs(compare.histories)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    all_cases = cases()
    for round_ in range(args.rounds + 1):
        for case in all_cases:
            case.run(record=round_ > 0)
    print(f"panel latency, server side: median of {args.rounds} changes per control, interleaved; "
          f"torch threads {args.threads}; target {TARGET_MS:.0f} ms")
    header = f"{'panel':<14} {'control':<24} {'median ms':>9} {'p90 ms':>7} {'plot-only ms':>12} {'ratio':>6}  ok"
    print(header)
    print("-" * len(header))
    for case in all_cases:
        median = statistics.median(case.times)
        p90 = statistics.quantiles(case.times, n=10)[-1] if len(case.times) > 1 else median
        plot = statistics.median(case.plot_times) if case.plot_times else None
        plot_text, ratio = (f"{plot:12.1f}", f"{median / plot:6.2f}") if plot else (f"{'-':>12}", f"{'-':>6}")
        print(f"{case.name:<14} {case.control:<24} {median:9.1f} {p90:7.1f} {plot_text} {ratio}  "
              f"{'yes' if median <= TARGET_MS else 'NO'}")


if __name__ == "__main__":
    main()
