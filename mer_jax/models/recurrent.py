"""Recurrent temporal heads: stacked, optionally bidirectional LSTM / GRU.

Built on Flax's `nn.RNN` (the cell wrapped in `nn.scan`) with the built-in
`nn.OptimizedLSTMCell` / `nn.GRUCell` and `nn.Bidirectional`. Variable clip
lengths go through `seq_lengths`, so the backward direction starts at each
clip's last *valid* frame (Flax reverses only within the valid prefix) and
padded frames never reach a valid output.

Registered temporal heads (same module, different defaults):
"rnn" (choose `cell`, `bidirectional`), "lstm", "gru", "bilstm", "bigru".
The seed paper (Section 3.2) pairs VGGFace2 features with a uni- or
bi-directional LSTM.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from mer_jax.models.sequence import OUTPUTS, TemporalPool, check_sequence, last_valid, zero_padded

CELLS = {"lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell}


def make_cell(cell: str, hidden_size: int, dtype: Any = jnp.float32,
              name: str | None = None) -> nn.RNNCellBase:
  """The Flax cell for `cell` ("lstm" | "gru") with `hidden_size` features."""
  if cell not in CELLS:
    raise ValueError(f"cell must be one of {sorted(CELLS)}, got {cell!r}")
  return CELLS[cell](features=hidden_size, dtype=dtype, name=name)


class RecurrentHead(nn.Module):
  """Stacked (bi)directional LSTM/GRU over frames: `(B, N, D) -> (B, D_out)`.

  `D_out = hidden_size * (2 if bidirectional else 1)`. Each layer maps the
  sequence `(B, N, D_in)` to `(B, N, D_out)`; dropout sits between layers.
  The last layer's sequence (also sown as `intermediates/sequence`) is reduced
  by `output`:

  * "last": the state after the last valid frame; bidirectional: the forward
    state at the last valid frame concatenated with the backward state at
    frame 0 (the backward pass has then read the whole valid clip).
  * "mean": mean over valid frames; "attention": learned attention over valid
    frames (`mer_jax.models.attention.TemporalPool`).

  Parameters: the cell of layer `l` is `params["layer{l}"]`, or
  `params["layer{l}_forward"]` and `params["layer{l}_backward"]` when
  bidirectional; `apply` them with `make_cell(...)` to step the cell by hand.

  Attributes:
    cell: "lstm" (`nn.OptimizedLSTMCell`) or "gru" (`nn.GRUCell`).
    hidden_size: features per direction.
    num_layers: stacked recurrent layers (>= 1).
    bidirectional: also run a backward pass and concatenate.
    dropout_rate: dropout on the sequence between layers (train only).
    output: "last" | "mean" | "attention".
    attention_hidden: hidden width of the attention scorer for "attention".
    dtype: compute dtype of the cells (parameters stay float32).
  """
  cell: str = "lstm"
  hidden_size: int = 128
  num_layers: int = 1
  bidirectional: bool = False
  dropout_rate: float = 0.0
  output: str = "last"
  attention_hidden: int = 32
  dtype: Any = jnp.float32

  @property
  def features(self) -> int:
    """Width of the clip feature this head returns."""
    return self.hidden_size * (2 if self.bidirectional else 1)

  def _check(self) -> None:
    name = type(self).__name__
    if self.cell not in CELLS:
      raise ValueError(f"{name}: cell must be one of {sorted(CELLS)}, got {self.cell!r}")
    if self.output not in OUTPUTS:
      raise ValueError(f"{name}: output must be one of {OUTPUTS}, got {self.output!r}")
    if self.num_layers < 1:
      raise ValueError(f"{name}: num_layers must be >= 1, got {self.num_layers}")
    if self.hidden_size < 1:
      raise ValueError(f"{name}: hidden_size must be >= 1, got {self.hidden_size}")

  @nn.compact
  def __call__(self, x: jnp.ndarray, mask: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    """Encodes clips.

    Args:
      x: `(B, N, D)` per-frame features.
      mask: `(B, N)` bool, True for real frames (a prefix of each clip).
      train: enables dropout between layers.

    Returns:
      `(B, D_out)` clip features in `dtype`.
    """
    self._check()
    check_sequence(x, mask, type(self).__name__)
    seq_lengths = jnp.sum(mask, axis=1, dtype=jnp.int32)
    y = zero_padded(x.astype(self.dtype), mask)
    for layer in range(self.num_layers):
      if layer > 0:
        y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
      # Cells built here bind to this module, so their names fix the parameter
      # paths whatever nn.RNN / nn.Bidirectional wrap them in.
      if self.bidirectional:
        rnn = nn.Bidirectional(
            nn.RNN(make_cell(self.cell, self.hidden_size, self.dtype, f"layer{layer}_forward")),
            nn.RNN(make_cell(self.cell, self.hidden_size, self.dtype, f"layer{layer}_backward")))
      else:
        rnn = nn.RNN(make_cell(self.cell, self.hidden_size, self.dtype, f"layer{layer}"))
      # Padded outputs are garbage computed from the last valid carry; zero them
      # so the next layer and the pooling only ever see valid steps.
      y = zero_padded(rnn(y, seq_lengths=seq_lengths), mask)
    self.sow("intermediates", "sequence", y)
    if self.output == "last" and self.bidirectional:
      clip = jnp.concatenate(
          [last_valid(y[..., :self.hidden_size], mask), y[:, 0, self.hidden_size:]], axis=-1)
    else:
      clip = TemporalPool(self.output, hidden=self.attention_hidden, dtype=self.dtype,
                          name="pool")(y, mask)
    # The cells keep their carry in float32 (their initial carry's dtype) even
    # when they compute in bfloat16; return the compute dtype like other parts.
    return clip.astype(self.dtype)


class LSTMHead(RecurrentHead):
  """`RecurrentHead` with an LSTM cell (uni-directional by default)."""
  cell: str = "lstm"


class GRUHead(RecurrentHead):
  """`RecurrentHead` with a GRU cell (uni-directional by default)."""
  cell: str = "gru"


class BiLSTMHead(RecurrentHead):
  """`RecurrentHead` with a bidirectional LSTM."""
  cell: str = "lstm"
  bidirectional: bool = True


class BiGRUHead(RecurrentHead):
  """`RecurrentHead` with a bidirectional GRU."""
  cell: str = "gru"
  bidirectional: bool = True
