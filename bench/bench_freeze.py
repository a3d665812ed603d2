"""Training-step time and memory against freeze depth, beside the ideal, for ``build_model("n")``.

A step is zero_grad, forward, cross-entropy, backward and a Nesterov SGD step (weight decay and
momentum on). For every depth from 0 to all-but-head:

- ``freeze``: ``freeze(model, depth=d)`` and the whole model in one forward pass; the optimiser is
  the workbench's default one, which holds the frozen parameters too (they get no gradient).
- ``ideal``: the same frozen model, but layers ``0..d-1`` run under ``torch.no_grad()`` and only
  the rest is forwarded with autograd; the optimiser holds only the trainable parameters.

Both are measured the same way: runs alternate (freeze, ideal, ideal, freeze, ...) so they see the
same machine load, and the ratio is the median of per-pair ratios. The clock is the process's CPU
time (``time.process_time``) with one torch thread, which other processes on a shared machine
disturb far less than wall time; ``--clock wall`` (or several threads, or CUDA) uses wall time.

Memory, measured once per depth on a separate step:

- ``peak``: the peak of PyTorch's profiler memory timeline over one step (every tensor the CPU
  allocator holds: parameters, gradients, optimiser state, activations, temporaries), on CUDA
  ``torch.cuda.max_memory_allocated``;
- ``saved``: the bytes autograd keeps for the backward pass (``saved_tensors_hooks``, each storage
  once, parameters excluded): the activation memory that freezing removes.

    python bench/bench_freeze.py [--rounds 15] [--steps 2] [--batch 64] [--size 32] [--threads 1] [--clock cpu]
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import tempfile
import time
import warnings

import torch
import torch.nn.functional as F

from workbench import build_model, freeze
from workbench.optim import param_groups

LR, MOMENTUM, DECAY = 0.01, 0.937, 5e-4
MiB = 2**20


def forward_freeze(model, depth, x):
    return model(x)


def forward_ideal(model, depth, x):
    """Layers 0..depth-1 without autograd, the rest with it (our classify model is a plain sequence)."""
    with torch.no_grad():
        for layer in model.layers[:depth]:
            x = layer(x)
    for layer in model.layers[depth:]:
        x = layer(x)
    return x


def optimizer_for(model, only_trainable: bool) -> torch.optim.Optimizer:
    groups = param_groups(model, LR, DECAY)
    if only_trainable:
        for group in groups:
            keep = [k for k, p in enumerate(group["params"]) if p.requires_grad]
            group["params"] = [group["params"][k] for k in keep]
            group["names"] = [group["names"][k] for k in keep]
        groups = [g for g in groups if g["params"]]
    return torch.optim.SGD(groups, lr=LR, momentum=MOMENTUM, nesterov=True)


class Runner:
    """One model, frozen to ``depth``, with its optimiser and forward (``freeze`` or ``ideal``)."""

    def __init__(self, template, depth: int, kind: str, device: torch.device):
        self.model = copy.deepcopy(template).to(device).train()
        if depth:
            freeze(self.model, depth=depth, bn="eval")
        self.depth, self.kind = depth, kind
        self.forward = forward_freeze if kind == "freeze" else forward_ideal
        self.optimizer = optimizer_for(self.model, only_trainable=kind == "ideal")

    def step(self, x, y) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(self.forward(self.model, self.depth, x), y).backward()
        self.optimizer.step()

    def timed(self, x, y, steps: int, clock) -> float:
        sync(x.device)
        start = clock()
        for _ in range(steps):
            self.step(x, y)
        sync(x.device)
        return (clock() - start) / steps

    def saved_bytes(self, x, y) -> int:
        params = {p.untyped_storage().data_ptr() for p in self.model.parameters()}
        storages: dict[int, int] = {}

        def pack(t):
            s = t.untyped_storage()
            if s.data_ptr() not in params:
                storages[s.data_ptr()] = s.nbytes()
            return t

        self.optimizer.zero_grad(set_to_none=True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = F.cross_entropy(self.forward(self.model, self.depth, x), y)
        loss.backward()
        self.optimizer.step()
        return sum(storages.values())

    def peak_bytes(self, x, y) -> float:
        if x.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.step(x, y)
            return torch.cuda.max_memory_allocated()
        activities = [torch.profiler.ProfilerActivity.CPU]
        with torch.profiler.profile(activities=activities, profile_memory=True, record_shapes=True,
                                    with_stack=True) as prof:
            self.step(x, y)
        with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # export_memory_timeline is deprecated in favour of a CUDA-only tool
            path = os.path.join(folder, "timeline.json")
            prof.export_memory_timeline(path, device="cpu")
            with open(path) as f:
                _, sizes = json.load(f)
        return max(sum(s) for s in sizes) if sizes else float("nan")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=2, help="steps per timed run")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--scale", default="n")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steadier on a shared machine)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                        help="cpu: process CPU time (used only with one thread on a CPU), wall: perf_counter")
    args = parser.parse_args()
    if args.clock == "cpu" and (args.threads != 1 or args.device != "cpu"):
        args.clock = "wall"
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    template = build_model(args.scale, nc=10)
    assert all(layer.f == -1 for layer in template.layers), "the ideal forward needs a plain sequence of layers"
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    depths = range(len(template.layers))  # 0 .. all-but-head
    runners = {(d, k): Runner(template, d, k, device) for d in depths for k in ("freeze", "ideal")}
    for runner in runners.values():
        runner.step(x, y)  # warm-up
    memory = {key: (runner.peak_bytes(x, y), runner.saved_bytes(x, y)) for key, runner in runners.items()}
    times: dict[tuple, list[float]] = {key: [] for key in runners}
    for r in range(args.rounds):
        for d in depths:
            order = ("freeze", "ideal") if r % 2 == 0 else ("ideal", "freeze")
            for kind in order:
                times[d, kind].append(runners[d, kind].timed(x, y, args.steps, clock))
    report(args, template, depths, times, memory)


def report(args, template, depths, times, memory) -> None:
    total = sum(p.numel() for p in template.parameters())
    print(f"build_model({args.scale!r}), batch {args.batch}, {args.size}x{args.size}, {args.device}, "
          f"torch threads {torch.get_num_threads()}, {args.clock} clock, {args.rounds} interleaved rounds of "
          f"{args.steps} steps")
    print(f"{'depth':>5} {'trainable':>10} {'freeze ms':>10} {'ideal ms':>9} {'ratio':>6} "
          f"{'peak MiB':>9} {'ideal':>6} {'saved MiB':>10} {'ideal':>6}")
    worst, base = 0.0, statistics.median(times[0, "freeze"])
    for d in depths:
        trainable = sum(p.numel() for p in template.layers[d:].parameters())
        ours, ideal = statistics.median(times[d, "freeze"]), statistics.median(times[d, "ideal"])
        ratio = statistics.median(a / b for a, b in zip(times[d, "freeze"], times[d, "ideal"], strict=True))
        worst = max(worst, ratio)
        (peak, saved), (peak_i, saved_i) = memory[d, "freeze"], memory[d, "ideal"]
        print(f"{d:>5} {100 * trainable / total:>9.1f}% {1000 * ours:>10.1f} {1000 * ideal:>9.1f} {ratio:>6.3f} "
              f"{peak / MiB:>9.1f} {peak_i / MiB:>6.1f} {saved / MiB:>10.2f} {saved_i / MiB:>6.2f}")
    deepest = depths[-1]
    print(f"speed-up of the deepest freeze (depth {deepest}) over full fine-tuning: "
          f"{base / statistics.median(times[deepest, 'freeze']):.2f}x; peak memory "
          f"{memory[0, 'freeze'][0] / MiB:.1f} -> {memory[deepest, 'freeze'][0] / MiB:.1f} MiB")
    verdict = "yes" if worst <= 1.05 else "NO"
    print(f"within 5% of the ideal at every depth: {verdict} (worst median ratio {worst:.3f})")


if __name__ == "__main__":
    main()
