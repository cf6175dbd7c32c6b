"""Encoders for optical-flow input: STSTNet, OFF-ApexNet, a flow ResNet, and the identity.

They read the onset->apex flow features that `MERModel(input_mode="flow")`
passes through unchanged: `(B*N, S, S, C)` float with channels (u, v, strain),
or C = 6 when the apex->offset features follow (u, v, strain of onset->apex,
then of apex->offset; `mer_jax.flow.cache`), usually min-max scaled to [0, 1]
per sample and channel (`mer_jax.flow.normalize`). Channel k of each triple is
one *kind* (k = 0: u, 1: v, 2: strain); `channel_kinds` gathers a kind over
both flow pairs, so a stream that reads "u" sees every u channel.

Each returns a feature map `(B*N, h, w, D)` like every encoder, so the paper
models are compositions of registered parts (docs/motion_models.md):

* STSTNet (Liong et al. 2019) = `ststnet` + spatial pool `flatten` + classifier;
* OFF-ApexNet (Gan et al. 2019) = `off_apexnet` + `flatten` + classifier with
  `classifier_hidden=(1024, 1024)`;
* a linear model on pooled flow = `identity` + `grid` + classifier;
* `flow_resnet` + `grid`: our own design for flow (see its docstring).

Encoders that only make sense on flow declare `input_modes = ("flow",)`;
`MERModel` refuses them any other input.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

FLOW_KINDS = ("u", "v", "strain")
STREAM_INPUTS = ("all", "per_channel")
CENTERINGS = ("median", "none")


def channel_kinds(x: jnp.ndarray, part: str) -> list[jnp.ndarray]:
  """Splits `(..., C)` flow features into `[u, v, strain]`, each `(..., C // 3)`.

  Channel k of every (u, v, strain) triple goes to kind k, so with C = 6 the u
  group holds onset->apex u then apex->offset u. `part` names the caller in the
  error for a channel count that is not a multiple of 3.
  """
  channels = x.shape[-1]
  if channels % 3 or channels == 0:
    raise ValueError(
        f"{part}: input channels must be (u, v, strain) triples (C = 3, or 6 with apex->offset "
        f"flow), got C = {channels} in shape {x.shape}; set config.model.input_mode='flow' "
        "and feed the flow features")
  return [x[..., k::3] for k in range(3)]


def tiled_max_pool(x: jnp.ndarray, size: int, padding: str = "VALID") -> jnp.ndarray:
  """Max over non-overlapping `size x size` tiles: `(B, H, W, C) -> (B, h, w, C)`.

  The values of `nn.max_pool(x, (size, size), strides=(size, size), padding=padding)`:
  "VALID" drops the last `H % size` rows (h = H // size), "SAME" pads with -inf, the
  smaller half before (h = ceil(H / size)). Written as a reshape and a max because XLA
  lowers `max_pool`'s gradient to select-and-scatter, which on CPU is slow: one training
  step of OFF-ApexNet (batch 16, 28 x 28) took 8.1 ms with `nn.max_pool` and 4.7 ms with
  this (2-core CPU; a probe in one process, the variants timed one after the other, load
  average 0.8). The gradient is the same wherever a tile's maximum is unique; on ties
  it is shared among the tied inputs instead of given to the first. Ties occur among
  values that ReLU set to zero (before or under a batch norm), whose own gradient ReLU
  then zeroes, so parameter gradients are unchanged up to rounding.
  """
  if padding not in ("SAME", "VALID"):
    raise ValueError(f"tiled_max_pool: padding must be 'SAME' or 'VALID', got {padding!r}")
  batch, height, width, channels = x.shape
  if padding == "SAME":
    pads = [(0, 0)]
    for length in (height, width):
      total = -length % size
      pads.append((total // 2, total - total // 2))
    x = jnp.pad(x, pads + [(0, 0)], constant_values=-jnp.inf)
  else:
    x = x[:, :height - height % size, :width - width % size]
  rows, cols = x.shape[1] // size, x.shape[2] // size
  return x.reshape(batch, rows, size, cols, size, channels).max(axis=(2, 4))


class Identity(nn.Module):
  """Returns its input as the feature map: `(B*N, H, W, C) -> (B*N, H, W, C)`.

  With spatial pool `grid` and the Dense classifier it is a linear model on
  pooled inputs trained by the same trainer: on flow (`input_mode="flow"`,
  `grid_size=7` on 28x28) the flow-linear baseline, on difference images
  (`input_mode="diff"`) a pixel-difference linear baseline. No parameters.
  """
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    del train
    return x.astype(self.dtype)


class STSTNet(nn.Module):
  """STSTNet's convolutional body (Liong, Gan, See, Khor, Huang, FG 2019, MEGC 2019).

  "Shallow Triple Stream Three-dimensional CNN": three parallel streams on the
  28 x 28 x 3 input (u, v, optical strain), each one 3x3 convolution (3, 5 and
  8 filters, bias), ReLU, batch norm, 3x3 max pooling with stride 3 ("same"
  padding: 28 -> 10); the 16 channels are concatenated and 2x2 average-pooled
  (stride 2: 10 -> 5). Output `(B*N, ceil(S / 3) // 2, ..., 16)`: `(5, 5, 16)`
  on 28 x 28, i.e. 400 features for spatial pool `flatten`, whose Dense
  classifier completes the paper's network.

  Parameters on C = 3: convolutions 3*(27+1) + 5*(27+1) + 8*(27+1) = 448,
  batch-norm scale and bias 2*16 = 32, so 480 trainable (plus 32 batch-norm
  statistics); with `flatten` and a 3-class classifier (400*3 + 3 = 1203) the
  whole STSTNet has 1,683 trainable parameters.

  Attributes:
    features: filters per stream (the paper's 3, 5, 8).
    stream_inputs: "all": every stream convolves all C input channels and the
      streams differ by their filter counts (as the authors' public code
      does); "per_channel": stream k reads only kind k (u, v, strain; with
      C = 6 both flow pairs' channels of that kind), the other reading of
      "triple stream" (convolutions 3*10 + 5*10 + 8*10 = 160 parameters).
    dropout_rate: dropout after each stream's pooling (0: none; the authors'
      public re-implementation is reported to use 0.5 there, which we could not
      verify, so the default adds nothing the paper's text states).
  """
  features: Sequence[int] = (3, 5, 8)
  stream_inputs: str = "all"
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  input_modes = ("flow",)

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    if self.stream_inputs not in STREAM_INPUTS:
      raise ValueError(f"config.model.encoder_kwargs.stream_inputs must be one of "
                       f"{STREAM_INPUTS}, got {self.stream_inputs!r}")
    if self.stream_inputs == "per_channel" and len(self.features) != 3:
      raise ValueError(f"config.model.encoder_kwargs.features: per_channel streams need one "
                       f"filter count per kind {FLOW_KINDS}, got {tuple(self.features)}")
    x = x.astype(self.dtype)
    inputs = channel_kinds(x, "ststnet") if self.stream_inputs == "per_channel" else None
    streams = []
    for k, width in enumerate(self.features):
      y = x if inputs is None else inputs[k]
      y = nn.Conv(width, (3, 3), padding="SAME", dtype=self.dtype, name=f"stream{k}_conv")(y)
      y = nn.relu(y)
      # Batch norm after the activation, in the order the authors' code applies them.
      y = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype,
                       name=f"stream{k}_bn")(y)
      y = tiled_max_pool(y, 3, padding="SAME")
      y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
      streams.append(y)
    y = jnp.concatenate(streams, axis=-1)
    return nn.avg_pool(y, (2, 2), strides=(2, 2))


class OffApexNet(nn.Module):
  """OFF-ApexNet's convolutional body (Gan et al., Signal Process. Image Commun. 2019).

  Gan, Liong, Yau, Huang, Tan: "OFF-ApexNet on micro-expression recognition
  system". Two streams, one on the horizontal (u) and one on the vertical (v) onset->apex
  flow (strain is not used), each LeNet-like: 5x5 convolution with 6 filters,
  ReLU, 2x2 max pooling, 5x5 convolution with 16 filters, ReLU, 2x2 max
  pooling. The streams' maps are concatenated along channels: output
  `(B*N, S / 4, S / 4, 32)` with "same" padding, `(7, 7, 32)` = 1568 features
  on 28 x 28. With spatial pool `flatten` and the classifier's
  `classifier_hidden=(1024, 1024)` (the paper's two fully connected layers of
  1024 before the softmax) this is the paper's model.

  With C = 6 the u stream reads both flow pairs' u and the v stream both v.

  Parameters on C = 3 (u, v, strain): per stream 5*5*1*6 + 6 = 156 and
  5*5*6*16 + 16 = 2416, so 5,144 for the two streams; the head adds
  1568*1024 + 1024 = 1,606,656, 1024*1024 + 1024 = 1,049,600 and 1024*3 + 3 =
  3,075: 2,664,475 in all.

  Attributes:
    features: filters of the two convolutions (the paper's 6, 16).
    kernel_size: convolution size (the paper's 5).
    padding: convolution padding, "SAME" (28 -> 7 after two poolings) or
      "VALID" (28 -> 4).
  """
  features: Sequence[int] = (6, 16)
  kernel_size: int = 5
  padding: str = "SAME"
  dtype: Any = jnp.float32
  input_modes = ("flow",)

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    del train
    if self.padding not in ("SAME", "VALID"):
      raise ValueError(f"config.model.encoder_kwargs.padding must be 'SAME' or 'VALID', "
                       f"got {self.padding!r}")
    u, v, _ = channel_kinds(x.astype(self.dtype), "off_apexnet")
    streams = []
    for kind, y in (("u", u), ("v", v)):
      for i, width in enumerate(self.features):
        y = nn.Conv(width, (self.kernel_size, self.kernel_size), padding=self.padding,
                    dtype=self.dtype, name=f"{kind}_conv{i + 1}")(y)
        y = nn.relu(y)
        y = tiled_max_pool(y, 2)
      streams.append(y)
    return jnp.concatenate(streams, axis=-1)


class _ResidualBlock(nn.Module):
  """Two 3x3 conv-BN with an identity (or 1x1 projection) shortcut, then ReLU."""
  width: int
  stride: int
  dtype: Any

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    norm = lambda name: nn.BatchNorm(use_running_average=not train, momentum=0.9,
                                     dtype=self.dtype, name=name)
    y = nn.Conv(self.width, (3, 3), strides=self.stride, use_bias=False, dtype=self.dtype,
                name="conv1")(x)
    y = nn.relu(norm("bn1")(y))
    y = nn.Conv(self.width, (3, 3), use_bias=False, dtype=self.dtype, name="conv2")(y)
    # Zero-initialised last scale: each block starts as its shortcut.
    y = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype,
                     scale_init=nn.initializers.zeros, name="bn2")(y)
    if x.shape[-1] != self.width or self.stride != 1:
      x = nn.Conv(self.width, (1, 1), strides=self.stride, use_bias=False, dtype=self.dtype,
                  name="shortcut_conv")(x)
      x = norm("shortcut_bn")(x)
    return nn.relu(x + y)


class FlowResNet(nn.Module):
  """A small residual CNN for flow features (our design).

  `(B*N, S, S, C) -> (B*N, S / prod(strides), ..., widths[-1])`: `(14, 14, 32)` on
  28 x 28 with the defaults.

  Design, from what flow features of a micro-expression look like:

  1. **Re-centre each map on the static face.** After per-sample min-max
     scaling, "no motion" sits at a different level in every sample and
     channel, and rigid head motion adds a constant to u and v. Most of a
     face does not move in a micro-expression, so subtracting each channel's
     spatial median re-centres every map on "motion relative to the face"
     (the spotting methods subtract the nose region's flow for the same
     reason), with no parameters. Batch norm cannot do this: it normalises
     over the batch, not within a sample.
  2. **Per-kind stems.** u and v are signed displacements, strain a
     non-negative magnitude: each kind gets its own `stem_width` 3x3 filters
     (STSTNet's streams, at a fraction of the cost) before any mixing.
  3. **No early pooling.** The motion of an action unit covers a few pixels of
     a 28 x 28 map; the first residual stage keeps full resolution and each
     later one halves it (STSTNet max-pools by 3 right away).
  4. **Keep where.** Pair it with spatial pool `grid` (e.g. 4 x 4 cells):
     which region moves (brows vs mouth corners) separates the classes, and a
     coarse grid keeps that with few classifier weights where `flatten`
     overfits small datasets.

  Parameters (C = 3, defaults): stem 108 + 24, stage 0 (12 -> 16, full
  resolution) 4,320, stage 1 (16 -> 32, stride 2) 14,528: 18,980 trainable;
  with grid 4 (512 features) and a 3-class classifier, 20,519.

  Attributes:
    widths: channels of the residual stages.
    strides: stride of each stage's first convolution; the default keeps the
      full resolution in stage 0 and halves it in stage 1. `(2, 2)` computes
      about a quarter as much (a 7 x 7 output on 28 x 28) with the same
      parameters.
    stem_width: stem filters per kind (u, v, strain).
    center: "median" (subtract each channel's spatial median per sample) or
      "none".
  """
  widths: Sequence[int] = (16, 32)
  strides: Sequence[int] = (1, 2)
  stem_width: int = 4
  center: str = "median"
  dtype: Any = jnp.float32
  input_modes = ("flow",)

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    if len(self.strides) != len(self.widths):
      raise ValueError(f"config.model.encoder_kwargs.strides: one stride per stage of widths "
                       f"{tuple(self.widths)}, got {tuple(self.strides)}")
    if self.center not in CENTERINGS:
      raise ValueError(f"config.model.encoder_kwargs.center must be one of {CENTERINGS}, got "
                       f"{self.center!r}")
    x = x.astype(jnp.float32)
    if self.center == "median":
      x = x - jnp.median(x, axis=(1, 2), keepdims=True)
    x = x.astype(self.dtype)
    # One stem per kind (a grouped convolution computes the same, but XLA's CPU backend runs
    # grouped convolutions an order of magnitude slower than three small ones).
    x = jnp.concatenate([
        nn.Conv(self.stem_width, (3, 3), use_bias=False, dtype=self.dtype,
                name=f"stem_{kind}")(group)
        for kind, group in zip(FLOW_KINDS, channel_kinds(x, "flow_resnet"))], axis=-1)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype,
                     name="stem_bn")(x)
    x = nn.relu(x)
    for stage, (width, stride) in enumerate(zip(self.widths, self.strides)):
      x = _ResidualBlock(width, stride, self.dtype, name=f"stage{stage}")(x, train=train)
    return x
