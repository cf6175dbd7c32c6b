"""Test-time predictions of one fold: every clip of some subjects through the eval step."""

from __future__ import annotations

from typing import Sequence

import jax
import ml_collections
import numpy as np

from mer_jax import input_pipeline
from mer_jax import motion_input
from mer_jax import steps as steps_lib
from mer_jax.train_state import TrainState


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def prediction_record(clip_id, subject, dataset, label, probabilities) -> dict:
  """One clip's prediction as every fold predictions file stores it (`probabilities` `(C,)`)."""
  return {"clip_id": _text(clip_id), "subject": _text(subject), "dataset": _text(dataset),
          "label": int(label), "prediction": int(np.argmax(probabilities)),
          "probabilities": [round(float(p), 6) for p in probabilities]}


def predict(steps: steps_lib.Steps, state: TrainState, builder, split: str,
            subjects: Sequence[str], config: ml_collections.ConfigDict, *, mode: str,
            mesh: jax.sharding.Mesh, flow_features=None, index=None) -> list[dict]:
  """Predictions for every clip of `subjects`, in record order.

  Frames come from the records (`input_pipeline.create_eval_dataset`, Grain,
  no TensorFlow; `index` saves re-reading the clip index); with
  `flow_features` (`motion_input.FlowFeatures`, and the clip `index` they
  follow) the model reads those instead.

  Returns:
    One dict per clip: `clip_id`, `subject`, `dataset`, `label` (int),
    `prediction` (int, argmax) and `probabilities` (C floats, 6 decimals).
  """
  local_batch = config.eval_batch_size // jax.process_count()
  if flow_features is not None:
    batches = motion_input.eval_batches(flow_features, index, subjects, batch_size=local_batch,
                                        normalization=config.flow.normalize)
  else:
    batches = input_pipeline.create_eval_dataset(builder, split, subjects, config.input,
                                                 batch_size=local_batch, index=index)
  records = []
  for batch in batches:
    batch = input_pipeline.pad_batch(batch, local_batch)
    valid = batch.pop("valid")
    device_batch = input_pipeline.shard_for_devices(
        input_pipeline.device_arrays(batch), mode=mode, mesh=mesh)
    probs = steps_lib.local_outputs(steps.eval(state, device_batch), mode)
    for i in np.flatnonzero(valid):
      records.append(prediction_record(batch["clip_id"][i], batch["subject"][i],
                                       batch["dataset"][i], batch["label"][i], probs[i]))
  if not records:
    raise ValueError(f"no clips for subjects {list(subjects)} in split {split!r}")
  return records
