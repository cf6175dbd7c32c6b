"""Tests of the transfer-learning policies I, II, III on a tiny ResNet MERModel."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from mer_jax import transfer
from mer_jax.models import create_model

ENCODER = {"depth": 18, "base_width": 8}  # ResNet-18 layout, 8 channels wide.
ORDER = ["conv1", "bn1", "layer1_0", "layer1_1", "layer2_0", "layer2_1", "layer3_0",
         "layer3_1", "layer4_0", "layer4_1"]


def _model(**encoder_kwargs):
  config = ml_collections.ConfigDict({
      "encoder": "resnet", "encoder_kwargs": {**ENCODER, **encoder_kwargs},
      "temporal_head": "frames"})
  return create_model(config, num_classes=3)


def _data():
  rng = np.random.RandomState(0)
  frames = jnp.asarray(rng.uniform(0, 255, (2, 2, 32, 32, 3)).astype(np.float32))
  labels = jnp.asarray([0, 2])
  return frames, jnp.ones((2, 2), bool), labels


def _train(model, policy, specific_layer, steps=3):
  frames, mask, labels = _data()
  # "rbg" keys: threefry's initialisers take ~10 s to compile on CPU.
  variables = jax.jit(lambda f, m: model.init(jax.random.key(0, impl="rbg"), f, m, train=False))(
      frames, mask)
  tx = transfer.make_optimizer_with_policy(optax.adam(1e-2), variables["params"], policy,
                                           specific_layer)

  @jax.jit
  def step(params, batch_stats, opt_state):
    def loss_fn(p):
      logits, updates = model.apply({"params": p, "batch_stats": batch_stats}, frames, mask,
                                    train=True, mutable=["batch_stats"])
      per_frame = jnp.broadcast_to(labels[:, None], logits.shape[:2])
      return optax.softmax_cross_entropy_with_integer_labels(logits, per_frame).mean(), updates
    grads, updates = jax.grad(loss_fn, has_aux=True)(params)
    deltas, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, deltas), updates["batch_stats"], opt_state

  params, batch_stats, opt_state = variables["params"], variables["batch_stats"], tx.init(
      variables["params"])
  for _ in range(steps):
    params, batch_stats, opt_state = step(params, batch_stats, opt_state)
  return variables, params, batch_stats


def _changed(before, after):
  return jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))), before, after)


@pytest.mark.parametrize("policy,specific_layer,frozen", [
    ("I", None, ORDER),
    ("II", "layer3", ORDER[:6]),
    ("III", "layer2_1", ORDER[:5]),
])
@pytest.mark.slow
def test_policy_freezes_exactly_the_layers_before_ls(policy, specific_layer, frozen):
  model = _model(**transfer.encoder_kwargs_for_policy(policy, specific_layer))
  initial, params, batch_stats = _train(model, policy, specific_layer)
  labels = transfer.trainable_mask(initial["params"], policy, specific_layer)
  params_changed = _changed(initial["params"], params)
  for label, changed in zip(jax.tree.leaves(labels), jax.tree.leaves(params_changed)):
    # Frozen: bit-identical; trainable: every tensor moved.
    assert changed == (label == transfer.TRAINABLE)
  encoder_labels = {name: set(jax.tree.leaves(sub)) for name, sub in labels["encoder"].items()}
  assert {n for n, s in encoder_labels.items() if s == {transfer.FROZEN}} == set(frozen)
  assert set(jax.tree.leaves(labels["classifier"])) == {transfer.TRAINABLE}
  # BatchNorm statistics of frozen layers stay as pretrained; the others adapt.
  stats_changed = _changed(initial["batch_stats"], batch_stats)["encoder"]
  for name, changed in stats_changed.items():
    assert all(jax.tree.leaves(changed)) == (name not in frozen), name
  if policy == "III":
    assert set(params["encoder"]) == set(ORDER[:6])  # Nothing after layer2_1.
    counts = transfer.count_parameters(params, labels)
    assert counts[transfer.FROZEN] > 0 and counts[transfer.TRAINABLE] > 0


def test_layer_order_and_full_policy():
  model = _model()
  frames, mask, _ = _data()
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), frames, mask, train=False))
  assert transfer.encoder_layer_order(shapes["params"]["encoder"]) == tuple(ORDER)
  labels = transfer.trainable_mask(shapes["params"], "full")
  assert set(jax.tree.leaves(labels)) == {transfer.TRAINABLE}
  # Policy II at conv1 freezes nothing; at layer4_1 all but the last block.
  labels = transfer.trainable_mask(shapes["params"], "II", "conv1")
  assert set(jax.tree.leaves(labels)) == {transfer.TRAINABLE}
  labels = transfer.trainable_mask(shapes["params"], "II", "layer4_1")
  assert set(jax.tree.leaves(labels["encoder"]["layer4_0"])) == {transfer.FROZEN}
  assert set(jax.tree.leaves(labels["encoder"]["layer4_1"])) == {transfer.TRAINABLE}


def test_policy_errors_are_explicit():
  model = _model()
  frames, mask, _ = _data()
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), frames, mask, train=False))[
      "params"]
  with pytest.raises(ValueError, match="policy='IV'"):
    transfer.trainable_mask(params, "IV")
  with pytest.raises(ValueError, match="needs specific_layer"):
    transfer.trainable_mask(params, "II")
  with pytest.raises(ValueError, match="specific_layer='layer7'"):
    transfer.trainable_mask(params, "II", "layer7")
  with pytest.raises(ValueError, match="truncate_after='layer2'"):
    transfer.trainable_mask(params, "III", "layer2")
  with pytest.raises(ValueError, match="no encoder 'backbone'"):
    transfer.trainable_mask(params, "I", encoder_key="backbone")
  small = create_model(ml_collections.ConfigDict({"encoder": "small_cnn"}), num_classes=3)
  small_params = jax.eval_shape(lambda: small.init(jax.random.key(0), frames, mask,
                                                   train=False))["params"]
  with pytest.raises(ValueError, match="'stage0_bn0' is not a ResNet layer"):
    transfer.trainable_mask(small_params, "I")
