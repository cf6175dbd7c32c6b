"""Caffe-style ResNet (VGGFace2 layout) as a per-frame encoder or a classifier.

The VGGFace2 face-recognition model (the seed paper's encoder) is a ResNet-50 in
the original Caffe layout (He et al. 2016, "v1"), which differs from Flax's
example ResNet (v1.5) in ways that matter for loading its weights:

* the bottleneck's stride sits on its **first 1x1 conv**; the 3x3 has stride 1;
* the projection shortcut is a 1x1 conv with the block's stride, then BN;
* every conv has no bias; BatchNorm epsilon is 1e-5;
* stem: 7x7 conv stride 2 padding 3, BN, ReLU, then 3x3 stride-2 max-pool with
  **ceil_mode and no padding** (PyTorch semantics);
* stages of [3, 4, 6, 3] bottlenecks; global average pool; fc 2048 -> 8631.

Submodules are named after the torchvision state_dict so that the weight
mapping (`mer_jax.models.weights`) is mechanical: `conv1`, `bn1`,
`layer{stage}_{block}` (PyTorch `layer{stage}.{block}`) holding `conv1`, `bn1`,
`conv2`, `bn2`, [`conv3`, `bn3`,] `downsample_conv`, `downsample_bn`; `fc`.

Layer names, in forward order, are the units of the transfer-learning policies
(`mer_jax.transfer`) and of Grad-CAM (`mer_jax.gradcam`): `conv1`, `bn1`,
`layer1_0`, ..., `layer4_2`. A stage name (`layer3`) means the whole stage: its
first block when freezing "before" it, its last block when truncating "after".
"""

from __future__ import annotations

import functools
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp


# Stage sizes by depth (He et al. 2016, Table 1).
STAGE_SIZES: dict[int, tuple[int, ...]] = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}
BLOCK_KINDS = ("basic", "bottleneck")
BN_EPSILON = 1e-5
VGGFACE2_NUM_CLASSES = 8631
STEM_LAYERS = ("conv1", "bn1")
STEM = "stem"  # Truncation point / sown name for the stem output (after the max-pool).

# He initialisation (fan_out, normal), as torchvision initialises its ResNets.
_CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def default_block(depth: int) -> str:
  """The block kind of the standard ResNet of `depth` layers."""
  return "basic" if depth < 50 else "bottleneck"


def block_names(stage_sizes: Sequence[int]) -> tuple[str, ...]:
  """Residual block names in forward order: `("layer1_0", "layer1_1", ...)`."""
  return tuple(f"layer{stage + 1}_{block}"
               for stage, size in enumerate(stage_sizes) for block in range(size))


def layer_order(stage_sizes: Sequence[int], include_top: bool = False) -> tuple[str, ...]:
  """Every parameterised top-level module name in forward order.

  `("conv1", "bn1", "layer1_0", ..., "layer4_2")` plus `"fc"` if `include_top`.
  """
  return STEM_LAYERS + block_names(stage_sizes) + (("fc",) if include_top else ())


def resolve_layer(name: str, stage_sizes: Sequence[int], *, stage_end: str = "first",
                  argument: str = "layer") -> str:
  """Maps a layer or stage name to a name in `layer_order(stage_sizes)`.

  Args:
    name: `"conv1"`, `"bn1"`, a block name (`"layer3_1"`) or a stage name
      (`"layer3"`).
    stage_sizes: blocks per stage.
    stage_end: which block a stage name stands for, `"first"` or `"last"`.
    argument: the caller's argument name, for the error message.

  Returns:
    The layer name (a stage resolved to one of its blocks).

  Raises:
    ValueError: naming `argument` and listing valid names when `name` is unknown.
  """
  order = layer_order(stage_sizes)
  if name in order:
    return name
  stages = {f"layer{stage + 1}": size for stage, size in enumerate(stage_sizes)}
  if name in stages:
    return f"{name}_{0 if stage_end == 'first' else stages[name] - 1}"
  raise ValueError(f"{argument}={name!r} is not a layer of this ResNet (stage sizes "
                   f"{tuple(stage_sizes)}); expected one of {list(stages) + list(order)}")


