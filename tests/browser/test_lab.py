"""Open the notebooks in a real JupyterLab in headless Chromium, as a learner does.

Run All, press Start, move the freeze-depth slider with the keyboard during the run, and check the
figure follows. A screenshot is saved always (for the record) and on failure.
"""
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser
ART = Path(os.environ.get("WB_ARTIFACTS", Path(tempfile.gettempdir()) / "wb-artifacts"))


def open_and_run_all(page, lab, nb_path):
    from playwright.sync_api import expect

    page.goto(f"{lab['url']}/lab/tree/{nb_path}?reset&token={lab['token']}")
    nb = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
    expect(nb.locator(".jp-Cell").first).to_be_visible(timeout=60_000)
    deadline = time.time() + 120  # a started kernel, idle; accept a "Select Kernel" dialog if one pops up
    kernel_idle = page.get_by_text(re.compile(r"\(ipykernel\) \| Idle"))
    while not kernel_idle.count():
        dialog = page.locator(".jp-Dialog")
        if dialog.count() and dialog.first.is_visible():
            dialog.locator(".jp-Dialog-button.jp-mod-accept").first.click()
        assert time.time() < deadline, "the kernel never started"
        page.wait_for_timeout(250)
    page.wait_for_timeout(1000)
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
    expect(nb.locator(".jp-InputPrompt", has_text=re.compile(r"\[(\*|1)\]"))).not_to_have_count(0, timeout=30_000)
    return nb


@pytest.fixture
def scratch_copy(lab_server):
    """Run a copy under build/ (JupyterLab serves no hidden folders) so the tracked notebook stays clean."""
    folder = lab_server["root"] / "build" / "ui-scratch"
    folder.mkdir(parents=True, exist_ok=True)

    def copy(name: str) -> str:
        target = folder / f"{Path(name).stem}_{os.getpid()}.ipynb"
        shutil.copy(lab_server["root"] / "notebooks" / name, target)
        return str(target.relative_to(lab_server["root"]))

    yield copy
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def screenshot_on_failure(page, request):
    yield
    ART.mkdir(parents=True, exist_ok=True)
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    page.screenshot(path=str(ART / f"{request.node.name}{'_FAILED' if failed else ''}.png"), full_page=True)


FIGURE_STATE = """() => {
    const g = document.querySelector('.js-plotly-plot');
    const trace = name => (g.data || []).find(t => t.name === name) || {};
    const heat = (g.data || []).find(t => t.type === 'heatmap') || {};
    const z = Array.from(heat.z || []), y = Array.from(heat.y || []), x = Array.from(heat.x || []);
    const lit = z.filter((v, k) => y[k] === 0 && Number.isFinite(v)).length;
    return {steps: x.length ? Math.max(...x) : 0, row0_lit: lit, cells: z.length,
            frozen: (trace('frozen').y || []).length,
            marks: Array.from(trace('depth changes').text || []),
            depth: Array.from(trace('freeze depth').y || []).slice(0, 3).concat(
                Array.from(trace('freeze depth').y || []).slice(-3))};  // first and last three steps
}"""


def figure_state(page) -> dict:
    return page.evaluate(FIGURE_STATE)


def wait_for(page, condition, what: str, seconds: float = 90) -> dict:
    deadline = time.time() + seconds
    while True:
        state = figure_state(page)
        if condition(state):
            return state
        assert time.time() < deadline, f"timed out waiting for {what}; the figure shows {state}"
        page.wait_for_timeout(300)


