"""Models the workbench did not define, for tests: a torchvision-style ResNet in miniature."""
import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, c1: int, c2: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c1, c2, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c2)
        self.conv2 = nn.Conv2d(c2, c2, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c2)
        self.down = None if stride == 1 and c1 == c2 else nn.Sequential(nn.Conv2d(c1, c2, 1, stride, bias=False),
                                                                       nn.BatchNorm2d(c2))

    def forward(self, x):
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(y + (x if self.down is None else self.down(x)))


class TinyResNet(nn.Module):
    """A torchvision-style ResNet in miniature: conv1/bn1, layer1..layer3, avgpool, fc."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 8):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = Block(width, width)
        self.layer2 = Block(width, 2 * width, 2)
        self.layer3 = Block(2 * width, 4 * width, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.avgpool(x).flatten(1))
