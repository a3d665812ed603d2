"""The transfer ledger: Ultralytics' counts, name-and-shape matching, class rows, layer maps, channels."""
import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import workbench as wb
from workbench.models import YOLO, Spec
from workbench.transfer import STATUSES, adapt_input_conv, class_layer_keys, source_state


# ------------------------------------------------------------------------------------------ reference and models
def ultralytics_count(source: nn.Module, model: nn.Module) -> str:
    """Ultralytics' BaseModel.load: intersect_dicts, load_state_dict(strict=False), then its log line.

    (Ultralytics from 8.3.132 also copies the overlapping channels of a first conv whose shape changed and
    adds one; the ledger reports that conv apart, as ``adapted`` or ``shape_mismatch``.)
    """
    csd = source.state_dict()
    db = model.state_dict()
    csd = {k: v for k, v in csd.items() if k in db and v.shape == db[k].shape}
    model.load_state_dict(csd, strict=False)
    return f"Transferred {len(csd)}/{len(model.state_dict())} items from pretrained weights"


class Block(nn.Module):
    def __init__(self, c1, c2, stride=1):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c1, c2, 3, stride, 1, bias=False), nn.BatchNorm2d(c2)
        self.conv2, self.bn2 = nn.Conv2d(c2, c2, 3, 1, 1, bias=False), nn.BatchNorm2d(c2)
        self.relu = nn.ReLU()
        self.downsample = (nn.Sequential(nn.Conv2d(c1, c2, 1, stride, bias=False), nn.BatchNorm2d(c2))
                           if stride != 1 or c1 != c2 else None)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))) + identity)