def test_start_here_studio_the_slider_steers_a_running_fine_tune(lab_server, page, scratch_copy,
                                                                 screenshot_on_failure):
    from playwright.sync_api import expect

    nb = open_and_run_all(page, lab_server, scratch_copy("00_start_here.ipynb"))
    expect(nb.locator(".jp-OutputArea-output", has_text="checks ok")).to_be_visible(timeout=180_000)
    assert nb.locator("[data-mime-type='application/vnd.jupyter.stderr'] >> text=Traceback").count() == 0
    assert nb.locator("[data-mime-type='application/vnd.jupyter.error']").count() == 0
    expect(nb.locator(".js-plotly-plot")).to_have_count(1)
    state = wait_for(page, lambda s: "9→0" in s["marks"], "the pre-run's unfreezing on the timeline")
    assert state["row0_lit"] > 0 and state["depth"][0] == 9 and state["depth"][-1] == 0, state

    studio = nb.locator(".widget-vbox", has=page.locator(".widget-button", has_text="Start")).first
    studio.locator(".widget-button", has_text="Reset").click()
    wait_for(page, lambda s: s["steps"] == 0, "Reset to clear the heatmap")
    readout = studio.locator(".widget-hslider .widget-readout").first
    handle = studio.locator(".widget-hslider .noUi-handle").first
    handle.focus()
    for _ in range(9):
        page.keyboard.press("ArrowRight")
    expect(readout).to_have_text("9")
    wait_for(page, lambda s: s["frozen"] == 9, "the slider's preview: layers 0-8 frozen")  # the kernel has depth 9
    epochs = studio.locator(".widget-inline-hbox", has_text="epochs").locator("input").first
    epochs.fill("400")  # long enough to steer by hand
    epochs.press("Enter")
    studio.locator(".widget-button", has_text="Start").click()
    before = wait_for(page, lambda s: s["steps"] >= 3, "the first live frames")
    assert before["row0_lit"] == 0 and before["marks"] == ["9"], before  # frozen rows are blank
    handle.focus()
    for _ in range(9):
        page.keyboard.press("ArrowLeft")
    expect(readout).to_have_text("0")
    after = wait_for(page, lambda s: len(s["marks"]) > 1 and s["marks"][-1].endswith("→0") and s["row0_lit"] > 0,
                     "the slider's change on the timeline and layer 0 lighting up")  # keys may land on two steps
    studio.locator(".widget-button", has_text="Stop").click()
    expect(studio.locator(".widget-html", has_text="interrupted").first).to_be_visible(timeout=60_000)
    assert after["steps"] > before["steps"]
    ART.mkdir(parents=True, exist_ok=True)
    nb.locator(".js-plotly-plot").first.evaluate("g => g.scrollIntoView({block: 'end'})")
    page.wait_for_timeout(500)
    page.screenshot(path=str(ART / "studio_after_unfreezing.png"), full_page=True)


def test_weight_transfer_lesson_panel_follows_the_class_count(lab_server, page, scratch_copy, screenshot_on_failure):
    from playwright.sync_api import expect

    nb = open_and_run_all(page, lab_server, scratch_copy("02_weight_transfer.ipynb"))
    expect(nb.locator(".jp-OutputArea-output", has_text="checks ok")).to_be_visible(timeout=240_000)
    assert nb.locator("[data-mime-type='application/vnd.jupyter.error']").count() == 0
    panel = nb.locator(".widget-vbox", has=page.locator(".widget-label", has_text="target classes")).first
    counts = panel.locator(".widget-label", has_text="Transferred").first
    expect(counts).to_contain_text("Transferred 156/158 items")
    expect(panel.locator(".js-plotly-plot").first).to_be_visible()
    box = panel.locator(".widget-inline-hbox", has_text="target classes").locator("input").first
    box.fill("10")
    box.press("Enter")
    expect(counts).to_contain_text("Transferred 158/158 items")


def test_start_here_in_chinese_shows_chinese_labels(lab_server, page, scratch_copy, screenshot_on_failure):
    """The Chinese 00 switches the workbench to Chinese in its first cell: the studio speaks Chinese."""
    from playwright.sync_api import expect

    nb = open_and_run_all(page, lab_server, scratch_copy("zh/00_start_here.ipynb"))
    expect(nb.locator(".jp-OutputArea-output", has_text="checks ok")).to_be_visible(timeout=180_000)
    assert nb.locator("[data-mime-type='application/vnd.jupyter.error']").count() == 0
    studio = nb.locator(".widget-vbox", has=page.locator(".widget-button", has_text="开始")).first
    for caption in ("开始", "停止", "重置"):
        expect(studio.locator(".widget-button", has_text=caption).first).to_be_visible()
    expect(studio.locator(".widget-inline-hbox", has_text="轮数").first).to_be_visible()
    assert studio.locator(".widget-button", has_text=re.compile(r"^(Start|Stop|Reset)$")).count() == 0
    texts = nb.locator(".js-plotly-plot").first.evaluate(
        "g => [g.layout.title && g.layout.title.text, ...Object.keys(g.layout).filter(k => k.startsWith('yaxis'))"
        ".map(k => g.layout[k].title && g.layout[k].title.text), ...(g.data || []).map(t => t.name)]")
    assert any(re.search(r"[\u4e00-\u9fff]", str(t)) for t in texts), texts
    ART.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ART / "studio_in_chinese.png"), full_page=True)
