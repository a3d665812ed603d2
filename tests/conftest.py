"""Shared test fixtures: tiny data sets, a small ResNet-like model the workbench did not define, Ultralytics."""
import importlib
import os

import pytest
import torch
from foreign_models import TinyResNet

os.environ["WORKBENCH_LANG"] = "en"  # the suite checks English text whatever the machine's locale (kernels inherit it)
from workbench import data  # noqa: E402
from workbench.i18n import set_language  # noqa: E402

set_language("en")


@pytest.fixture
def tiny_resnet():
    torch.manual_seed(0)
    return TinyResNet()


@pytest.fixture(scope="session")
def small_shapes():
    """3 shape classes, 16 per class, 32x32: train 36 / val 12."""
    return data.split(data.shapes(16, classes=3, seed=0), 0.25, seed=0)


@pytest.fixture(scope="session")
def tasks(tmp_path_factory):
    """``ultralytics.nn.tasks``, settings in a temporary folder; skipped without it unless WB_REQUIRE_ULTRALYTICS."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("YOLO_CONFIG_DIR", str(tmp_path_factory.mktemp("ultralytics_settings")))
        mp.setenv("YOLO_VERBOSE", "False")
        if os.environ.get("WB_REQUIRE_ULTRALYTICS"):
            return importlib.import_module("ultralytics.nn.tasks")
        return pytest.importorskip("ultralytics.nn.tasks")
