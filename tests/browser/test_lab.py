"""Open the notebooks in a real JupyterLab in headless Chromium, as a learner does.

Run All, move the freeze-depth slider with the keyboard, check the dependent output changed and
the plotly figure rendered. A screenshot is saved always (for the record) and on failure.
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


def test_start_here_runs_and_its_slider_drives_the_output(lab_server, page, scratch_copy, screenshot_on_failure):
    from playwright.sync_api import expect

    nb = open_and_run_all(page, lab_server, scratch_copy("00_start_here.ipynb"))
    expect(nb.locator(".jp-OutputArea-output", has_text="checks ok")).to_be_visible(timeout=180_000)
    assert nb.locator("[data-mime-type='application/vnd.jupyter.stderr'] >> text=Traceback").count() == 0
    assert nb.locator("[data-mime-type='application/vnd.jupyter.error']").count() == 0

    plot = nb.locator(".js-plotly-plot")
    expect(plot).to_have_count(1)
    points = page.evaluate("() => Array.from(document.querySelectorAll('.js-plotly-plot'))"
                           ".map(g => (g.data || []).map(t => (t.y || []).length))")
    assert points[0][0] > 10, f"the loss curve should have one point per step, got {points}"

    readout = nb.locator(".widget-hslider .widget-readout").first
    summary = nb.locator(".widget-label", has_text="depth=").first
    expect(readout).to_have_text("0")
    expect(summary).to_contain_text("no layer frozen")
    nb.locator(".widget-hslider .noUi-handle").first.focus()
    for _ in range(5):
        page.keyboard.press("ArrowRight")
    expect(readout).to_have_text("5")
    expect(summary).to_contain_text("depth=5: layers 0-4 frozen")
    expect(nb.locator(".widget-html tr", has_text="frozen")).to_have_count(5)


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
