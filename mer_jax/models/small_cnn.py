"""A compact per-frame CNN encoder for CPU-sized runs and tests.

It takes any number of input channels, so it can read the RGB frames or the
frames stacked with their difference from the clip's first frame (see
`MERModel.input_mode`).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp


class SmallCNN(nn.Module):
  """Conv-BN-ReLU stages, each halving the resolution.

  Input `(B*N, H, W, C)` float; output `(B*N, H / 2**len(widths), W / ..., widths[-1])`.
  """
  widths: Sequence[int] = (32, 64, 128)
  convs_per_stage: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    x = x.astype(self.dtype)
    for stage, width in enumerate(self.widths):
      for i in range(self.convs_per_stage):
        stride = 2 if i == 0 else 1
        x = nn.Conv(width, (3, 3), strides=stride, use_bias=False, dtype=self.dtype,
                    name=f"stage{stage}_conv{i}")(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype,
                         name=f"stage{stage}_bn{i}")(x)
        x = nn.relu(x)
    return x
