"""The transfer ledger's cost against plain name-and-shape filtering plus ``load_state_dict``.

The model is ResNet-50-like (bottleneck blocks 3-4-6-3, widths 64 to 2048; 25.6M parameters,
320 state_dict entries), written here so nothing is downloaded. The source has 1,000 classes and
the target 10, so everything but ``fc`` transfers, as in a real fine-tuning start.

- ``plain``: Ultralytics' load: the source state_dict, ``intersect_dicts`` (name and shape),
  ``load_state_dict(strict=False)``.
- ``ledger``: ``workbench.transfer(source, model)``: the same copy plus one ledger row per entry,
  the per-layer index of every entry and the parameter coverage.

Runs alternate (plain, ledger, ledger, plain, ...) so both see the same machine load; the ratio
is the median of per-pair ratios. The target is the same model every run (the copy is the work).

    python bench/bench_transfer.py [--rounds 31] [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import workbench as wb


class Bottleneck(nn.Module):
    def __init__(self, c1: int, width: int, stride: int = 1):
        super().__init__()
        c2 = width * 4
        self.conv1, self.bn1 = nn.Conv2d(c1, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, c2, 1, bias=False), nn.BatchNorm2d(c2)
        self.relu = nn.ReLU()
        self.downsample = (nn.Sequential(nn.Conv2d(c1, c2, 1, stride, bias=False), nn.BatchNorm2d(c2))
                           if stride != 1 or c1 != c2 else None)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return self.relu(self.bn3(self.conv3(y)) + identity)


class ResNet50Like(nn.Module):
    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64)
        self.relu, self.maxpool = nn.ReLU(), nn.MaxPool2d(3, 2, 1)
        c1, stages = 64, []
        for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            stage = []
            for b in range(blocks):
                stage.append(Bottleneck(c1, width, stride if b == 0 else 1))
                c1 = width * 4
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(2048, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def plain(source: nn.Module, model: nn.Module) -> int:
    csd = source.state_dict()
    db = model.state_dict()
    csd = {k: v for k, v in csd.items() if k in db and v.shape == db[k].shape}
    model.load_state_dict(csd, strict=False)
    return len(csd)


def ledger(source: nn.Module, model: nn.Module) -> int:
    return wb.transfer(source, model).n_transferred


def timed(function, *args) -> float:
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    source, model = ResNet50Like(1000), ResNet50Like(10)
    n_params = sum(p.numel() for p in source.parameters())
    assert plain(source, model) == ledger(source, model)  # the same entries are copied (and warms both up)
    print(f"ResNet-50-like: {n_params / 1e6:.1f}M parameters, {len(source.state_dict())} entries; "
          f"{wb.transfer(source, model, dry_run=True).headline}")
    times = {"plain": [], "ledger": []}
    ratios = []
    for r in range(args.rounds):
        order = ("plain", "ledger") if r % 2 == 0 else ("ledger", "plain")
        pair = {name: timed(plain if name == "plain" else ledger, source, model) for name in order}
        for name, seconds in pair.items():
            times[name].append(seconds)
        ratios.append(pair["ledger"] / pair["plain"])
    print(f"{'method':<8} {'median ms':>10} {'min ms':>8}")
    for name, values in times.items():
        print(f"{name:<8} {1e3 * statistics.median(values):>10.2f} {1e3 * min(values):>8.2f}")
    print(f"ratio ledger/plain (median of {args.rounds} interleaved pairs): {statistics.median(ratios):.2f}x "
          f"(target <= 1.5x)")


if __name__ == "__main__":
    main()