class ResNetLike(nn.Module):
    """torchvision's ResNet layout (conv1, bn1, layer1-4, fc), small widths."""

    def __init__(self, num_classes=1000, in_chans=3, width=8):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, width, 7, 2, 3, bias=False)
        self.bn1, self.relu, self.maxpool = nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(Block(width, width), Block(width, width))
        self.layer2 = nn.Sequential(Block(width, 2 * width, 2), Block(2 * width, 2 * width))
        self.layer3 = nn.Sequential(Block(2 * width, 4 * width, 2))
        self.layer4 = nn.Sequential(Block(4 * width, 8 * width, 2))
        self.avgpool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(8 * width, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def trained_like(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random non-default values everywhere, BatchNorm statistics included, so copies are visible."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + 0.5 if "running_var" in key else
                        torch.randn(t.shape, generator=g) * 0.1)
            else:
                t.fill_(7)
    return model.eval()


def snapshot(model_or_state) -> dict:
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    return {k: v.detach().clone() for k, v in state.items()}


def assert_same(a: dict, b: dict):
    assert list(a) == list(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def shifted_classifier(nc=10):
    """The n classify model with one extra 3x3 Conv inserted as layer 2: every later index shifts by one."""
    specs = [Spec(-1, "Conv", (16, 3, 2), "backbone"), Spec(-1, "Conv", (32, 3, 2), "backbone"),
             Spec(-1, "Conv", (32, 3, 1), "backbone"),  # inserted
             Spec(-1, "C2f", (32, 1, True), "backbone"), Spec(-1, "Conv", (64, 3, 2), "backbone"),
             Spec(-1, "C2f", (64, 2, True), "backbone"), Spec(-1, "Conv", (128, 3, 2), "backbone"),
             Spec(-1, "C2f", (128, 2, True), "backbone"), Spec(-1, "Conv", (256, 3, 2), "backbone"),
             Spec(-1, "C2f", (256, 1, True), "backbone"), Spec(-1, "Classify", (), "head")]
    return YOLO(specs, nc=nc, ch=3, scale="n", task="classify")


# ------------------------------------------------------------------------------------------ Ultralytics parity
@pytest.mark.parametrize("pair", [
    (lambda: wb.build_model("n", "classify", nc=10), lambda: wb.build_model("n", "classify", nc=3)),
    (lambda: wb.build_model("n", "detect", nc=80), lambda: wb.build_model("n", "detect", nc=3)),
    (lambda: wb.build_model("n", "detect", nc=20), lambda: wb.build_model("s", "detect", nc=20)),
    (lambda: ResNetLike(1000), lambda: ResNetLike(10)),
    (lambda: wb.build_model("n", "classify", nc=10), lambda: wb.build_model("n", "classify", nc=10, ch=1)),
    (lambda: wb.build_model("n", "detect", nc=3), lambda: wb.build_model("n", "detect", nc=3, ch=4)),
])
def test_first_line_is_ultralytics_log_line(pair):
    make_source, make_target = pair
    source = trained_like(make_source())
    report = wb.transfer(source, make_target())
    assert str(report).splitlines()[0] == ultralytics_count(source, make_target())
    n_target = len(make_target().state_dict())
    assert report.n_items == n_target == sum(report.counts[s] for s in STATUSES if s != "unused")


def test_golden_counts_for_the_n_classifier():
    report = wb.transfer(wb.build_model(nc=10), wb.build_model(nc=3))
    assert report.headline == "Transferred 156/158 items from pretrained weights"
    assert [(r.name, r.shape, r.source_shape) for r in report.where("shape_mismatch")] == [
        ("layers.9.linear.weight", (3, 1280), (10, 1280)), ("layers.9.linear.bias", (3,), (10,))]
    assert "Items: 80 parameters + 78 buffers (26 num_batches_tracked)" in str(report)
    params = sum(p.numel() for p in wb.build_model(nc=3).parameters())
    assert report.coverage == pytest.approx(1 - (3 * 1280 + 3) / params)  # all but the new Linear(1280, 3)


# ------------------------------------------------------------------------------------------ property tests
NAMES = [f"b{i}.{leaf}" for i in range(5) for leaf in ("weight", "bias", "running_mean")]
shapes = st.sampled_from([(), (2,), (3,), (2, 3), (3, 2)])
state_specs = st.dictionaries(st.sampled_from(NAMES), shapes, max_size=len(NAMES))


def module_from(spec: dict, seed: int) -> nn.Module:
    """A module whose state_dict has exactly these names and shapes (``running_mean`` as a buffer)."""
    g = torch.Generator().manual_seed(seed)
    root = nn.Module()
    for key, shape in spec.items():
        block, leaf = key.split(".")
        if not hasattr(root, block):
            root.add_module(block, nn.Module())
        tensor = torch.randn(shape, generator=g)
        if leaf == "running_mean":
            getattr(root, block).register_buffer(leaf, tensor)
        else:
            getattr(root, block).register_parameter(leaf, nn.Parameter(tensor))
    return root


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source_spec=state_specs, target_spec=state_specs, as_dict=st.booleans(), dry_run=st.booleans())
def test_counts_add_up_and_only_name_and_shape_matches_transfer(source_spec, target_spec, as_dict, dry_run):
    source_module, model = module_from(source_spec, 1), module_from(target_spec, 2)
    source = snapshot(source_module) if as_dict else source_module
    source_before, target_before = snapshot(source_module if not as_dict else source), snapshot(model)
    report = wb.transfer(source, model, dry_run=dry_run)

    expected = {k for k, s in target_spec.items() if k in source_spec and source_spec[k] == s}
    assert {r.name for r in report.where("transferred")} == expected
    c = report.counts
    assert report.n_items == len(target_spec) == c["transferred"] + c["shape_mismatch"] + c["missing_in_source"]
    assert len(source_spec) == c["transferred"] + c["shape_mismatch"] + c["unused"]
    assert {r.name for r in report.where("unused")} == set(source_spec) - set(target_spec)
    assert {r.name for r in report.where("missing_in_source")} == set(target_spec) - set(source_spec)
    assert_same(snapshot(source_module if not as_dict else source), source_before)  # the source is never modified
    after = snapshot(model)
    for key in target_spec:
        want = source_before[key] if key in expected and not dry_run else target_before[key]
        assert torch.equal(after[key], want), key


@settings(max_examples=30, deadline=None)
@given(source_spec=state_specs, target_spec=state_specs)
@pytest.mark.filterwarnings("ignore:Transferred 0/")  # random pairs often share nothing: the warning is expected
def test_dry_run_predicts_the_ledger_and_changes_nothing(source_spec, target_spec):
    source, model = module_from(source_spec, 3), module_from(target_spec, 4)
    before = snapshot(model)
    predicted = wb.transfer(source, model, dry_run=True)
    assert_same(snapshot(model), before)
    actual = wb.transfer(source, model)
    assert predicted.rows == actual.rows and predicted.dry_run and not actual.dry_run


# ------------------------------------------------------------------------------------------ parity and foreign models
def test_identical_architecture_gives_identical_outputs():
    source = trained_like(wb.build_model("n", "classify", nc=10))
    model = wb.build_model("n", "classify", nc=10)
    report = wb.transfer(source, model)
    assert report.n_transferred == report.n_items and report.coverage == 1.0
    x = torch.rand(4, 3, 32, 32)
    assert torch.equal(model.eval()(x), source(x))


def test_resnet_like_1000_to_10_classes_keeps_all_but_fc():
    source = trained_like(ResNetLike(1000))
    before = snapshot(source)
    model = ResNetLike(10)
    report = wb.transfer(source, model)
    assert {r.name for r in report.rows if r.status != "transferred"} == {"fc.weight", "fc.bias"}
    assert [(r.shape, r.source_shape) for r in report.where("shape_mismatch")] == [((10, 64), (1000, 64)),
                                                                                  ((10,), (1000,))]
    assert_same(snapshot(source), before)
    for key, value in model.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(value, before[key]), key
    layers = {s.name: s for s in report.by_layer()}
    assert layers["fc"].shape_mismatch == 2 and layers["layer4"].coverage == 1.0
    assert layers["bn1"].items == 5  # weight, bias, running_mean, running_var, num_batches_tracked


def test_checkpoint_path_is_a_source(tmp_path):
    source = trained_like(ResNetLike(1000))
    path = wb.save_weights(source, tmp_path / "resnet.safetensors")
    from_path, from_module = wb.transfer(path, ResNetLike(10)), wb.transfer(source, ResNetLike(10))
    assert from_path.rows == from_module.rows


def test_bad_sources_are_refused_with_the_model_unchanged(tmp_path):
    model = wb.build_model(nc=3)
    before = snapshot(model)
    with pytest.raises(ValueError, match="nn.Module, a state_dict"):
        wb.transfer([1, 2], model)
    with pytest.raises(FileNotFoundError, match="pretrained_path"):
        wb.transfer(str(tmp_path / "missing.safetensors"), model)
    assert_same(snapshot(model), before)


def test_report_prints_and_renders():
    report = wb.transfer(ResNetLike(1000), ResNetLike(10), dry_run=True)
    text = str(report)
    assert text.splitlines()[0].startswith("Transferred ") and "(dry run: nothing loaded)" in text
    assert re.search(r"shape_mismatch +fc\.weight +target \(10, 64\) <- source \(1000, 64\)", text)
    html = report._repr_html_()
    assert "<table>" in html and "fc.weight" in html and "Transferred" in html
    assert "coverage=" in repr(report)
    with pytest.raises(ValueError, match="choose one of"):
        report.where("copied")


# ------------------------------------------------------------------------------------------ class rows by name
def test_class_rows_are_copied_by_name():
    source = trained_like(wb.build_model(nc=10))
    source_names = list(wb.data.SOURCE_CLASSES)  # circle, square, triangle, ring, ...
    model = wb.build_model(nc=3)
    fresh = snapshot(model)
    report = wb.transfer(source, model, class_names=(source_names, [" RING", "tee", "Circle "]))
    partial = report.where("partial")
    assert [r.name for r in partial] == ["layers.9.linear.weight", "layers.9.linear.bias"]
    assert all(r.note == "2/3 class rows copied by name" and r.copied == r.numel // 3 * 2 for r in partial)
    weight, src = model.state_dict()["layers.9.linear.weight"], source.state_dict()["layers.9.linear.weight"]
    assert torch.equal(weight[0], src[3]) and torch.equal(weight[2], src[0])
    assert torch.equal(weight[1], fresh["layers.9.linear.weight"][1])  # "tee" keeps its fresh initialisation
    assert report.n_transferred == 156 and "plus 2 partial" in str(report) and report.headline.endswith(
        " 156/158 items from pretrained weights")


def test_class_rows_on_a_foreign_model_and_on_detect_heads():
    source = trained_like(ResNetLike(4))
    model = ResNetLike(2)
    wb.transfer(source, model, class_names=(["cat", "dog", "bird", "fish"], ["fish", "cat"]))
    assert torch.equal(model.fc.bias, source.fc.bias[[3, 0]])
    renamed = {k.replace("fc.", "head.classifier."): v for k, v in source.state_dict().items()}
    model = ResNetLike(2)
    report = wb.transfer(renamed, model, class_names=(["cat", "dog", "bird", "fish"], ["fish", "cat"]))
    assert torch.equal(model.fc.weight, source.fc.weight[[3, 0]])
    assert [r.source_name for r in report.where("partial")] == ["head.classifier.weight", "head.classifier.bias"]

    det_source = trained_like(wb.build_model("n", "detect", nc=5))
    det = wb.build_model("n", "detect", nc=3)
    assert class_layer_keys(det, 3) == [f"layers.22.cv3.{i}.2.{p}" for i in range(3) for p in ("weight", "bias")]
    report = wb.transfer(det_source, det, class_names=("a b c d e".split(), ["E", "a", "z"]))
    assert len(report.where("partial")) == 6
    assert torch.equal(det.layers[22].cv3[1][2].weight[:2], det_source.layers[22].cv3[1][2].weight[[4, 0]])


def test_same_names_same_order_is_a_plain_transfer_and_reordered_is_partial():
    source = trained_like(wb.build_model(nc=3))
    same = wb.transfer(source, wb.build_model(nc=3), class_names=(["a", "b", "c"], ["a", "b", "c"]))
    assert same.n_transferred == same.n_items
    model = wb.build_model(nc=3)
    swapped = wb.transfer(source, model, class_names=(["a", "b", "c"], ["c", "b", "a"]))
    assert len(swapped.where("partial")) == 2
    assert torch.equal(model.layers[9].linear.bias, source.layers[9].linear.bias.flip(0))


def test_bad_class_names_are_refused_with_the_model_unchanged():
    source, model = wb.build_model(nc=10), wb.build_model(nc=3)
    before = snapshot(model)
    with pytest.raises(ValueError, match="no final class layer with 4 outputs"):
        wb.transfer(source, model, class_names=(list("abcdefghij"), list("abcd")))
    with pytest.raises(ValueError, match="pair"):
        wb.transfer(source, model, class_names="abc")
    with pytest.raises(ValueError, match="appears twice"):
        wb.transfer(source, model, class_names=(["a", "A "] + list("cdefghij"), list("abc")))
    with pytest.raises(ValueError, match="has 10 class rows but source_names has 5 names"):
        wb.transfer(source, model, class_names=(list("abcde"), list("abc")))
    renamed = {k.replace("layers.9.linear", "head.fc"): v for k, v in source.state_dict().items()}
    with pytest.raises(ValueError, match="no class layer with 5 rows"):
        wb.transfer(renamed, model, class_names=(list("abcde"), list("abc")))
    assert_same(snapshot(model), before)


# ------------------------------------------------------------------------------------------ layer maps
def test_layer_map_restores_what_an_inserted_layer_shifted():
    source, model = trained_like(wb.build_model(nc=10)), shifted_classifier()
    before = wb.transfer(source, shifted_classifier())
    suggested = wb.suggest_layer_map(source, model)
    assert suggested == {0: 0, 1: 1, 2: 3, 3: 4, 4: 5, 5: 6, 6: 7, 7: 8, 8: 9, 9: 10}
    after = wb.transfer(source, model, layer_map=suggested)
    inserted = sum(1 for k in model.state_dict() if k.startswith("layers.2."))
    print(f"\nbefore: {before.headline}\nafter:  {after.headline}")
    assert before.n_transferred == 12  # layers 0 and 1 only
    assert after.n_transferred == after.n_items - inserted == len(source.state_dict())
    assert {r.layer for r in after.where("missing_in_source")} == {2}
    x = torch.rand(2, 3, 32, 32)
    model.layers[2] = nn.Identity()  # without the inserted layer, the mapped model is the source
    model.layers[2].i, model.layers[2].f = 2, -1
    assert torch.allclose(model.eval()(x), source(x))


def test_layer_map_on_a_foreign_state_dict_and_collisions():
    source = trained_like(ResNetLike(10))
    state = snapshot(source)
    assert wb.suggest_layer_map(state, ResNetLike(10)) == {0: 0, 1: 1, 4: 4, 5: 5, 6: 6, 7: 7, 9: 9}
    # send layer3 (index 6) to layer2's place (index 5): layer2's own entries are displaced
    report = wb.transfer(state, ResNetLike(10), layer_map={6: 5})
    displaced = [r for r in report.where("unused") if r.note == "displaced by layer_map"]
    assert {r.name.split(".")[0] for r in displaced} == {"layer2"} and all(r.layer == 5 for r in displaced)
    moved = [r for r in report.rows if r.status != "unused" and (r.source_name or "").startswith("layer3.")]
    assert moved and all(r.layer == 5 and r.name.startswith("layer2.") for r in moved)
    assert report.counts["missing_in_source"] == sum(k.startswith("layer3.") for k in state)
    # a state_dict whose names the target does not know: layers numbered as they first appear
    renamed = {"stem." + k: v for k, v in state.items() if k.startswith("conv1")}
    assert wb.suggest_layer_map(renamed, ResNetLike(10)) == {}


def test_bad_layer_maps_are_refused_with_the_model_unchanged():
    source, model = wb.build_model(nc=10), wb.build_model(nc=3)
    before = snapshot(model)
    with pytest.raises(ValueError, match="do not exist"):
        wb.transfer(source, model, layer_map={3: 42})
    with pytest.raises(ValueError, match="two source layers"):
        wb.transfer(source, model, layer_map={3: 4, 5: 4})
    assert_same(snapshot(model), before)


# ------------------------------------------------------------------------------------------ input channels
def test_one_channel_model_on_grey_equals_rgb_model_on_repeated_grey():
    source = trained_like(wb.build_model(nc=10, ch=3))
    model = wb.build_model(nc=10, ch=1)
    report = wb.transfer(source, model)
    [adapted] = report.where("adapted")
    assert adapted.name == "layers.0.conv.weight" and adapted.shape == (16, 1, 3, 3)
    assert "sum over channels" in adapted.note
    assert report.n_transferred == report.n_items - 1
    assert report.headline == "Transferred 157/158 items from pretrained weights"
    assert "plus 1 adapted to other input channels" in str(report)
    grey = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(model.eval()(grey), source(grey.repeat(1, 3, 1, 1)), rtol=1e-4, atol=1e-5)


def test_k_channels_repeat_and_scale_and_work_on_foreign_models():
    source = trained_like(ResNetLike(10))
    model = ResNetLike(10, in_chans=4)
    report = wb.transfer(source, model)
    assert [r.name for r in report.where("adapted")] == ["conv1.weight"]
    w = source.conv1.weight
    assert torch.allclose(model.conv1.weight, torch.cat([w, w[:, :1]], 1) * 3 / 4)
    six = adapt_input_conv(w, 6)
    x = torch.rand(1, 3, 8, 8)
    torch.testing.assert_close(nn.functional.conv2d(x.repeat(1, 2, 1, 1), six),
                               nn.functional.conv2d(x, w), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------- layouts lined up by themselves
def in_ultralytics_layout(state: dict, shift_from: int | None = None) -> dict:
    """A workbench state_dict under Ultralytics' names (``layers.{i}`` -> ``model.{i}``).

    Layers from ``shift_from`` on move up one index, as if the source had one more layer there.
    """
    renamed = {}
    for key, tensor in state.items():
        _, i, rest = key.split(".", 2)
        i = int(i) + (shift_from is not None and int(i) >= shift_from)
        renamed[f"model.{i}.{rest}"] = tensor
    return renamed


class UltralyticsStyle(nn.Module):
    """A target laid out as Ultralytics' models are: layer ``i`` is ``model.{i}``."""

    def __init__(self, model: YOLO):
        super().__init__()
        self.model = model.layers


def test_an_ultralytics_layout_lines_up_with_the_workbench_by_itself():
    """yolov8n-cls and build_model("n", task="classify") have the same shapes: 158/158 without a layer_map."""
    torch.manual_seed(0)
    source = in_ultralytics_layout(wb.build_model("n", task="classify", nc=3).state_dict())
    model = wb.build_model("n", task="classify", nc=3)
    report = wb.transfer(source, model)
    assert report.headline == "Transferred 158/158 items from pretrained weights" and not report.where("unused")
    note = "source layout: Ultralytics (model.{i} → layers.{i})"
    assert report.layout == note and str(report).splitlines()[1] == "  " + note
    assert note in report._repr_html_() and note in repr(report)
    state = model.state_dict()
    assert all(torch.equal(state["layers." + k[len("model."):]], v) for k, v in source.items())
    assert {r.source_name for r in report.rows} == set(source)  # the ledger keeps the source's own names


def test_a_workbench_source_lines_up_with_an_ultralytics_layout_target():
    torch.manual_seed(0)
    source, target = wb.build_model("n", task="classify", nc=3), UltralyticsStyle(wb.build_model("n", "classify", nc=3))
    report = wb.transfer(source, target)
    assert report.headline == "Transferred 158/158 items from pretrained weights"
    assert report.layout == "source layout: workbench (layers.{i} → model.{i})"
    assert all(torch.equal(target.state_dict()["model." + k[len("layers."):]], v)
               for k, v in source.state_dict().items())


def test_a_yolov5_source_is_named_by_its_anchors():
    source = in_ultralytics_layout(wb.build_model("n", task="detect", nc=3).state_dict())
    source["model.22.anchors"] = torch.ones(3, 3, 2)
    report = wb.transfer(source, wb.build_model("n", task="detect", nc=3), dry_run=True)
    assert report.layout == "source layout: YOLOv5 (model.{i} → layers.{i})"
    assert report.n_transferred == report.n_items and [r.name for r in report.where("unused")] == ["model.22.anchors"]


def test_an_explicit_layer_map_wins_over_the_layout_default():
    """A source with one extra layer at index 5: by index only layers 0..4 line up; the layer map moves the rest."""
    torch.manual_seed(0)
    model = wb.build_model("n", task="classify", nc=3)
    source = in_ultralytics_layout(wb.build_model("n", task="classify", nc=3).state_dict(), shift_from=5)
    source.update({"model.5.extra.weight": torch.ones(2)})
    by_index = wb.transfer(source, model, dry_run=True)
    assert by_index.layout and {r.layer for r in by_index.where("transferred")} == set(range(5))
    layer_map = {i + 1: i for i in range(5, 10)}
    assert wb.suggest_layer_map(source, model) == {**{i: i for i in range(5)}, **layer_map}
    report = wb.transfer(source, model, layer_map=layer_map)
    assert report.headline == "Transferred 158/158 items from pretrained weights" and report.layer_map == layer_map
    assert [r.name for r in report.where("unused")] == ["model.5.extra.weight"]
    assert torch.equal(model.state_dict()["layers.9.linear.weight"], source["model.10.linear.weight"])


@pytest.mark.parametrize("source", [
    {"model.fc.weight": torch.zeros(3, 4)},  # model.* but not numbered layers
    {"model.0.conv.weight": torch.zeros(16, 3, 3, 3), "extra.weight": torch.zeros(3)},  # not all under model.{i}
    "tiny_resnet"])
def test_a_layout_that_is_neither_is_left_as_it_is(source, request):
    source = request.getfixturevalue(source) if isinstance(source, str) else source
    with pytest.warns(UserWarning, match="no source entry matched"):
        report = wb.transfer(source, wb.build_model("n", task="classify", nc=3))
    assert report.layout == "" and report.n_transferred == 0 and "source layout" not in str(report)
    assert {r.name for r in report.where("unused")} == set(source_state(source))
