"""House rules a user relies on: notebooks stored without outputs, README's commands match CI."""
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_notebooks_are_stored_without_outputs():
    notebooks = sorted((ROOT / "notebooks").rglob("*.ipynb"))
    assert notebooks, "no notebooks found"
    for path in notebooks:
        cells = json.loads(path.read_text())["cells"]
        dirty = [i for i, c in enumerate(cells) if c["cell_type"] == "code" and (c["outputs"] or c["execution_count"])]
        assert not dirty, f"{path.name}: cells {dirty} have outputs; run nbstripout {path.relative_to(ROOT)}"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    command = next(line for line in readme.splitlines() if line.endswith("python -m pytest"))
    assert command in (ROOT / ".ci" / "run").read_text()


def test_the_chinese_readme_gives_the_same_commands_and_every_lesson():
    readme, chinese = (ROOT / "README.md").read_text(), (ROOT / "README.zh.md").read_text(encoding="utf-8")
    assert "README.zh.md" in readme, "README.md should link the Chinese README"
    commands = [line for line in readme.splitlines() if line.startswith("python3 -m venv .venv")]
    assert len(commands) == 2
    assert commands[0].replace("notebooks/00_start_here", "notebooks/zh/00_start_here") in chinese
    assert commands[1] in chinese
    assert "urlpath=lab/tree/notebooks/zh/00_start_here.ipynb" in chinese
    for path in sorted((ROOT / "notebooks" / "zh").glob("[0-9][0-9]_*.ipynb")):
        assert f"(notebooks/zh/{path.name})" in chinese, f"README.zh.md's lesson table misses {path.name}"
