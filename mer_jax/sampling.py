"""A LOSO fold's endless training stream of clip rows, shared by every input path.

Epoch e of a fold is a permutation of its training clips seeded by (seed, e); element k of the
stream is position k mod n of epoch k // n. The frame pipeline (`input_pipeline.fold_sampler`,
Grain) and the flow-feature path (`motion_input.TrainSchedule`, host and device) both draw from
`FoldSampler`, so one rule decides which clips a fold's step s trains on. NumPy only.
"""

from __future__ import annotations

import sys
from typing import Sequence

import numpy as np


class FoldSampler:
  """An endless sequence of a fold's record indices: epoch e is a permutation seeded by (seed, e).

  `sampler[k]` is a pure function of (seed, k): random access, no state, so
  step s of a fold is found without drawing steps 0..s-1. (Grain's own
  `MapDataset.shuffle` gives the same guarantee for datasets of any size,
  at about 7 ms per element here: the index shuffle, not the clip, was the
  pipeline's cost. Folds have at most a few thousand clips, so one
  permutation per epoch is cheap.)
  """

  def __init__(self, rows: Sequence[int], seed: int):
    self.rows = np.asarray(rows, np.int64)
    self.seed = int(seed)
    self._epoch, self._order = -1, self.rows

  def __len__(self) -> int:
    return sys.maxsize  # Endless: epochs follow one another.

  def __getitem__(self, k: int) -> int:
    epoch, position = divmod(int(k), len(self.rows))
    if epoch != self._epoch:  # Elements are drawn in order: one permutation per epoch.
      order = np.random.default_rng([self.seed, epoch]).permutation(self.rows)
      self._epoch, self._order = epoch, order
    return int(self._order[position])

