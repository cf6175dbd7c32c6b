"""The PyTorch peer: the same ResNet + LSTM clip classifier, timed the same way.

`TorchClipClassifier` mirrors `mer_jax.models.MERModel` built from a
`config.model` with a Caffe-style ResNet encoder ("resnet", "resnet50", ...),
the "mean" spatial pool and a uni-directional single-layer "lstm" head with
output "last": uint8 frames `(B, N, H, W, 3)` -> /255 -> (x - mean) / std ->
per-frame ResNet (stride on the bottleneck's first 1x1 conv, ceil-mode stem
max-pool) -> global mean -> LSTM over frames -> last state -> dropout -> Linear.

The train step matches `mer_jax.steps.train_step` with the default optimiser:
cross-entropy, backward, global-norm clipping, AdamW (weight decay 1e-4),
BatchNorm in training mode. Inference is `model.eval()` under
`torch.inference_mode()`. Every clip has all N frames valid, so the LSTM runs
over the full sequence (no packing), as the JAX model does for a full mask.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import ml_collections
import numpy as np
import torch
from torch import nn

from mer_jax.models import mer_model
from mer_jax.models import resnet as jax_resnet


class _Bottleneck(nn.Module):
  """1x1 (stride) -> 3x3 -> 1x1 (4x) with a projection shortcut when the shape changes."""

  def __init__(self, in_channels: int, width: int, stride: int):
    super().__init__()
    out_channels = 4 * width
    self.body = nn.Sequential(
        nn.Conv2d(in_channels, width, 1, stride, bias=False), nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
        nn.Conv2d(width, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
        nn.Conv2d(width, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))
    self.shortcut = nn.Identity()
    if stride != 1 or in_channels != out_channels:
      self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                    nn.BatchNorm2d(out_channels))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return torch.relu(self.body(x) + self.shortcut(x))


class _Basic(nn.Module):
  """3x3 (stride) -> 3x3 with a projection shortcut when the shape changes."""

  def __init__(self, in_channels: int, width: int, stride: int):
    super().__init__()
    self.body = nn.Sequential(
        nn.Conv2d(in_channels, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
        nn.Conv2d(width, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width))
    self.shortcut = nn.Identity()
    if stride != 1 or in_channels != width:
      self.shortcut = nn.Sequential(nn.Conv2d(in_channels, width, 1, stride, bias=False),
                                    nn.BatchNorm2d(width))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return torch.relu(self.body(x) + self.shortcut(x))


class TorchClipClassifier(nn.Module):
  """`forward(frames uint8 (B, N, H, W, 3)) -> float32 logits (B, num_classes)`."""

  def __init__(self, *, stage_sizes: tuple[int, ...], block: str, base_width: int,
               hidden_size: int, num_classes: int, dropout_rate: float,
               pixel_mean: tuple[float, ...], pixel_std: tuple[float, ...]):
    super().__init__()
    block_cls = _Bottleneck if block == "bottleneck" else _Basic
    expansion = 4 if block == "bottleneck" else 1
    layers: list[nn.Module] = [
        nn.Conv2d(3, base_width, 7, 2, 3, bias=False), nn.BatchNorm2d(base_width),
        nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, padding=0, ceil_mode=True)]
    channels = base_width
    for stage, size in enumerate(stage_sizes):
      for index in range(size):
        stride = 2 if stage > 0 and index == 0 else 1
        layers.append(block_cls(channels, base_width * 2**stage, stride))
        channels = base_width * 2**stage * expansion
    self.encoder = nn.Sequential(*layers)
    self.lstm = nn.LSTM(channels, hidden_size, batch_first=True)
    self.dropout = nn.Dropout(dropout_rate)
    self.classifier = nn.Linear(hidden_size, num_classes)
    # Normalisation constants in [0, 1] units, shaped for NCHW.
    self.register_buffer("mean", torch.tensor(pixel_mean).view(1, 3, 1, 1) / 255.0)
    self.register_buffer("std", torch.tensor(pixel_std).view(1, 3, 1, 1) / 255.0)

  def forward(self, frames: torch.Tensor) -> torch.Tensor:
    batch, num_frames = frames.shape[:2]
    x = frames.reshape((batch * num_frames,) + frames.shape[2:]).permute(0, 3, 1, 2)
    x = (x.float() / 255.0 - self.mean) / self.std
    features = self.encoder(x).mean(dim=(2, 3))
    sequence, _ = self.lstm(features.reshape(batch, num_frames, -1))
    return self.classifier(self.dropout(sequence[:, -1]))


def from_model_config(model_config: ml_collections.ConfigDict,
                      num_classes: int) -> TorchClipClassifier:
  """The PyTorch twin of `mer_jax.models.create_model(model_config)`.

  Raises:
    ValueError: the config is not a ResNet + "mean" pool + single-layer
      uni-directional "lstm" (output "last") + "rgb" input model, the only
      family this peer implements.
  """
  encoder = model_config.encoder
  if encoder not in ("resnet", "resnet18", "resnet34", "resnet50"):
    raise ValueError(f"torch peer: config.model.encoder must be a ResNet, got {encoder!r}")
  encoder_kwargs = dict(model_config.get("encoder_kwargs") or {})
  depth = encoder_kwargs.get("depth", {"resnet18": 18, "resnet34": 34}.get(encoder, 50))
  stage_sizes = tuple(encoder_kwargs.get("stage_sizes") or jax_resnet.STAGE_SIZES[depth])
  block = encoder_kwargs.get("block") or jax_resnet.default_block(depth)
  head_kwargs = dict(model_config.get("temporal_head_kwargs") or {})
  if (model_config.get("spatial_pool", "mean") != "mean"
      or model_config.get("temporal_head") != "lstm"
      or head_kwargs.get("num_layers", 1) != 1 or head_kwargs.get("output", "last") != "last"
      or head_kwargs.get("bidirectional", False)
      or model_config.get("input_mode", "rgb") != "rgb" or model_config.get("magnify")):
    raise ValueError("torch peer: only spatial_pool='mean', temporal_head='lstm' (one layer, "
                     "output 'last'), input_mode='rgb', no magnification is implemented; got "
                     f"{model_config.to_dict()}")
  mean, std = mer_model.PIXEL_STATS[model_config.get("pixel_stats", "centered")]
  return TorchClipClassifier(
      stage_sizes=stage_sizes, block=block, base_width=encoder_kwargs.get("base_width", 64),
      hidden_size=head_kwargs.get("hidden_size", 128), num_classes=num_classes,
      dropout_rate=model_config.get("dropout_rate", 0.0), pixel_mean=mean, pixel_std=std)


def torch_device(device: str) -> torch.device:
  """"cuda" when `device` is "gpu" and torch sees a CUDA device, else "cpu"."""
  if device == "gpu" and torch.cuda.is_available():
    return torch.device("cuda")
  return torch.device("cpu")


def _synchronise(device: torch.device) -> None:
  if device.type == "cuda":
    torch.cuda.synchronize(device)


def _median_seconds(fn, repeats: int, device: torch.device) -> tuple[float, list[float]]:
  times = []
  for _ in range(repeats):
    _synchronise(device)
    start = time.perf_counter()
    fn()
    _synchronise(device)
    times.append(time.perf_counter() - start)
  return statistics.median(times), times


def make_steps(model_config: ml_collections.ConfigDict, *, num_classes: int, batch: int,
               num_frames: int, image_size: int, device: str, threads: int,
               half_precision: bool = False, learning_rate: float = 1e-3,
               weight_decay: float = 1e-4, grad_clip_norm: float = 1.0, seed: int = 0):
  """The peer's `(train_step, infer, model, target)` at one shape (random uint8 clips).

  `train_step()` runs forward, backward, clipping and AdamW in train mode; `infer()` a forward
  pass under `torch.inference_mode()`; call `model.train()` / `model.eval()` before each.
  """
  torch.set_num_threads(threads)
  torch.manual_seed(seed)
  target = torch_device(device)
  model = from_model_config(model_config, num_classes).to(target)
  optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
  rng = np.random.default_rng(seed)
  frames = torch.from_numpy(rng.integers(0, 256, (batch, num_frames, image_size, image_size, 3),
                                         dtype=np.uint8)).to(target)
  labels = torch.from_numpy(rng.integers(0, num_classes, batch)).to(target)
  autocast = torch.autocast(target.type, dtype=torch.bfloat16,
                            enabled=half_precision and target.type == "cuda")

  def train_step():
    optimizer.zero_grad(set_to_none=True)
    with autocast:
      loss = nn.functional.cross_entropy(model(frames).float(), labels)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), grad_clip_norm)
    optimizer.step()
    return loss

  def infer():
    with torch.inference_mode(), autocast:
      return model(frames)

  return train_step, infer, model, target


def benchmark(model_config: ml_collections.ConfigDict, *, num_classes: int, batch: int,
              num_frames: int, image_size: int, repeats: int, warmup: int, device: str,
              threads: int, half_precision: bool = False, learning_rate: float = 1e-3,
              weight_decay: float = 1e-4, grad_clip_norm: float = 1.0,
              seed: int = 0) -> dict[str, Any]:
  """Times the peer's train step and inference at one shape.

  Args:
    model_config: the JAX `config.model` to mirror (see `from_model_config`).
    batch, num_frames, image_size: clips per step, frames per clip N, square
      side in pixels.
    repeats: timed steps (median reported); warmup: untimed steps first.
    device: "cpu" or "gpu" (CUDA when torch sees it).
    threads: intra-op threads (set equal to the cores XLA uses).
    half_precision: bf16 autocast (CUDA only; ignored on CPU, like the JAX
      benchmark which runs float32 on CPU).

  Returns:
    `{"train": {...}, "inference": {...}, "torch": {...}}`, times in seconds.
  """
  train_step, infer, model, target = make_steps(
      model_config, num_classes=num_classes, batch=batch, num_frames=num_frames,
      image_size=image_size, device=device, threads=threads, half_precision=half_precision,
      learning_rate=learning_rate, weight_decay=weight_decay, grad_clip_norm=grad_clip_norm,
      seed=seed)
  model.train()
  for _ in range(warmup):
    train_step()
  train_s, train_times = _median_seconds(train_step, repeats, target)
  model.eval()
  for _ in range(warmup):
    infer()
  infer_s, infer_times = _median_seconds(infer, repeats, target)
  clips = batch
  return {
      "train": {"step_s": train_s, "times_s": train_times, "clips_per_s": clips / train_s,
                "frames_per_s": clips * num_frames / train_s},
      "inference": {"step_s": infer_s, "times_s": infer_times, "clips_per_s": clips / infer_s,
                    "frames_per_s": clips * num_frames / infer_s},
      "torch": {"version": torch.__version__, "device": str(target),
                "num_threads": torch.get_num_threads(),
                "num_interop_threads": torch.get_num_interop_threads(),
                "mkldnn": torch.backends.mkldnn.is_available(),
                "autocast_bf16": bool(half_precision and target.type == "cuda")},
  }
