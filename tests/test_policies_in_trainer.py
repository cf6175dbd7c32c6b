"""Transfer policies I/II/III inside the real LOSO trainer (seed paper Section 3.1).

A tiny ResNet trains frame-level for two real `train.train_and_evaluate`
steps on synthetic_me/tiny (the session fixture `policy_run` in conftest.py); the fold checkpoint is compared with the fold's
initial state, recomputed independently from the trainer's seeding rule.
"""

import os

import flax.traverse_util
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from mer_jax import schema
from mer_jax import train_state
from mer_jax.models import create_model

FOLD = "synthetic_me__s00"
# One xdist worker runs every test that shares the `policy_run` trainings (--dist loadgroup).
# Trains tiny models end to end: the slow lane.
pytestmark = [pytest.mark.xdist_group("policy_runs"), pytest.mark.slow]


def initial_and_trained(config, workdir):
  """(initial host state, trained checkpoint state) of fold 0."""
  model = create_model(train_state.model_config(config), num_classes=schema.NUM_CLASSES)
  initial = train_state.initial_state(config, model, train_state.fold_rngs(config, 0)[0])
  manager = ocp.CheckpointManager(os.path.join(workdir, "folds", FOLD, "checkpoints"))
  assert manager.latest_step() == config.num_train_steps
  trained = manager.restore(manager.latest_step(), args=ocp.args.Composite(
      state=ocp.args.StandardRestore(jax.tree.map(np.asarray, initial))))["state"]
  manager.close()
  return initial, trained


def split_changed(before, after, collection):
  """Flat paths of `collection` whose arrays are bit-identical / changed."""
  flat_before = flax.traverse_util.flatten_dict(before)
  flat_after = flax.traverse_util.flatten_dict(after)
  assert flat_before.keys() == flat_after.keys(), collection
  same = {p for p in flat_before if np.array_equal(np.asarray(flat_before[p]),
                                                   np.asarray(flat_after[p]))}
  return same, set(flat_before) - same


@pytest.mark.parametrize("policy,layer,frozen_modules", [
    ("I", None, {"conv1", "bn1", "layer1_0", "layer2_0"}),
    ("II", "layer2", {"conv1", "bn1", "layer1_0"}),
    ("III", "layer1", {"conv1", "bn1"}),
])
def test_frozen_parameters_bit_identical_after_training(policy_run, policy, layer,
                                                        frozen_modules):
  config, workdir, results = policy_run(policy)
  assert config.transfer.specific_layer == layer
  assert results["overall"]["num_samples"] == 3  # The held-out subject's clips.
  initial, trained = initial_and_trained(config, workdir)

  same, changed = split_changed(initial.params, trained.params, "params")
  frozen = {p for p in same | changed if p[0] == "encoder" and p[1] in frozen_modules}
  assert frozen and frozen <= same, f"frozen parameters changed: {sorted(frozen & changed)}"
  # Everything else trains (so the comparison above can tell frozen from trained).
  assert ("classifier", "kernel") in changed
  trainable_encoder = {p for p in changed if p[0] == "encoder"}
  if policy == "I":
    assert not trainable_encoder
  else:
    assert {p[1] for p in trainable_encoder} >= {f"{layer}_0"}

  # BatchNorm statistics of frozen layers keep their initial values too.
  same_stats, changed_stats = split_changed(initial.batch_stats, trained.batch_stats,
                                            "batch_stats")
  frozen_stats = {p for p in same_stats | changed_stats if p[1] in frozen_modules}
  assert frozen_stats and frozen_stats <= same_stats
  if policy != "I":
    assert any(p[1] == f"{layer}_0" for p in changed_stats)

  encoder_layers = set(trained.params["encoder"])
  if policy == "III":
    # Truncated after l_s = layer1: no layer2 at all; the classifier reads layer1's
    # 4 channels (basic blocks, base width 4).
    assert encoder_layers == {"conv1", "bn1", "layer1_0"}
    assert set(trained.batch_stats["encoder"]) == encoder_layers - {"conv1"}
    assert trained.params["classifier"]["kernel"].shape == (4, schema.NUM_CLASSES)
  else:
    assert "layer2_0" in encoder_layers
    assert trained.params["classifier"]["kernel"].shape == (8, schema.NUM_CLASSES)
