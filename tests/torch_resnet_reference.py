"""PyTorch reference of the Caffe-style (VGGFace2) ResNet, for parity tests only.

Written from the architecture facts (docs/resnet_gradcam.md), with torchvision's
state_dict naming: `conv1`, `bn1`, `layer{s}.{b}.conv1 ... downsample.{0,1}`,
`fc`. Differences from torchvision's own ResNet: the bottleneck's stride is on
its first 1x1 conv, and the stem max-pool uses ceil_mode without padding.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn


class TorchBasicBlock(nn.Module):
  expansion = 1

  def __init__(self, in_planes: int, planes: int, stride: int):
    super().__init__()
    self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes, eps=1e-5)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
    self.relu = nn.ReLU()
    self.downsample = None
    if stride != 1 or in_planes != planes:
      self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False),
                                      nn.BatchNorm2d(planes, eps=1e-5))

  def forward(self, x):
    y = self.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    shortcut = x if self.downsample is None else self.downsample(x)
    return self.relu(y + shortcut)


class TorchBottleneck(nn.Module):
  expansion = 4

  def __init__(self, in_planes: int, planes: int, stride: int):
    super().__init__()
    out_planes = planes * self.expansion
    self.conv1 = nn.Conv2d(in_planes, planes, 1, stride, bias=False)  # Stride here (Caffe).
    self.bn1 = nn.BatchNorm2d(planes, eps=1e-5)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
    self.conv3 = nn.Conv2d(planes, out_planes, 1, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(out_planes, eps=1e-5)
    self.relu = nn.ReLU()
    self.downsample = None
    if stride != 1 or in_planes != out_planes:
      self.downsample = nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride, bias=False),
                                      nn.BatchNorm2d(out_planes, eps=1e-5))

  def forward(self, x):
    y = self.relu(self.bn1(self.conv1(x)))
    y = self.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    shortcut = x if self.downsample is None else self.downsample(x)
    return self.relu(y + shortcut)


class TorchResNet(nn.Module):
  """`forward(x NCHW) -> (pooled features (B, C), logits (B, num_classes))`."""

  def __init__(self, block: str, stage_sizes: Sequence[int], num_classes: int,
               base_width: int = 64):
    super().__init__()
    block_cls = TorchBottleneck if block == "bottleneck" else TorchBasicBlock
    self.conv1 = nn.Conv2d(3, base_width, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(base_width, eps=1e-5)
    self.relu = nn.ReLU()
    self.maxpool = nn.MaxPool2d(3, 2, padding=0, ceil_mode=True)
    in_planes = base_width
    for stage, size in enumerate(stage_sizes):
      planes = base_width * 2**stage
      blocks = []
      for index in range(size):
        stride = 2 if stage > 0 and index == 0 else 1
        blocks.append(block_cls(in_planes, planes, stride))
        in_planes = planes * block_cls.expansion
      setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
    self.num_stages = len(stage_sizes)
    self.fc = nn.Linear(in_planes, num_classes)

  def forward(self, x):
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    for stage in range(self.num_stages):
      x = getattr(self, f"layer{stage + 1}")(x)
    pooled = x.mean(dim=(2, 3))
    return pooled, self.fc(pooled)


def randomize_(model: nn.Module, seed: int) -> None:
  """Random weights and random BatchNorm statistics, so parity checks every tensor."""
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, nn.BatchNorm2d):
        n = module.num_features
        module.weight.copy_(0.5 + torch.rand(n, generator=generator))
        module.bias.copy_(0.1 * torch.randn(n, generator=generator))
        module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
        module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
      elif isinstance(module, (nn.Conv2d, nn.Linear)):
        fan_in = module.weight[0].numel()
        module.weight.copy_(torch.randn(module.weight.shape, generator=generator)
                            * np.sqrt(1.0 / fan_in))
        if module.bias is not None:
          module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))


def export_state_dict(model: nn.Module, drop: Optional[Sequence[str]] = ("num_batches_tracked",)
                      ) -> dict[str, np.ndarray]:
  """The release's format: a dict of NumPy arrays keyed like the state_dict."""
  return {key: value.detach().cpu().numpy().copy() for key, value in model.state_dict().items()
          if not any(key.endswith(d) for d in drop or ())}
