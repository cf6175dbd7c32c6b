"""Test-time predictions of one fold: every clip of some subjects through the eval step."""

from __future__ import annotations

from typing import Sequence

import jax
import ml_collections
import numpy as np

from mer_jax import input_pipeline
from mer_jax import steps as steps_lib
from mer_jax.train_state import TrainState


def predict(steps: steps_lib.Steps, state: TrainState, builder, split: str,
            subjects: Sequence[str], config: ml_collections.ConfigDict, *, mode: str,
            mesh: jax.sharding.Mesh) -> list[dict]:
  """Predictions for every clip of `subjects`, in record order.

  Returns:
    One dict per clip: `clip_id`, `subject`, `dataset`, `label` (int),
    `prediction` (int, argmax) and `probabilities` (C floats, 6 decimals).
  """
  local_batch = config.eval_batch_size // jax.process_count()
  ds = input_pipeline.create_eval_dataset(builder, split, subjects, config.input,
                                          batch_size=local_batch)
  records = []
  for batch in ds.as_numpy_iterator():
    batch = input_pipeline.pad_batch(batch, local_batch)
    valid = batch.pop("valid")
    device_batch = input_pipeline.shard_for_devices(
        input_pipeline.device_arrays(batch), mode=mode, mesh=mesh)
    probs = steps_lib.local_outputs(steps.eval(state, device_batch), mode)
    for i in np.flatnonzero(valid):
      records.append({
          "clip_id": batch["clip_id"][i].decode(), "subject": batch["subject"][i].decode(),
          "dataset": batch["dataset"][i].decode(), "label": int(batch["label"][i]),
          "prediction": int(np.argmax(probs[i])),
          "probabilities": [round(float(p), 6) for p in probs[i]]})
  if not records:
    raise ValueError(f"no clips for subjects {list(subjects)} in split {split!r}")
  return records
