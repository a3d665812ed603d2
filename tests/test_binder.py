"""The Binder configuration, checked offline: what repo2docker reads, the pins, the start page."""
import re
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
BINDER = ROOT / "binder"


def _pins() -> dict[str, str]:
    pins = {}
    for line in (BINDER / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            name, _, version = line.partition("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def test_binder_files_are_present_and_install_the_package():
    assert (BINDER / "requirements.txt").is_file() and (BINDER / "runtime.txt").is_file()
    assert re.fullmatch(r"python-3\.\d+\s*", (BINDER / "runtime.txt").read_text())
    post_build = (BINDER / "postBuild").read_text()
    assert "pip install" in post_build and "-e ." in post_build
    assert (BINDER / "postBuild").stat().st_mode & 0o111, "postBuild must be executable"


def test_binder_pins_satisfy_the_project_requirements():
    pins = _pins()
    assert pins["torch"].endswith("+cpu"), "Binder has no GPU: pin the CPU build"
    assert "download.pytorch.org/whl/cpu" in (BINDER / "requirements.txt").read_text()
    declared = {Requirement(d).name.lower(): Requirement(d) for d in metadata.requires("transfer-workbench")}
    for name, version in pins.items():
        assert version, f"{name} is not pinned in binder/requirements.txt"
        if name in declared:
            assert declared[name].specifier.contains(Version(version), prereleases=True), \
                f"binder pins {name}=={version}, outside the project's {declared[name]}"


def test_binder_pins_cover_the_runtime_dependencies():
    runtime = {re.split(r"[<>=!~ ]", d, maxsplit=1)[0].lower() for d in metadata.requires("transfer-workbench")
               if "extra ==" not in d}
    assert runtime <= set(_pins()), f"missing from binder/requirements.txt: {sorted(runtime - set(_pins()))}"


def test_the_binder_link_opens_a_notebook_that_exists():
    readme = (ROOT / "README.md").read_text()
    link = re.search(r"https://mybinder\.org/v2/\S+?urlpath=lab/tree/([^)\s]+)", readme)
    assert link, "README needs a Binder badge whose link opens JupyterLab at a notebook"
    assert link.group(1) == "notebooks/00_start_here.ipynb" and (ROOT / link.group(1)).is_file()
