"""Convolutional baselines.

ResNet-18 and ResNet-34 for small images ("Deep Residual Learning", He et al.,
2016, https://arxiv.org/abs/1512.03385) as used on CIFAR: a 3x3 stride-1 stem and
no max-pool, so 32x32 inputs keep their resolution in the first stage. With
``width = 64`` and 10 classes ResNet-18 has 11,173,962 parameters and ResNet-34
21,282,122.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import ResNetCifarHparams


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)  # in place: no extra activation memory
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return F.relu(out, inplace=True)


class ResNetCifar(nn.Module):
    def __init__(self, blocks: list[int], *, width: int, num_classes: int, in_chans: int):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_chans, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        stages, cin = [], width
        for i, n in enumerate(blocks):
            cout = width * 2**i
            for j in range(n):
                stages.append(BasicBlock(cin, cout, stride=2 if (i > 0 and j == 0) else 1))
                cin = cout
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def build_resnet18_cifar(hp: ResNetCifarHparams, *, num_classes: int, in_chans: int, img_size: int) -> ResNetCifar:
    return ResNetCifar([2, 2, 2, 2], width=hp.width, num_classes=num_classes, in_chans=in_chans)


def build_resnet34_cifar(hp: ResNetCifarHparams, *, num_classes: int, in_chans: int, img_size: int) -> ResNetCifar:
    return ResNetCifar([3, 4, 6, 3], width=hp.width, num_classes=num_classes, in_chans=in_chans)