def _max_pool_ceil(x: jnp.ndarray, window: int = 3, stride: int = 2) -> jnp.ndarray:
  """PyTorch `MaxPool2d(window, stride, padding=0, ceil_mode=True)` on NHWC.

  Ceil mode keeps a last, partial window; padding the bottom/right edge with
  -inf (what `nn.max_pool` pads with) reproduces it: a 56x56 map gives 28x28.
  """
  pads = []
  for axis, size in zip("HW", x.shape[1:3]):
    if size < window:
      raise ValueError(f"stem max-pool: feature map {axis}={size} is smaller than the "
                       f"{window}x{window} window; use a larger input image")
    out = -(-(size - window) // stride) + 1  # ceil((size - window) / stride) + 1
    pads.append((0, (out - 1) * stride + window - size))
  return nn.max_pool(x, (window, window), strides=(stride, stride), padding=pads)


class BasicBlock(nn.Module):
  """ResNet-18/34 block: 3x3 (stride) -> 3x3, plus the identity or a projection.

  `(N, H, W, C_in) -> (N, H / strides, W / strides, features)`.
  """
  features: int
  strides: int = 1
  project: bool = False
  use_running_average: bool = True
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32
  expansion = 1

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype, kernel_init=_CONV_INIT)
    norm = functools.partial(nn.BatchNorm, use_running_average=self.use_running_average,
                             momentum=self.bn_momentum, epsilon=BN_EPSILON, dtype=self.dtype)
    y = conv(self.features, (3, 3), self.strides, padding=((1, 1), (1, 1)), name="conv1")(x)
    y = nn.relu(norm(name="bn1")(y))
    y = conv(self.features, (3, 3), 1, padding=((1, 1), (1, 1)), name="conv2")(y)
    y = norm(name="bn2")(y)
    if self.project:
      x = conv(self.features, (1, 1), self.strides, padding="VALID", name="downsample_conv")(x)
      x = norm(name="downsample_bn")(x)
    return nn.relu(x + y)


class Bottleneck(nn.Module):
  """Caffe-style bottleneck: 1x1 (stride) -> 3x3 -> 1x1 (4x), plus shortcut.

  `(N, H, W, C_in) -> (N, H / strides, W / strides, 4 * features)`.
  """
  features: int
  strides: int = 1
  project: bool = False
  use_running_average: bool = True
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32
  expansion = 4

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype, kernel_init=_CONV_INIT)
    norm = functools.partial(nn.BatchNorm, use_running_average=self.use_running_average,
                             momentum=self.bn_momentum, epsilon=BN_EPSILON, dtype=self.dtype)
    out_features = self.features * self.expansion
    # The stride sits on the first 1x1 conv (Caffe / VGGFace2), not on the 3x3.
    y = conv(self.features, (1, 1), self.strides, padding="VALID", name="conv1")(x)
    y = nn.relu(norm(name="bn1")(y))
    y = conv(self.features, (3, 3), 1, padding=((1, 1), (1, 1)), name="conv2")(y)
    y = nn.relu(norm(name="bn2")(y))
    y = conv(out_features, (1, 1), 1, padding="VALID", name="conv3")(y)
    y = norm(name="bn3")(y)
    if self.project:
      x = conv(out_features, (1, 1), self.strides, padding="VALID", name="downsample_conv")(x)
      x = norm(name="downsample_bn")(x)
    return nn.relu(x + y)


_BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(nn.Module):
  """Caffe-style ResNet encoder `(B*N, H, W, 3) -> (B*N, h, w, C)` or classifier.

  Without `num_classes` it is a per-frame encoder obeying the registry contract
  and returns the last kept stage's feature map: `C = 2048`, `h = H / 32` for a
  full ResNet-50 (`C = 8 * base_width * expansion` in general). With
  `num_classes` it global-average-pools that map and returns float32 logits
  `(B, num_classes)` (the VGGFace2 classifier when `num_classes = 8631`).

  Stage outputs are sown into the "intermediates" collection as `stem`
  (after the max-pool), `layer1` .. `layer4`, and `pooled` (the global-average
  feature, classifier only): apply with `mutable=["intermediates"]` to read them.

  Attributes:
    depth: 18, 34, 50, 101 or 152; chooses the stage sizes and block kind.
    stage_sizes: blocks per stage, overriding `depth`'s (e.g. `(1, 1)` for a
      tiny test net).
    block: "basic" or "bottleneck", overriding `depth`'s.
    base_width: channels of the stem and of the first stage's 3x3 convs
      (64 in the standard nets); stage `s` uses `base_width * 2**s`.
    num_classes: if set, add the pooled `fc` classifier (include_top).
    truncate_after: drop every layer after this block or stage (or "stem") and
      return its feature map (transfer policy III).
    frozen_batch_stats: BatchNorm always uses (and never updates) its running
      statistics, even with `train=True`.
    frozen_stats_before: BatchNorm in the layers strictly before this layer
      (forward order, see `layer_order`) uses its running statistics even with
      `train=True` (transfer policy II: frozen layers stay as pretrained).
    bn_momentum: running-average decay (PyTorch momentum 0.1 == 0.9 here).
    dtype: compute dtype (e.g. bfloat16); parameters stay float32.
  """
  depth: int = 50
  stage_sizes: Optional[Sequence[int]] = None
  block: Optional[str] = None
  base_width: int = 64
  num_classes: Optional[int] = None
  truncate_after: Optional[str] = None
  frozen_batch_stats: bool = False
  frozen_stats_before: Optional[str] = None
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @property
  def resolved_stage_sizes(self) -> tuple[int, ...]:
    """Blocks per stage after applying `depth` and `stage_sizes`."""
    if self.stage_sizes is not None:
      sizes = tuple(int(s) for s in self.stage_sizes)
      if not sizes or min(sizes) < 1:
        raise ValueError(f"ResNet stage_sizes must be a non-empty sequence of positive "
                         f"ints, got {self.stage_sizes!r}")
      return sizes
    if self.depth not in STAGE_SIZES:
      raise ValueError(f"ResNet depth={self.depth!r} is not one of {sorted(STAGE_SIZES)}; "
                       "pass stage_sizes for a custom net")
    return STAGE_SIZES[self.depth]

  @property
  def block_kind(self) -> str:
    """"basic" or "bottleneck"."""
    kind = self.block or default_block(self.depth)
    if kind not in BLOCK_KINDS:
      raise ValueError(f"ResNet block={kind!r} must be one of {BLOCK_KINDS}")
    return kind

  def layer_names(self) -> tuple[str, ...]:
    """Parameterised top-level layers that this configuration builds, in order."""
    order = layer_order(self.resolved_stage_sizes)
    if self.truncate_after is not None:
      last = self._truncation_layer()
      order = order[:order.index(last) + 1]
    return order + (("fc",) if self.num_classes else ())

  def _truncation_layer(self) -> str:
    if self.truncate_after == STEM:
      return "bn1"
    layer = resolve_layer(self.truncate_after, self.resolved_stage_sizes, stage_end="last",
                          argument="truncate_after")
    # The stem (conv1, bn1, ReLU, max-pool) is kept or dropped as a whole.
    return "bn1" if layer in STEM_LAYERS else layer

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
    """Encodes images (or classifies them when `num_classes` is set).

    Args:
      x: `(B, H, W, C)` float images. Converted VGGFace2 weights expect RGB
        0..255 values minus the VGGFace2 mean, unscaled (`MERModel` with
        `pixel_stats="vggface2"`).
      train: BatchNorm uses batch statistics and updates "batch_stats" unless
        frozen (see `frozen_batch_stats`, `frozen_stats_before`).

    Returns:
      `(B, h, w, C)` feature map in `dtype`, or float32 logits `(B, num_classes)`.
    """
    if x.ndim != 4:
      raise ValueError(f"ResNet input must be (B, H, W, C) images, got shape {x.shape}")
    stage_sizes = self.resolved_stage_sizes
    order = layer_order(stage_sizes)
    last = self._truncation_layer() if self.truncate_after is not None else order[-1]
    frozen_until = (order.index(resolve_layer(self.frozen_stats_before, stage_sizes,
                                              argument="frozen_stats_before"))
                    if self.frozen_stats_before is not None else 0)

    def running_average(layer: str) -> bool:
      return not train or self.frozen_batch_stats or order.index(layer) < frozen_until

    x = x.astype(self.dtype)
    x = nn.Conv(self.base_width, (7, 7), 2, padding=((3, 3), (3, 3)), use_bias=False,
                dtype=self.dtype, kernel_init=_CONV_INIT, name="conv1")(x)
    x = nn.BatchNorm(use_running_average=running_average("bn1"), momentum=self.bn_momentum,
                     epsilon=BN_EPSILON, dtype=self.dtype, name="bn1")(x)
    x = _max_pool_ceil(nn.relu(x))
    self.sow("intermediates", STEM, x)
    block_cls = _BLOCKS[self.block_kind]
    in_features = self.base_width
    done = last == "bn1"
    for stage, size in enumerate(stage_sizes):
      if done:
        break
      features = self.base_width * 2**stage
      for index in range(size):
        name = f"layer{stage + 1}_{index}"
        strides = 2 if stage > 0 and index == 0 else 1
        out_features = features * block_cls.expansion
        x = block_cls(features, strides=strides,
                      project=strides != 1 or in_features != out_features,
                      use_running_average=running_average(name), bn_momentum=self.bn_momentum,
                      dtype=self.dtype, name=name)(x)
        in_features = out_features
        if name == last:
          done = True
          break
      self.sow("intermediates", f"layer{stage + 1}", x)
    if not self.num_classes:
      return x
    pooled = jnp.mean(x, axis=(1, 2))
    self.sow("intermediates", "pooled", pooled)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name="fc")(pooled)
    return logits.astype(jnp.float32)


class ResNet18(ResNet):
  """ResNet-18 encoder (basic blocks, stages [2, 2, 2, 2])."""
  depth: int = 18


class ResNet34(ResNet):
  """ResNet-34 encoder (basic blocks, stages [3, 4, 6, 3])."""
  depth: int = 34


class ResNet50(ResNet):
  """ResNet-50 encoder (Caffe-style bottlenecks, stages [3, 4, 6, 3]): VGGFace2's."""
  depth: int = 50


class VGGFace2ResNet50(ResNet):
  """The full VGGFace2 classifier: ResNet-50 with fc 2048 -> 8631 identities."""
  depth: int = 50
  num_classes: Optional[int] = VGGFACE2_NUM_CLASSES
