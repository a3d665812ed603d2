"""Real architectures without the download: the shipped manifests, their meta tensors, and their ledgers.

The first tests run without Ultralytics. The parity tests at the end (the ``tasks`` fixture) check
the shipped files against what ``tools/make_manifests.py`` makes from the installed Ultralytics, and
every ledger against Ultralytics' own ``intersect_dicts``; they skip without it, and CI runs this
file with ``PYTHONPATH=build/ultralytics`` and ``WB_REQUIRE_ULTRALYTICS=1`` (fail instead of skip).
"""
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from ultralytics_log import load_messages

import workbench as wb
from workbench.manifests import ARCHITECTURES, manifest_model, manifest_state, read_manifest

ROOT = Path(__file__).resolve().parents[1]
# (source, its classes, target, its classes) -> (transferred, items): measured with Ultralytics 8.4.190's
# intersect_dicts on models built from its YAMLs (the parity test below measures them again)
LEDGERS = {
    ("yolo11n", 80, "yolo11n", 3): (448, 499),
    ("yolov8n", 80, "yolov8n", 3): (319, 355),
    ("yolov8n-cls", 1000, "yolov8n-cls", 3): (156, 158),
    ("yolov8n", 80, "yolov10n", 80): (150, 595),
    ("yolo11n", 80, "yolov10n", 80): (286, 595),
    ("yolov10n", 80, "yolov10n", 3): (493, 595),
}


def ledger(source, nc_source, target, nc_target):
    return wb.transfer(manifest_model(source, nc_source), manifest_model(target, nc_target), dry_run=True)


@pytest.mark.parametrize("pair", LEDGERS, ids=lambda p: f"{p[0]}@{p[1]}->{p[2]}@{p[3]}")
def test_the_shipped_manifests_give_ultralytics_counts(pair):
    transferred, items = LEDGERS[pair]
    assert ledger(*pair).headline == f"Transferred {transferred}/{items} items from pretrained weights"


def test_yolo11n_to_3_classes_loses_only_the_class_branch():
    """Why 448/499: the class branch is max(64, min(nc, 100)) wide, 80 at 80 classes and 64 at 3."""
    report = ledger("yolo11n", 80, "yolo11n", 3)
    mismatched = report.where("shape_mismatch")
    assert len(mismatched) == 51 and all(r.name.startswith("model.23.cv3.") for r in mismatched)
    assert {r.shape[0] for r in mismatched} == {64, 3} and {r.source_shape[0] for r in mismatched} == {80}
    assert [s.index for s in report.by_layer() if s.transferred < s.items] == [23]
    assert not report.where("missing_in_source") and not report.where("unused")


def test_yolov8n_fills_only_the_layers_yolov10n_kept_at_their_index():
    """Why YOLOv10 starts from scratch: SCDown, PSA and an index shift after layer 9 leave its neck and head empty."""
    report = ledger("yolov8n", 80, "yolov10n", 80)
    full = {s.index for s in report.by_layer() if s.transferred == s.items}
    empty = {s.index for s in report.by_layer() if s.transferred == 0}
    assert full == {0, 1, 2, 3, 4, 6, 8, 9} and empty == {5, 7, 10, 13, 16, 17, 19, 20, 22, 23}
    assert {layer.type for layer in report.layers if layer.index in (5, 7, 10)} == {"SCDown", "PSA"}
    assert report.n_transferred == sum(s.transferred for s in report.by_layer()) == 150


def test_a_manifest_model_has_the_real_names_shapes_types_and_stages():
    manifest = read_manifest("yolo11n")
    model = manifest_model("yolo11n", nc=3)
    state = model.state_dict()
    assert list(state) == [e[0] for e in manifest["entries"]]
    assert all(t.is_meta for t in state.values())
    assert state["model.23.cv3.0.2.weight"].shape == (3, 64, 1, 1)
    assert state["model.0.bn.num_batches_tracked"].dtype == torch.int64
    params = {name for name, _ in model.named_parameters()}
    assert params == {e[0] for e in manifest["entries"] if e[3] == "parameter"}
    layers = wb.numbered_layers(model)
    assert [(x.index, x.type, x.stage) for x in layers] == [tuple(row) for row in manifest["layers"]]
    assert [x.stage for x in layers].count("neck") == 12 and layers[-1].type == "Detect"
    # Ultralytics' own summary line for YOLO11n and YOLOv8n at 80 classes
    assert sum(p.numel() for p in manifest_model("yolo11n").parameters()) == 2_624_080
    assert sum(p.numel() for p in manifest_model("yolov8n").parameters()) == 3_157_200


