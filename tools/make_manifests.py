"""Write ``workbench/manifests/*.json``: real Ultralytics architectures as names, shapes and dtypes, no weights.

Each architecture is built from Ultralytics' own YAML (no download) at its pretrained class count
(80 for the COCO detectors, 1000 for the ImageNet classifier) and at the other class counts the
lessons use; a manifest lists every state_dict entry at the first count, and, per other count,
only the entries whose shapes change with it (the head's class branch). ``workbench.manifests``
turns a manifest into a model of meta tensors, so a ledger can be computed with neither
Ultralytics nor weights at hand.

Run with Ultralytics importable (see README: ``build/ultralytics``)::

    PYTHONPATH=build/ultralytics python tools/make_manifests.py          # write the files
    PYTHONPATH=build/ultralytics python tools/make_manifests.py --check  # exit 1 if a file is stale

``tests/test_manifests.py`` compares the shipped files with what this script makes from the
installed Ultralytics, so they cannot go stale silently.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "workbench" / "manifests"
# name -> (Ultralytics YAML, class counts: the pretrained one first)
ARCHITECTURES = {
    "yolov8n": ("yolov8n.yaml", (80, 3)),
    "yolov8n-cls": ("yolov8n-cls.yaml", (1000, 3)),
    "yolo11n": ("yolo11n.yaml", (80, 3)),
    "yolov10n": ("yolov10n.yaml", (80, 3)),
}
VOLATILE = ("ultralytics",)  # keys that name the generating version, not the architecture


def _tasks():
    """``ultralytics.nn.tasks`` with its settings in a temporary folder and its logging quiet."""
    if "ultralytics" not in sys.modules:  # settings are read once, at the first import
        os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="ultralytics_settings"))
        os.environ.setdefault("YOLO_VERBOSE", "False")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # workbench from this checkout, for numbered_layers
    from ultralytics.nn import tasks

    return tasks


def build(name: str, nc: int):
    """The Ultralytics model ``name`` built from its YAML with ``nc`` classes (random weights)."""
    tasks = _tasks()
    yaml = ARCHITECTURES[name][0]
    model_class = tasks.ClassificationModel if yaml.endswith("-cls.yaml") else tasks.DetectionModel
    return model_class(yaml, nc=nc, verbose=False)


def entries(model) -> list[list]:
    """``[name, shape, dtype, "parameter" | "buffer"]`` for every state_dict entry, in state_dict order."""
    params = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    return [[name, list(t.shape), str(t.dtype).removeprefix("torch."), "parameter" if name in params else "buffer"]
            for name, t in model.state_dict().items()]


def manifest(name: str) -> dict:
    """The manifest of one architecture, as the JSON file holds it."""
    _tasks()
    import ultralytics

    from workbench.layers import numbered_layers

    yaml, (nc, *others) = ARCHITECTURES[name]
    model = build(name, nc)
    base = entries(model)
    other_nc = {}
    for count in others:
        changed = entries(build(name, count))
        if [e[0] for e in changed] != [e[0] for e in base]:
            raise RuntimeError(f"{name}: the entry names change with the class count; a manifest cannot hold that")
        other_nc[str(count)] = {e[0]: e[1] for e, b in zip(changed, base) if e[1] != b[1]}
    return {
        "name": name,
        "yaml": yaml,
        "task": "classify" if yaml.endswith("-cls.yaml") else "detect",
        "nc": nc,
        "ultralytics": ultralytics.__version__,
        "layers": [[layer.index, layer.type, layer.stage] for layer in numbered_layers(model)],
        "entries": base,
        "other_nc": other_nc,
    }


def dumps(data: dict) -> str:
    """JSON with one entry or layer per line, so that a change reads as a small diff."""
    head = {k: v for k, v in data.items() if k not in ("layers", "entries", "other_nc")}
    lines = ["{"] + [f"  {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()]
    for key in ("layers", "entries"):
        rows = [f"    {json.dumps(row)}" for row in data[key]]
        lines += [f'  "{key}": [', ",\n".join(rows), "  ],"]
    counts = []
    for count, shapes in data["other_nc"].items():
        rows = ",\n".join(f"      {json.dumps(k)}: {json.dumps(v)}" for k, v in shapes.items())
        counts.append(f"    {json.dumps(count)}: {{\n{rows}\n    }}")
    lines += ['  "other_nc": {', ",\n".join(counts), "  }"]
    return "\n".join(lines) + "\n}\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the shipped files; write nothing")
    args = parser.parse_args(argv)
    stale = []
    for name in ARCHITECTURES:
        path, text = OUT / f"{name}.json", dumps(manifest(name))
        if args.check:
            shipped = json.loads(path.read_text()) if path.exists() else {}
            fresh = json.loads(text)
            if {k: v for k, v in shipped.items() if k not in VOLATILE} != {
                    k: v for k, v in fresh.items() if k not in VOLATILE}:
                stale.append(path.name)
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)} ({len(json.loads(text)['entries'])} entries)")
    if stale:
        print("stale (run tools/make_manifests.py): " + ", ".join(stale))
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
