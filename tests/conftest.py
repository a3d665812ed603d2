"""Shared test fixtures: tiny data sets and a small ResNet-like model the workbench did not define."""
import pytest
import torch
from foreign_models import TinyResNet

from workbench import data


@pytest.fixture
def tiny_resnet():
    torch.manual_seed(0)
    return TinyResNet()


@pytest.fixture(scope="session")
def small_shapes():
    """3 shape classes, 16 per class, 32x32: train 36 / val 12."""
    return data.split(data.shapes(16, classes=3, seed=0), 0.25, seed=0)
