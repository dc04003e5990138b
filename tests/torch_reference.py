"""The tests' own PyTorch EffNet, written from the seed's specification (layer for layer).

Used only by the parity tests and the benchmarks; PyTorch is never a dependency of the library.
"""

from __future__ import annotations

import torch
from torch import nn


def _post(channels: int, momentum: float) -> nn.Sequential:
    return nn.Sequential(nn.LeakyReLU(0.3), nn.BatchNorm2d(channels, momentum=momentum))


def seed_block(in_channels: int, bottleneck: int, out_channels: int, momentum: float = 0.99) -> nn.Sequential:
    """One seed block; Sequential indices match the seed's state-dict keys."""
    return nn.Sequential(
        nn.Conv2d(in_channels, bottleneck, kernel_size=1, bias=False),
        _post(bottleneck, momentum),
        nn.Conv2d(bottleneck, bottleneck, kernel_size=(1, 3), padding=(0, 1), groups=bottleneck, bias=False),
        _post(bottleneck, momentum),
        nn.MaxPool2d(kernel_size=(2, 1), stride=(2, 1)),
        nn.Conv2d(bottleneck, bottleneck, kernel_size=(3, 1), padding=(1, 0), groups=bottleneck, bias=False),
        _post(bottleneck, momentum),
        nn.Conv2d(bottleneck, out_channels, kernel_size=(1, 2), stride=(1, 2), bias=False),
        _post(out_channels, momentum),
    )


class SeedEffNet(nn.Module):
    """The seed network: blocks (32->64), (64->128), (128->256), flatten (NCHW), linear."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, feature_hw: int = 4, momentum: float = 0.99):
        super().__init__()
        self.block1 = seed_block(in_channels, 32, 64, momentum)
        self.block2 = seed_block(64, 64, 128, momentum)
        self.block3 = seed_block(128, 128, 256, momentum)
        self.linear = nn.Linear(256 * feature_hw * feature_hw, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(x)))
        return self.linear(torch.flatten(x, 1))


def randomize_batch_norm(model: nn.Module, seed: int = 0) -> None:
    """Gives every BatchNorm non-trivial affine parameters and running statistics."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(1 + 0.2 * torch.randn(n, generator=generator))
                module.bias.copy_(0.2 * torch.randn(n, generator=generator))
                module.running_mean.copy_(0.2 * torch.randn(n, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
