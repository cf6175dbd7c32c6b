"""Temporal convolutional heads: dilated residual TCN and encoder-decoder TCN.

* "tcn": the generic TCN of Bai, Kolter & Koltun 2018 ("An Empirical
  Evaluation of Generic Convolutional and Recurrent Networks for Sequence
  Modeling"): residual blocks of two dilated 1-D convolutions (optional weight
  normalisation, ReLU, dropout) with a 1x1 projection on the skip path when the
  width changes; level `i` uses dilation `2**i`. Padding is causal (output at
  frame t sees frames <= t) or centred.
* "ed_tcn": the encoder-decoder TCN of Lea et al. 2016 ("Temporal
  Convolutional Networks for Action Segmentation and Detection"): encoder
  levels of conv -> normalised ReLU -> max pool x2, decoder levels of
  upsample x2 -> conv -> normalised ReLU, mirrored widths.

Both produce a per-frame sequence that `TemporalPool` reduces over the valid
frames ("last" | "mean" | "attention"). Masking: padded frames (a suffix) are
set to zero before every convolution, so a valid output never depends on the
values of padded frames, with causal or centred padding; pooling reads valid
frames only.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from mer_jax.models.sequence import OUTPUTS, TemporalPool, check_sequence, zero_padded


def tcn_receptive_field(kernel_size: int, num_levels: int, convs_per_level: int = 2) -> int:
  """Frames seen by one output of a dilated TCN with dilations 1, 2, ..., 2**(L-1).

  Each convolution with dilation d widens the field by `(kernel_size - 1) * d`,
  so the field is `1 + convs_per_level * (kernel_size - 1) * (2**num_levels - 1)`.
  Causal padding puts all of it in the past (frames t - field + 1 .. t);
  centred padding splits it around t (evenly for an odd `kernel_size`).
  """
  if kernel_size < 1 or num_levels < 0 or convs_per_level < 1:
    raise ValueError(f"tcn_receptive_field: need kernel_size >= 1, num_levels >= 0 and "
                     f"convs_per_level >= 1; got {kernel_size}, {num_levels}, {convs_per_level}")
  return 1 + convs_per_level * (kernel_size - 1) * (2**num_levels - 1)


def _check_layers(name: str, channels: Sequence[int], kernel_size: int) -> None:
  if not channels or any(c < 1 for c in channels):
    raise ValueError(f"{name}: channels must be a non-empty sequence of positive widths, "
                     f"got {channels!r}")
  if kernel_size < 1:
    raise ValueError(f"{name}: kernel_size must be >= 1, got {kernel_size}")


def _check_output(name: str, output: str) -> None:
  if output not in OUTPUTS:
    raise ValueError(f"{name}: output must be one of {OUTPUTS}, got {output!r}")


class TemporalBlock(nn.Module):
  """One residual TCN block: `(B, N, C_in), mask (B, N) -> (B, N, features)`.

  Two dilated convolutions (each: zero padded frames, conv, ReLU, dropout),
  added to the input (projected by a 1x1 conv when `C_in != features`), ReLU.
  """
  features: int
  kernel_size: int
  dilation: int
  causal: bool = True
  dropout_rate: float = 0.0
  weight_norm: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, mask: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    span = (self.kernel_size - 1) * self.dilation
    padding = [(span, 0)] if self.causal else [(span // 2, span - span // 2)]
    y = x
    for i in range(2):
      y = zero_padded(y, mask)
      conv = nn.Conv(self.features, (self.kernel_size,), kernel_dilation=(self.dilation,),
                     padding=padding, dtype=self.dtype, name=f"conv{i}")
      if self.weight_norm:
        conv = nn.WeightNorm(conv, dtype=self.dtype, name=f"weight_norm{i}")
      y = nn.Dropout(self.dropout_rate, deterministic=not train)(nn.relu(conv(y)))
    residual = x
    if x.shape[-1] != self.features:
      residual = nn.Conv(self.features, (1,), dtype=self.dtype, name="residual")(x)
    return nn.relu(y + residual)


class TemporalConvNet(nn.Module):
  """Stack of `TemporalBlock`s, dilation `2**i` at level i: `(B, N, D) -> (B, N, channels[-1])`.

  Padded frames of the output are zero. See `tcn_receptive_field`.
  """
  channels: Sequence[int] = (64, 64, 64)
  kernel_size: int = 3
  causal: bool = True
  dropout_rate: float = 0.0
  weight_norm: bool = True
  dtype: Any = jnp.float32

  @property
  def receptive_field(self) -> int:
    """Frames that one output frame depends on."""
    return tcn_receptive_field(self.kernel_size, len(self.channels))

  @nn.compact
  def __call__(self, x: jnp.ndarray, mask: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    _check_layers(type(self).__name__, self.channels, self.kernel_size)
    check_sequence(x, mask, type(self).__name__)
    y = x.astype(self.dtype)
    for level, width in enumerate(self.channels):
      y = TemporalBlock(width, self.kernel_size, 2**level, causal=self.causal,
                        dropout_rate=self.dropout_rate, weight_norm=self.weight_norm,
                        dtype=self.dtype, name=f"block{level}")(y, mask, train=train)
    return zero_padded(y, mask)


class TCNHead(nn.Module):
  """Dilated residual TCN over frames, pooled: `(B, N, D) -> (B, channels[-1])`.

  With the defaults (kernel 3, 3 levels) one output sees
  `tcn_receptive_field(3, 3) = 29` frames. The per-frame sequence is sown as
  `intermediates/sequence`.

  Attributes:
    channels: width of each level (level i has dilation 2**i).
    kernel_size: temporal kernel size of every convolution.
    causal: causal padding (Bai et al.) or centred padding.
    dropout_rate: dropout after every convolution (train only).
    weight_norm: weight-normalise the dilated convolutions (`nn.WeightNorm`).
    output: "last" | "mean" | "attention" pooling over valid frames.
    attention_hidden: hidden width of the attention scorer.
    dtype: compute dtype.
  """
  channels: Sequence[int] = (64, 64, 64)
  kernel_size: int = 3
  causal: bool = True
  dropout_rate: float = 0.0
  weight_norm: bool = True
  output: str = "last"
  attention_hidden: int = 32
  dtype: Any = jnp.float32

  @property
  def receptive_field(self) -> int:
    """Frames that one output frame depends on."""
    return tcn_receptive_field(self.kernel_size, len(self.channels))

  @nn.compact
  def __call__(self, x: jnp.ndarray, mask: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    """`x` `(B, N, D)`, `mask` `(B, N)` bool -> `(B, channels[-1])` in `dtype`."""
    _check_output(type(self).__name__, self.output)
    y = TemporalConvNet(self.channels, self.kernel_size, self.causal, self.dropout_rate,
                        self.weight_norm, self.dtype, name="tcn")(x, mask, train=train)
    self.sow("intermediates", "sequence", y)
    return TemporalPool(self.output, hidden=self.attention_hidden, dtype=self.dtype,
                        name="pool")(y, mask)


def normalized_relu(x: jnp.ndarray, epsilon: float = 1e-5) -> jnp.ndarray:
  """Lea et al.'s channel-normalised ReLU: `relu(x) / (max_channels relu(x) + eps)`.

  Per frame: `(..., C) -> (..., C)` with values in [0, 1).
  """
  y = nn.relu(x)
  return y / (jnp.max(y, axis=-1, keepdims=True) + epsilon)


class EncoderDecoderTCN(nn.Module):
  """ED-TCN (Lea et al. 2016): `(B, N, D), mask (B, N) -> (B, N, channels[0])`.

  Encoder level l: conv(channels[l]) -> normalised ReLU -> dropout -> max pool
  x2. Decoder level l (reverse order): upsample x2 (repeat) -> conv(channels[l])
  -> normalised ReLU -> dropout. N is padded with masked frames up to a
  multiple of `2**len(channels)` and the output is cropped back to N. A pooled
  frame is valid when either of its two source frames is; max pooling ignores
  padded frames, and padded frames are zeroed before every convolution, so
  valid outputs do not depend on padded values. Padded output frames are zero.
  """
  channels: Sequence[int] = (64, 96)
  kernel_size: int = 5
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, mask: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    _check_layers(type(self).__name__, self.channels, self.kernel_size)
    check_sequence(x, mask, type(self).__name__)
    num_frames = x.shape[1]
    factor = 2**len(self.channels)
    extra = -num_frames % factor
    y = jnp.pad(x.astype(self.dtype), ((0, 0), (0, extra), (0, 0)))
    level_mask = jnp.pad(mask, ((0, 0), (0, extra)))

    def conv_block(y, level_mask, width, name):
      y = zero_padded(y, level_mask)
      y = nn.Conv(width, (self.kernel_size,), padding="SAME", dtype=self.dtype, name=name)(y)
      y = normalized_relu(y)
      return nn.Dropout(self.dropout_rate, deterministic=not train)(y)

    encoder_masks = []
    for level, width in enumerate(self.channels):
      y = conv_block(y, level_mask, width, f"encoder{level}")
      encoder_masks.append(level_mask)
      # The lowest finite value (not -inf, whose gradients can turn into nan)
      # loses every max against a valid frame.
      y = jnp.where(level_mask[..., None], y, jnp.finfo(y.dtype).min)
      y = nn.max_pool(y, window_shape=(2,), strides=(2,))
      level_mask = jnp.any(level_mask.reshape(level_mask.shape[0], -1, 2), axis=-1)
      y = zero_padded(y, level_mask)
    for level in reversed(range(len(self.channels))):
      y = jnp.repeat(y, 2, axis=1)
      level_mask = encoder_masks[level]
      y = conv_block(y, level_mask, self.channels[level], f"decoder{level}")
    return zero_padded(y[:, :num_frames], mask)


class EDTCNHead(nn.Module):
  """Encoder-decoder TCN over frames, pooled: `(B, N, D) -> (B, channels[0])`.

  The per-frame sequence is sown as `intermediates/sequence`.

  Attributes:
    channels: encoder widths per level (the decoder mirrors them); each level
      halves the temporal resolution.
    kernel_size: temporal kernel size (centred, "SAME" padding).
    dropout_rate: dropout after every convolution (train only).
    output: "last" | "mean" | "attention" pooling over valid frames.
    attention_hidden: hidden width of the attention scorer.
    dtype: compute dtype.
  """
  channels: Sequence[int] = (64, 96)
  kernel_size: int = 5
  dropout_rate: float = 0.0
  output: str = "mean"
  attention_hidden: int = 32
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, mask: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    """`x` `(B, N, D)`, `mask` `(B, N)` bool -> `(B, channels[0])` in `dtype`."""
    _check_output(type(self).__name__, self.output)
    y = EncoderDecoderTCN(self.channels, self.kernel_size, self.dropout_rate, self.dtype,
                          name="ed_tcn")(x, mask, train=train)
    self.sow("intermediates", "sequence", y)
    return TemporalPool(self.output, hidden=self.attention_hidden, dtype=self.dtype,
                        name="pool")(y, mask)
