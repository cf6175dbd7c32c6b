"""Shared test check: a temporal head plugs into `create_model`, runs under jit, and trains."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from mer_jax.models import create_model


def check_head_trains_in_mer_model(name: str, kwargs: dict, *, num_frames: int, valid_first: int,
                                   classifier_inputs: int):
  """Builds small_cnn -> mean pool -> head `name` -> classifier and checks one jitted grad.

  Row 0 of the (2, num_frames) batch has `valid_first` valid frames, row 1 all.
  Asserts (2, 3) float32 logits, a classifier of `classifier_inputs` inputs, and
  finite gradients, non-zero in both the head and the encoder.
  """
  config = ml_collections.ConfigDict(dict(
      encoder="small_cnn", encoder_kwargs=dict(widths=(8,)), spatial_pool="mean",
      temporal_head=name, temporal_head_kwargs=kwargs))
  model = create_model(config)
  frames = jax.random.uniform(jax.random.key(0), (2, num_frames, 8, 8, 3), maxval=255.0)
  mask = jnp.arange(num_frames)[None, :] < jnp.array([[valid_first], [num_frames]])
  variables = model.init(jax.random.key(1), frames, mask, train=False)
  assert variables["params"]["classifier"]["kernel"].shape == (classifier_inputs, 3)

  def loss_fn(params):
    logits, _ = model.apply({**variables, "params": params}, frames, mask, train=True,
                            rngs={"dropout": jax.random.key(2)}, mutable=["batch_stats"])
    return -jnp.mean(nn.log_softmax(logits)[:, 0]), logits

  (_, logits), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(variables["params"])
  assert logits.shape == (2, 3) and logits.dtype == jnp.float32
  head_grads = jax.tree_util.tree_leaves(grads["temporal_head"])
  encoder_grads = jax.tree_util.tree_leaves(grads["encoder"])
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in head_grads + encoder_grads)
  assert any(float(jnp.abs(g).max()) > 0 for g in head_grads)
  assert any(float(jnp.abs(g).max()) > 0 for g in encoder_grads)
  return model
