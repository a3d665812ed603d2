"""The Chinese notebooks keep step with the English ones, cell for cell.

For every English notebook ``notebooks/<path>`` there is ``notebooks/zh/<path>``: a first cell that
switches the workbench to Chinese, then the English notebook's cells in the same order, with every
code cell identical and every markdown cell written in Chinese. A change to one language's code
fails here until the other follows. Because the code is identical and every string the code shows
goes through the catalogue (tests/test_i18n.py), only ``zh/00_start_here.ipynb`` runs under nbval
(see pyproject.toml); the other Chinese notebooks would repeat the English runs' computations.
"""
import json
import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
ZH = NOTEBOOKS / "zh"
LANGUAGE_CELL = 'import workbench as wb\n\nwb.set_language("zh")  # 面板、图表和提示改用中文'
CJK = re.compile(r"[\u4e00-\u9fff]")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")

ENGLISH = sorted(p.relative_to(NOTEBOOKS) for p in NOTEBOOKS.rglob("*.ipynb") if ZH not in p.parents)


def cells(path: Path) -> list[tuple[str, str]]:
    return [(c["cell_type"], "".join(c["source"])) for c in json.loads(path.read_text(encoding="utf-8"))["cells"]]


def test_every_notebook_is_covered():
    assert ENGLISH, "no English notebooks found"
    chinese = sorted(p.relative_to(ZH) for p in ZH.rglob("*.ipynb"))
    assert chinese == ENGLISH, "notebooks/zh must mirror notebooks/ (same names, same folders)"


@pytest.mark.parametrize("name", ENGLISH, ids=str)
def test_code_cells_are_identical(name):
    english, chinese = cells(NOTEBOOKS / name), cells(ZH / name)
    assert chinese[0] == ("code", LANGUAGE_CELL), f"zh/{name}: the first cell must switch to Chinese"
    chinese = chinese[1:]
    assert [t for t, _ in chinese] == [t for t, _ in english], (
        f"zh/{name}: cells do not correspond one to one with {name} (a cell added or removed in one language)")
    for i, ((kind, en), (_, zh)) in enumerate(zip(english, chinese)):
        if kind == "code":
            assert zh == en, f"zh/{name}: code cell {i + 1} differs from the English notebook; copy it over"


@pytest.mark.parametrize("name", ENGLISH, ids=str)
def test_markdown_is_written_in_chinese(name):
    for i, (kind, text) in enumerate(cells(ZH / name)):
        if kind == "markdown":
            assert CJK.search(text), f"zh/{name}: markdown cell {i} has no Chinese text"


@pytest.mark.parametrize("name", ENGLISH, ids=str)
def test_links_resolve(name):
    path = ZH / name
    for kind, text in cells(path):
        if kind != "markdown":
            continue
        for target in LINK.findall(text):
            if "://" in target:
                continue
            assert (path.parent / target).exists(), f"zh/{name}: link {target!r} points at nothing"


def _punctuation(ch: str) -> bool:
    return ch == "" or unicodedata.category(ch)[0] in "PS"


def unrendered_bold(text: str) -> list[str]:
    """``**`` runs that CommonMark will not take as bold: beside Chinese text, ``**学习率 ×**调到`` stays literal.

    A closing ``**`` right after punctuation must be followed by a space or punctuation (and an opening one
    right before punctuation must follow them), because Chinese has no spaces to mark a word's edge.
    """
    text = re.sub(r"`[^`]*`", "C", text)
    found = []
    for paragraph in re.split(r"\n\s*\n", text):
        runs = list(re.finditer(r"(?<!\*)\*\*(?!\*)", paragraph))
        for k, run in enumerate(runs):
            before = paragraph[run.start() - 1] if run.start() else ""
            after = paragraph[run.end()] if run.end() < len(paragraph) else ""
            opens = not (after == "" or after.isspace()) and (
                not _punctuation(after) or before == "" or before.isspace() or _punctuation(before))
            closes = not (before == "" or before.isspace()) and (
                not _punctuation(before) or after == "" or after.isspace() or _punctuation(after))
            if not (opens if k % 2 == 0 else closes):
                found.append(paragraph[max(0, run.start() - 15): run.end() + 15])
    return found


@pytest.mark.parametrize("name", ENGLISH, ids=str)
def test_bold_renders(name):
    for i, (kind, text) in enumerate(cells(ZH / name)):
        if kind == "markdown":
            assert not unrendered_bold(text), f"zh/{name}: cell {i}: ** shown literally: {unrendered_bold(text)}"


def test_the_bold_check_catches_a_literal_pair():
    assert unrendered_bold("把**头部学习率 ×**调到 10")
    assert not unrendered_bold("把**头部学习率 ×** 调到 10，点**开始**。")