def test_meta_tensors_give_a_ledger_and_nothing_else():
    target = wb.build_model("n", "classify", nc=3)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    source = manifest_model("yolov8n-cls")
    with pytest.raises(ValueError, match="dry_run=True"):
        wb.transfer(source, target)
    with pytest.raises(ValueError, match="model holds shapes only"):
        wb.transfer(wb.build_model("n", "classify", nc=3), manifest_model("yolov8n-cls", nc=3))
    report = wb.transfer(source, target, dry_run=True)  # Ultralytics' names lined up with the workbench's
    assert report.headline == "Transferred 156/158 items from pretrained weights"
    assert report.layout == "source layout: Ultralytics (model.{i} → layers.{i})"
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())
    state = manifest_state("yolov8n-cls", nc=3)  # a plain state_dict of meta tensors is a source too
    assert wb.transfer(state, target, dry_run=True).headline == "Transferred 158/158 items from pretrained weights"
    with pytest.raises(RuntimeError, match="cannot run"):
        source(torch.zeros(1, 3, 32, 32))


@pytest.mark.parametrize("call, match", [
    (lambda: manifest_model("yolov9t"), "the shipped ones are"),
    (lambda: manifest_model("yolo11n", nc=5), r"class counts \[80, 3\], not nc=5"),
    (lambda: manifest_model("yolov8n-cls", nc=80), r"\[1000, 3\]"),
])
def test_what_is_not_shipped_is_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_the_manifests_are_package_data():
    text = (ROOT / "pyproject.toml").read_text()
    assert '"manifests/*.json"' in text
    assert sorted(p.stem for p in (ROOT / "workbench" / "manifests").glob("*.json")) == sorted(ARCHITECTURES)


# ----------------------------------------------------------------------------------------- with Ultralytics
def make_manifests():
    spec = importlib.util.spec_from_file_location("make_manifests", ROOT / "tools" / "make_manifests.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_the_shipped_manifest_is_what_the_installed_ultralytics_builds(tasks, name):
    make = make_manifests()
    fresh = json.loads(make.dumps(make.manifest(name)))
    shipped = read_manifest(name)
    assert {k: v for k, v in shipped.items() if k not in make.VOLATILE} == {
        k: v for k, v in fresh.items() if k not in make.VOLATILE}, f"stale: run tools/make_manifests.py ({name})"


@pytest.mark.parametrize("pair", LEDGERS, ids=lambda p: f"{p[0]}@{p[1]}->{p[2]}@{p[3]}")
def test_every_ledger_counts_what_intersect_dicts_counts(tasks, pair):
    from ultralytics.utils.torch_utils import intersect_dicts

    make = make_manifests()
    torch.manual_seed(0)
    source, target = make.build(pair[0], pair[1]), make.build(pair[2], pair[3])
    ultralytics = len(intersect_dicts(source.state_dict(), target.state_dict()))
    real, shipped = wb.transfer(source, target, dry_run=True), ledger(*pair)
    assert (ultralytics, len(target.state_dict())) == LEDGERS[pair]
    assert (real.n_transferred, real.n_items) == (shipped.n_transferred, shipped.n_items) == LEDGERS[pair]
    assert [(r.name, r.status) for r in real.rows] == [(r.name, r.status) for r in shipped.rows]


def test_ultralytics_own_load_rebuilds_the_class_branch_before_counting(tasks):
    """Ultralytics' ``DetectionModel.load`` (8.4.x) rebuilds the target's class branch at the source's width when the
    necks match, then counts with intersect_dicts: it prints 493/499 for yolo11n 80 -> 3, where name-and-shape
    matching (intersect_dicts alone, the workbench's rule) gives 448/499."""
    make = make_manifests()
    source, target = make.build("yolo11n", 80), make.build("yolo11n", 3)
    assert "Transferred 493/499 items from pretrained weights" in load_messages(target, source)
    assert (target.state_dict()["model.23.cv3.0.0.1.conv.weight"].shape[0], len(target.state_dict())) == (80, 499)
