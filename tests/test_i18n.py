"""The Chinese catalogue covers every translated string, keeps their placeholders, and switching language
changes what panels, figures and summaries say, while English stays exactly as it was."""
import ast
import gettext
import importlib.util
import string
import sys
import warnings
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

import workbench as wb
from workbench import data, i18n
from workbench.experiments.pretraining import Sweep
from workbench.panels import FreezeDepthPreview, FreezePanel, Studio, TrainPanel, WarmupPanel
from workbench.plots import grad_heatmap, loss_curve, lr_curves, signal_plot, training_dashboard
from workbench.plots.layers import frozen_span
from workbench.plots.signals import signal_figure
from workbench.plots.studio import layer_rows, studio_figure
from workbench.stability import SignalRow
from workbench.table import width
from workbench.training import Freeze

PACKAGE = Path(i18n.__file__).parent
PO = PACKAGE / "locale" / "zh" / "LC_MESSAGES" / "workbench.po"
MO = PO.with_suffix(".mo")
MARKERS = ("_", "N_", "gloss", "ngettext")


def code_msgids() -> dict[str | tuple[str, str], str]:
    """Every literal string given to ``_``, ``N_``, ``gloss`` or ``ngettext`` in the package, with where it is."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in MARKERS:
                literals = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
                count = 2 if node.func.id == "ngettext" else 1
                if len(literals) == count:
                    key = tuple(literals) if count == 2 else literals[0]
                    found.setdefault(key, f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    return found


def catalogue() -> dict:
    with PO.open("rb") as f:
        return {m.id: m.string for m in read_po(f) if m.id}


def placeholders(text: str) -> set[str]:
    return {f"{{{name}{'!' + conv if conv else ''}{':' + spec if spec else ''}}}"
            for _, name, spec, conv in string.Formatter().parse(text) if name is not None}


@pytest.fixture
def zh():
    i18n.set_language("zh")
    yield
    i18n.set_language("en")


def test_every_string_in_the_code_has_a_translation_and_every_entry_is_used():
    code, po = code_msgids(), catalogue()
    untranslated = {k: where for k, where in code.items() if k not in po or not all(po[k] if isinstance(
        po[k], tuple) else [po[k]])}
    assert not untranslated, f"add these to {PO.name} (then compile it): {untranslated}"
    unused = [k for k in po if k not in code]
    assert not unused, f"catalogue entries no code uses any more: {unused}"
    assert len(po) > 150


def test_translations_keep_the_placeholders_of_their_msgid():
    for msgid, translation in catalogue().items():
        singular = msgid[0] if isinstance(msgid, tuple) else msgid
        for form in translation if isinstance(translation, tuple) else [translation]:
            assert placeholders(form) == placeholders(singular), (msgid, form)
        if isinstance(msgid, tuple):
            assert placeholders(msgid[0]) == placeholders(msgid[1]), msgid


def test_the_compiled_catalogue_matches_the_po():
    with MO.open("rb") as f:
        compiled = gettext.GNUTranslations(f)
    for msgid, translation in catalogue().items():
        if isinstance(msgid, tuple):
            for n in (1, 2):
                assert compiled.ngettext(*msgid, n) == translation[0], msgid
        else:
            assert compiled.gettext(msgid) == translation, (
                f"{MO.name} is stale: in {PO.parent} run msgfmt -o {MO.name} {PO.name} ({msgid!r})")


@pytest.mark.parametrize("name", ["zh", "zh_CN", "zh-CN", "ZH_cn.UTF-8", "en", "en_GB", "C"])
def test_language_names_are_accepted(name):
    i18n.set_language(name)
    assert i18n.language() == ("zh" if name.lower().startswith("zh") else "en")
    i18n.set_language("en")


@pytest.mark.parametrize("name", ["fr", "klingon", "", 3])
def test_an_unknown_language_is_refused_with_the_choices(name):
    with pytest.raises(ValueError, match=r"is not available: choose one of 'en' \(English\), 'zh'"):
        i18n.set_language(name)
    assert i18n.language() == "en"


def test_the_default_follows_workbench_lang_then_the_locale():
    assert i18n.default_language({}) == "en"
    assert i18n.default_language({"LANG": "zh_CN.UTF-8"}) == "zh"
    assert i18n.default_language({"LANGUAGE": "fr:zh_TW", "LANG": "en_US.UTF-8"}) == "zh"
    assert i18n.default_language({"LC_ALL": "de_DE.UTF-8", "LANG": "zh_CN.UTF-8"}) == "en"  # LC_ALL wins, unknown
    assert i18n.default_language({"WORKBENCH_LANG": "en", "LANG": "zh_CN.UTF-8"}) == "en"
    assert i18n.default_language({"WORKBENCH_LANG": "zh-CN"}) == "zh"
    with pytest.warns(UserWarning, match="WORKBENCH_LANG='fr' is not available"):
        assert i18n.default_language({"WORKBENCH_LANG": "fr", "LANG": "zh_CN"}) == "en"


def test_set_language_is_exported():
    assert wb.set_language is i18n.set_language


def test_a_panel_built_after_switching_speaks_chinese(zh):
    panel = FreezePanel(wb.build_model(nc=3), depth=3, steps=0)
    assert panel.depth.description == "冻结深度" and panel.bn.description == "批归一化策略"
    assert panel.summary.value.startswith("depth=3，bn='eval'：第 0–2 层已冻结")
    assert panel.timing.value == "单步耗时：未测量（steps=0）"
    assert panel.figure.layout.xaxis.title.text == "层"
    assert [t.name for t in panel.figure.data][:3] == ["已冻结", "部分冻结", "可训练"]
    warmup = WarmupPanel(profile="ultralytics", warmup_epochs=1, epochs=5, nb=10)
    assert warmup.warmup_epochs.description == "预热轮数"
    assert "预热中" in warmup.table.value
    i18n.set_language("en")
    assert FreezePanel(wb.build_model(nc=3), steps=0).depth.description == "freeze depth"


def test_figures_built_after_switching_have_chinese_titles_and_axes(zh):
    history = wb.History(loss=[2.0, 1.0], epoch=[0, 0], val={"accuracy": [0.5]}, epochs_done=1)
    fig = loss_curve(history)
    titles = fig.layout.title.text, fig.layout.xaxis.title.text, fig.layout.yaxis.title.text
    assert titles == ("训练损失", "步数", "损失")
    assert [t.name for t in fig.data] == ["训练损失", "验证准确率"]
    preview = wb.YoloSchedule("ultralytics").preview(wb.param_groups(wb.build_model(), 0.01), nb=10, epochs=3)
    lr = lr_curves(preview)
    assert lr.layout.title.text == "各参数组的学习率与动量"
    assert lr.layout.yaxis.title.text == "学习率（对数轴；不显示 0）"
    assert lr.layout.annotations[0].text == f"学习率预热（{preview.warmup} 次迭代）"


def test_printed_summaries_translate_and_keep_ultralytics_lines(zh):
    report = wb.transfer(wb.build_model(nc=10), wb.build_model(nc=3), dry_run=True)
    lines = str(report).splitlines()
    assert lines[0].startswith("Transferred 156/158 items from pretrained weights")  # as Ultralytics prints it
    assert "Ultralytics 日志的原文" in lines[1]
    assert report.headline == "Transferred 156/158 items from pretrained weights"
    summary = wb.freeze(wb.build_model(nc=3), depth=3).summary()
    assert summary.startswith("freeze depth=3, bn='eval'：在 3 层中冻结 18 个张量")
    assert "--freeze 3" in FreezeDepthPreview(wb.build_model(), depth=3).summary.value
    history = wb.History(loss=[1.0], epoch=[0], epochs_done=1, status="completed")
    assert repr(history) == "History(训练完成：1 步，1 轮，最后损失 1.0000)"


def test_report_tables_take_translated_headings_and_stay_aligned(zh):
    lines = str(wb.freeze(wb.build_model(nc=3), depth=3).as_table()).splitlines()
    assert lines[1].split() == ["编号", "名称", "阶段", "类型", "改动", "改动的参数量", "已冻结", "参数量", "bn"]
    assert {width(line) for line in lines[1:]} == {width(lines[1])}  # CJK headings take two columns a character
    html = wb.transfer(wb.build_model(nc=10), wb.build_model(nc=3), dry_run=True)._repr_html_()
    assert "<th>覆盖率</th>" in html and "<th>transferred</th>" in html  # statuses are the ledger's own names


def test_english_text_is_unchanged():
    """Golden strings taken before the text went through the catalogue: the English lessons read the same."""
    i18n.set_language("en")
    model = wb.build_model(nc=3)
    panel = FreezePanel(model, depth=9, steps=0)
    assert panel.summary.value == ("depth=9, bn='eval': layers 0-8 frozen, 1,108,048 parameters frozen; trainable "
                                   "334,083 of 1,442,131 (23.2%)")
    assert FreezeDepthPreview(wb.build_model(), depth=3).summary.value == (
        "depth=3: layers 0-2 frozen (12,496 parameters), 7 layers trainable (1,438,602 parameters)")
    assert FreezeDepthPreview(wb.build_model(), depth=0).summary.value == (
        "depth=0: no layer frozen, 10 layers trainable (1,451,098 parameters)")
    assert panel.figure.layout.title.text == ("layers 0-8 frozen · trainable 334,083 of 1,442,131 parameters "
                                              "(23.2%)")
    history = wb.History(loss=[2.0, 1.0], epoch=[0, 0], val={"accuracy": [0.5]}, epochs_done=1, status="completed")
    assert repr(history) == "History(completed: 2 steps, 1 epoch, last loss 1.0000, val accuracy 0.5000)"
    assert repr(wb.History(loss=[2.0], epoch=[0], status="interrupted")) == (
        "History(interrupted: 1 steps, stopped in epoch 1 (0 completed), last loss 2.0000)")
    fig = loss_curve(history)
    assert (fig.layout.title.text, fig.layout.xaxis.title.text, [t.name for t in fig.data]) == (
        "Training loss", "step", ["train loss", "val accuracy"])
    report = wb.transfer(wb.build_model(nc=10), wb.build_model(nc=3), dry_run=True)
    assert str(report).splitlines()[:3] == ["Transferred 156/158 items from pretrained weights  "
                                            "(dry run: nothing loaded)",
                                            "Parameter coverage: 99.7% of 1,442,131 values",
                                            "Items: 80 parameters + 78 buffers (26 num_batches_tracked)"]
    h = wb.History(loss=[1.0, 50.0], epoch=[0, 0], grad_norm=[20.0, 5.0], clip_coef=[0.5, 1.0], layer_names=["a"],
                   layer_grad_norms=[[1.0], [10.0]])
    heat = grad_heatmap(h)
    assert [t.name for t in heat.data] == ["log10 grad norm", "total norm", "clipped (1 steps)"]
    assert (heat.layout.title.text, heat.layout.yaxis.title.text, heat.layout.yaxis2.title.text,
            heat.layout.annotations[0].text) == ("Gradient norms per layer", "layer", "total |g|", "clip 10")
    assert wb.freeze(wb.build_model(nc=3), depth=3).summary() == (
        "freeze depth=3, bn='eval': froze 18 tensors (12,496 parameters) in 3 layers; trainable 1,429,635 of "
        "1,442,131 (99.1%)")


def test_a_matplotlib_figure_renders_chinese_without_missing_glyphs(zh):
    assert importlib.util.find_spec("noto_cjk_sans_otc"), "install the dependencies: pip install -e '.[dev]'"
    rows = [SignalRow(scheme, bn, i, f"layers.{i}", "Conv", 0.0, 1.0 + i) for scheme in ("kaiming", "zero")
            for bn in (True, False) for i in range(3)]
    fig = signal_plot(rows)
    assert fig.axes[0].get_title() == "有批归一化" and fig.axes[0].get_xlabel() == "层编号"
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*missing from font")
        fig.canvas.draw()
    i18n.set_language("en")
    english = signal_plot(rows)
    assert english.axes[0].get_title() == "with BatchNorm"
    assert english.texts[0].get_fontfamily() == ["sans-serif"]  # English figures keep matplotlib's fonts


def test_without_the_font_package_a_warning_names_it(zh, monkeypatch):
    from workbench.plots import fonts

    monkeypatch.setattr(fonts, "_registered", [])
    monkeypatch.setitem(sys.modules, "noto_cjk_sans_otc", None)  # as if it were not installed
    with pytest.warns(UserWarning, match="pip install noto-cjk-sans-otc"):
        assert fonts.font_rc() == {}


def _run_history(status="completed"):
    return wb.History(loss=[2.0, 1.0], epoch=[0, 0], val={"loss": [0.9, 0.0047], "accuracy": [0.5, 1.0]},
                      epochs_done=2, status=status,
                      lr={"weight": [0.0, 0.01], "norm": [0.0, 0.01], "bias": [0.1, 0.01]},
                      layer_names=["a", "b"], layer_grad_norms=[[1.0, 10.0], [0.1, 0.0]])


def _studio_trace_names(history):
    model = wb.build_model(nc=3)
    preview = wb.YoloSchedule("ultralytics").preview(wb.param_groups(model, 0.01), nb=1, epochs=2)
    figure = studio_figure(layer_rows(model), history, preview=preview)
    lines = [t for t in figure.data if (t.legendgroup or "").startswith("lr ") or t.yaxis == "y9"]  # LR, val metric
    return figure.to_dict()["layout"]["title"], [t.name for t in lines]


def test_run_statuses_metrics_and_lr_lines_read_in_chinese_while_the_record_stays_english(zh):

    history = _run_history()
    assert repr(history) == "History(训练完成：2 步，2 轮，最后损失 1.0000，验证损失 0.0047，验证准确率 1.0000)"
    assert history.status == "completed" and list(history.val) == ["loss", "accuracy"]  # the record keeps its names
    assert repr(wb.History(loss=[1.0], epoch=[0], status="interrupted", val={"mAP50": [0.25]})) == (
        "History(已中断：1 步，停在第 1 轮（已完成 0 轮），最后损失 1.0000，验证 mAP50 0.2500)")
    dashboard = training_dashboard(history)
    assert dashboard.layout.title.text == "训练完成：第 2 步，已完成 2 轮"
    assert [t.name for t in dashboard.data][1:3] == ["学习率 weight = norm", "学习率 bias"]
    assert dashboard.layout.yaxis2.title.text == "学习率"
    title, names = _studio_trace_names(history)
    assert title.startswith("训练完成：第 2/2 步，已完成 2 轮")
    assert names == ["学习率 weight（= norm） 预览", "学习率 norm（= weight） 预览", "学习率 bias 预览",
                     "学习率 weight（= norm）", "学习率 norm（= weight）", "学习率 bias", "验证准确率"]
    assert frozen_span([(0, "Conv", "backbone", 10, 10, ""), (1, "ReLU", "backbone", 0, 0, ""),
                        (2, "Conv", "backbone", 5, 10, "affine")]) == (
        "第 0–2 层已冻结（其中 1 层部分冻结，1 层没有参数）")
    rows = [SignalRow("kaiming", bn, i, f"layers.{i}", "Conv", 0.0, 1.0 + i) for bn in (True, False) for i in range(2)]
    assert [signal_figure(r).layout.title.text for r in (rows, rows[2:])] == [
        "一个批次上各层输出的标准差", "一个批次上各层输出的标准差（无批归一化）"]
    assert Sweep(()).figure().layout.title.text == "不同设置下：预训练权重与从零训练对比"  # the default, at call time


def test_panel_status_lines_use_chinese_words_and_punctuation(zh, tiny_shapes):

    train, val = tiny_shapes
    studio = Studio(wb.build_model(nc=3), train, val, epochs=1, batch_size=8)
    assert studio.status.value.startswith("YOLO 的权重：Transferred 158/158 items")
    assert studio.bn.description == "批归一化"
    assert studio._status_text(_run_history()) == (
        "训练完成：第 2 步，已完成 2 轮，损失 1.0000，验证损失 0.005，验证准确率 1.000")
    panel = TrainPanel(wb.build_model(nc=3), train, val, epochs=1, batch_size=8)
    panel.history = _run_history()
    panel.redraw()
    assert panel.status.value == "训练完成：第 2 步，已完成 2 轮，损失 1.0000，验证损失 0.005，验证准确率 1.000"


def test_the_layer_table_takes_translated_headings_and_total(zh):
    lines = str(wb.layer_table(wb.build_model(nc=3))).splitlines()
    assert lines[0].split() == ["编号", "名称", "阶段", "类型", "参数量", "可训练", "批归一化策略"]
    assert lines[-1].split()[0] == "合计" and lines[1].split()[2:4] == ["backbone", "Conv"]  # values stay as named
    trainable_end = width(lines[0][:lines[0].index("可训练") + 3])  # right-aligned under a two-column-wide heading
    assert width(lines[1].rstrip()) == trainable_end and lines[1].rstrip().endswith("464")


@pytest.fixture(scope="module")
def tiny_shapes():
    return data.split(data.shapes(4, classes=3, size=16, seed=0), 0.25, seed=0)


def test_english_text_of_run_labels_lr_lines_and_tables_is_unchanged(tiny_shapes):
    """Golden strings taken before statuses, metric names, LR lines and the layer table went through the catalogue."""

    i18n.set_language("en")
    history = _run_history()
    assert repr(history) == ("History(completed: 2 steps, 2 epochs, last loss 1.0000, val loss 0.0047, "
                             "val accuracy 1.0000)")
    assert [repr(wb.History(loss=[1.0], epoch=[0], status=s, val={"mAP50": [0.25]})) for s in ("new", "failed")] == [
        "History(new: 1 steps, 0 epochs, last loss 1.0000, val mAP50 0.2500)",
        "History(failed: 1 steps, stopped in epoch 1 (0 completed), last loss 1.0000, val mAP50 0.2500)"]
    dashboard = training_dashboard(history)
    assert (dashboard.layout.title.text, dashboard.layout.yaxis2.title.text, [t.name for t in dashboard.data]) == (
        "completed: step 2, epoch 2", "lr", ["loss", "lr weight = norm", "lr bias", "log10 grad norm"])
    title, names = _studio_trace_names(history)
    assert title.startswith("completed: step 2 of 2, epoch 2")
    assert names == ["lr weight (= norm) preview", "lr norm (= weight) preview", "lr bias preview",
                     "lr weight (= norm)", "lr norm (= weight)", "lr bias", "val accuracy"]  # previews beneath records
    assert frozen_span([(0, "Conv", "backbone", 10, 10, ""), (1, "ReLU", "backbone", 0, 0, ""),
                        (2, "Conv", "backbone", 5, 10, "affine")]) == (
        "layers 0-2 frozen (1 of them partly, 1 has no parameters)")
    rows = [SignalRow("kaiming", bn, i, f"layers.{i}", "Conv", 0.0, 1.0 + i) for bn in (True, False) for i in range(2)]
    assert [signal_figure(r).layout.title.text for r in (rows, rows[:2])] == [
        "Std of each layer's output on one batch", "Std of each layer's output on one batch with BatchNorm"]
    assert Sweep(()).figure().layout.title.text == "Pretrained against scratch over the knobs"
    train, val = tiny_shapes
    studio = Studio(wb.build_model(nc=3), train, val, epochs=1, batch_size=8)
    assert studio.status.value == "YOLO weights: Transferred 158/158 items from pretrained weights · press Start"
    assert studio.bn.description == "BatchNorm"
    assert _transfer_legend() == ["transferred", "re-initialised"]
    assert studio._status_text(wb.History(loss=[1.0], epoch=[0], status="interrupted", val={"mAP50": [0.5]},
                                          events=[(1, "interrupted after step 1")])) == (
        "interrupted: step 1, epoch 0, loss 1.0000, val mAP50 0.500 · interrupted after step 1")
    panel = TrainPanel(wb.build_model(nc=3), train, val, epochs=1, batch_size=8)
    panel.history = history
    panel.redraw()
    assert panel.status.value == "completed: step 2, epoch 2, loss 1.0000, val loss 0.005, val accuracy 1.000"
    lines = str(wb.layer_table(wb.build_model(nc=3))).splitlines()
    assert lines[0] == "index  name      stage     type         params  trainable  bn policy"
    assert lines[-1].split() == ["total", "1,442,131", "1,442,131"]


def _non_finite_history():
    from workbench.step import StepFailed, record_non_finite

    history = wb.History(loss=[1.0] * 5, epoch=[0] * 5, status="running")
    record_non_finite(history, StepFailed("gradient", float("inf"), "layers.0", "layers.0.conv.weight"))
    return history


def test_events_are_recorded_in_english_and_shown_in_chinese(zh, tiny_shapes):
    from workbench.run_labels import event_text

    history = _non_finite_history()
    english = ("step 6: non-finite gradient inf in layer layers.0 (parameter layers.0.conv.weight); the model holds "
               "the weights of step 5 (restored)")
    assert history.events[-1] == (5, english)  # the record is the same in every language
    assert event_text(history.events[-1][1]) == (
        "第 6 步：梯度出现非有限值 inf，位于 layers.0（参数 layers.0.conv.weight）；"
        "模型保留的是第 5 步的权重（已恢复）")
    train, _val = tiny_shapes
    run = wb.fit(wb.build_model(nc=3), train, epochs=2, batch_size=4, freeze=Freeze({0: 9, 1: 2}),
                 progress=False)
    assert [t for _, t in run.events] == ["step 1 (epoch 1): freeze depth 9",
                                          "step 3 (epoch 2): freeze depth 2 (was 9)"]
    assert [event_text(t) for _, t in run.events] == ["第 1 步（第 1 轮）：冻结深度改为 9",
                                                      "第 3 步（第 2 轮）：冻结深度改为 2（原为 9）"]
    assert event_text("a line recorded elsewhere") == "a line recorded elsewhere"
    panel = TrainPanel(wb.build_model(nc=3), train, epochs=1, batch_size=8)
    panel.history = history
    panel.redraw()
    assert panel.status.value == ("出现非有限值：第 5 步，已完成 0 轮，损失 1.0000 · 第 6 步：梯度出现非有限值 inf，"
                                  "位于 layers.0（参数 layers.0.conv.weight）；模型保留的是第 5 步的权重（已恢复）")


def test_english_event_lines_on_the_panels_are_unchanged(tiny_shapes):
    i18n.set_language("en")
    train, _val = tiny_shapes
    panel = TrainPanel(wb.build_model(nc=3), train, epochs=1, batch_size=8)
    panel.history = _non_finite_history()
    panel.redraw()
    assert panel.status.value == ("non_finite: step 5, epoch 0, loss 1.0000 · step 6: non-finite gradient inf in layer "
                                  "layers.0 (parameter layers.0.conv.weight); the model holds the weights of step 5 "
                                  "(restored)")


def _transfer_legend() -> list[str]:
    """The studio's transfer column for a head that takes nothing from the source (6 classes into 3)."""
    from foreign_models import TinyResNet

    model = TinyResNet(3)
    figure = studio_figure(layer_rows(model), report=wb.transfer(TinyResNet(6), model, dry_run=True))
    return [t.name for t in figure.data if t.legendgroup == "col4" and t.showlegend]


def test_the_studio_names_its_own_transfer_state_in_chinese_and_keeps_the_ledger_statuses(zh):
    assert _transfer_legend() == ["transferred", "重新初始化"]  # "transferred" is the ledger's status, as printed
