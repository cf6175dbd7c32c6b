"""Tests for the attention parts (mer_jax.models.attention)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mer_jax.models import attention, create_model, sequence
from mer_jax.models.pooling import SpatialMeanPool

LENGTHS = (1, 5, 3)


def _sequence(seed=0, features=4):
  x = jax.random.normal(jax.random.key(seed), (len(LENGTHS), 5, features))
  mask = jnp.arange(5)[None, :] < jnp.asarray(LENGTHS)[:, None]
  return x, mask


def test_masked_softmax_weights_valid_entries_only():
  logits = jnp.array([[1.0, 2.0, jnp.inf], [0.5, jnp.nan, -jnp.inf], [3.0, 1.0, 2.0]])
  mask = jnp.array([[True, True, False], [False, False, False], [True, False, True]])
  weights = sequence.masked_softmax(logits, mask)
  assert weights.dtype == jnp.float32
  np.testing.assert_allclose(weights[0, :2], jax.nn.softmax(logits[0, :2]), rtol=1e-6)
  np.testing.assert_array_equal(weights[1], 0.0)  # No valid entry: zeros, not NaN.
  np.testing.assert_allclose(weights[2], [jax.nn.softmax(jnp.array([3.0, 2.0]))[0], 0.0,
                                          jax.nn.softmax(jnp.array([3.0, 2.0]))[1]], rtol=1e-6)
  # Non-finite masked logits do not poison the gradient of the valid ones.
  grad = jax.grad(lambda z: sequence.masked_softmax(z, mask)[0, 0])(logits)
  assert bool(jnp.all(jnp.isfinite(grad)))
  assert float(jnp.abs(grad[0, :2]).sum()) > 0


@pytest.mark.parametrize("hidden", [0, 6])
def test_spatial_attention_weights_sum_to_one_and_pool_the_features(hidden):
  x = jax.random.normal(jax.random.key(0), (6, 3, 4, 5))  # (B*N, h, w, C).
  pool = attention.SpatialAttentionPool(hidden=hidden)
  variables = pool.init(jax.random.key(1), x, train=False)
  out, state = jax.jit(lambda x: pool.apply(variables, x, train=False,
                                            mutable=["intermediates"]))(x)
  weights = state["intermediates"]["spatial_attention"][0]
  assert out.shape == (6, 5) and weights.shape == (6, 3, 4)
  np.testing.assert_allclose(jnp.sum(weights, axis=(1, 2)), 1.0, rtol=1e-6)
  assert float(weights.min()) > 0
  np.testing.assert_allclose(out, jnp.sum(weights[..., None] * x, axis=(1, 2)),
                             rtol=1e-5, atol=1e-6)
  # The weights follow the input (not a constant map).
  assert float(jnp.std(weights)) > 0


def test_spatial_attention_with_constant_scores_is_the_spatial_mean():
  x = jax.random.normal(jax.random.key(2), (2, 3, 3, 4))
  pool = attention.SpatialAttentionPool()
  params = pool.init(jax.random.key(3), x, train=False)["params"]
  params = jax.tree_util.tree_map(jnp.zeros_like, params)
  np.testing.assert_allclose(pool.apply({"params": params}, x, train=False),
                             SpatialMeanPool().apply({}, x, train=False), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("output", ["last", "mean", "attention"])
def test_temporal_pool_reads_valid_steps_only(output):
  x, mask = _sequence(seed=4)
  pool = sequence.TemporalPool(output=output, hidden=8)
  variables = pool.init(jax.random.key(5), x, mask)
  apply = jax.jit(lambda x: pool.apply(variables, x, mask, mutable=["intermediates"]))
  out, state = apply(x)
  # NaN and inf in padded frames change nothing.
  x_bad = jnp.where(mask[..., None], x, jnp.array([jnp.nan, jnp.inf, -jnp.inf, 1e30]))
  np.testing.assert_array_equal(apply(x_bad)[0], out)
  lengths = np.asarray(LENGTHS)
  if output == "last":
    np.testing.assert_array_equal(out, x[np.arange(3), lengths - 1])
  elif output == "mean":
    for row, length in enumerate(LENGTHS):
      np.testing.assert_allclose(out[row], x[row, :length].mean(axis=0), rtol=1e-5)
  else:
    weights = state["intermediates"]["temporal_attention"][0]
    np.testing.assert_allclose(jnp.sum(weights, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(jnp.where(mask, 0.0, weights), 0.0)
    np.testing.assert_allclose(out, jnp.einsum("bn,bnd->bd", weights, jnp.where(
        mask[..., None], x, 0.0)), rtol=1e-5, atol=1e-6)


def test_temporal_softmax_weights_and_smooth_max():
  x, mask = _sequence(seed=6)
  head = attention.TemporalSoftmaxHead(num_scores=3)
  variables = head.init(jax.random.key(7), x, mask, train=False)
  apply = jax.jit(lambda x, temperature: attention.TemporalSoftmaxHead(
      num_scores=3, temperature=temperature).apply(variables, x, mask, train=False,
                                                   mutable=["intermediates"]),
                  static_argnums=1)
  out, state = apply(x, 1.0)
  weights = state["intermediates"]["temporal_weights"][0]
  assert out.shape == (3, 3) and weights.shape == (3, 5, 3)
  np.testing.assert_allclose(jnp.sum(weights, axis=1), 1.0, rtol=1e-6)
  np.testing.assert_array_equal(jnp.where(mask[..., None], 0.0, weights), 0.0)
  # Per-frame class scores, recomputed from the parameters.
  scores = x @ variables["params"]["frame_scores"]["kernel"] + (
      variables["params"]["frame_scores"]["bias"])
  np.testing.assert_allclose(out, jnp.sum(weights * scores, axis=1), rtol=1e-5, atol=1e-6)
  valid_scores = jnp.where(mask[..., None], scores, jnp.nan)
  assert bool(jnp.all(out <= jnp.nanmax(valid_scores, axis=1) + 1e-5))
  assert bool(jnp.all(out >= jnp.nanmin(valid_scores, axis=1) - 1e-5))
  # A cold softmax selects the best valid frame per class, a hot one averages.
  np.testing.assert_allclose(apply(x, 1e-3)[0], jnp.nanmax(valid_scores, axis=1), rtol=1e-4,
                             atol=1e-4)
  np.testing.assert_allclose(apply(x, 1e4)[0], jnp.nanmean(valid_scores, axis=1), rtol=1e-3,
                             atol=1e-3)
  # Random padded frames change nothing.
  x_noisy = jnp.where(mask[..., None], x, 50.0 * jax.random.normal(jax.random.key(8), x.shape))
  np.testing.assert_array_equal(apply(x_noisy, 1.0)[0], out)


@pytest.mark.parametrize("kwargs", [dict(temperature=0.0)])
def test_bad_arguments_name_the_field(kwargs):
  x, mask = _sequence()
  with pytest.raises(ValueError, match="temperature"):
    attention.TemporalSoftmaxHead(**kwargs).init(jax.random.key(0), x, mask, train=False)
  with pytest.raises(ValueError, match="temperature"):
    attention.SpatialAttentionPool(**kwargs).init(jax.random.key(0), jnp.ones((1, 2, 2, 3)),
                                                  train=False)
  with pytest.raises(ValueError, match="mask"):
    attention.TemporalSoftmaxHead().init(jax.random.key(0), x, mask[:, :3], train=False)
  with pytest.raises(ValueError, match="output"):
    sequence.TemporalPool(output="max").init(jax.random.key(0), x, mask)


@pytest.mark.slow
def test_attention_parts_plug_into_create_model_under_jit_and_train():
  config = ml_collections.ConfigDict(dict(
      encoder="small_cnn", encoder_kwargs=dict(widths=(8,)),
      spatial_pool="attention", spatial_pool_kwargs=dict(hidden=4),
      temporal_head="temporal_softmax", temporal_head_kwargs=dict(num_scores=3)))
  model = create_model(config)
  frames = jax.random.uniform(jax.random.key(0), (2, 4, 8, 8, 3), maxval=255.0)
  mask = jnp.array([[True, True, False, False], [True] * 4])
  variables = model.init(jax.random.key(1), frames, mask, train=False)

  def loss_fn(params):
    logits, state = model.apply({**variables, "params": params}, frames, mask, train=True,
                                mutable=["batch_stats", "intermediates"])
    return -jnp.mean(nn.log_softmax(logits)[:, 1]), (logits, state["intermediates"])

  (_, (logits, intermediates)), grads = jax.jit(
      jax.value_and_grad(loss_fn, has_aux=True))(variables["params"])
  assert logits.shape == (2, 3) and logits.dtype == jnp.float32
  spatial = intermediates["spatial_pool"]["spatial_attention"][0]
  assert spatial.shape == (2 * 4, 4, 4)  # (B*N, h, w) after one stride-2 stage.
  temporal = intermediates["temporal_head"]["temporal_weights"][0]
  np.testing.assert_array_equal(temporal[0, 2:], 0.0)
  for part in ("encoder", "spatial_pool", "temporal_head", "classifier"):
    leaves = jax.tree_util.tree_leaves(grads[part])
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves), part
    assert any(float(jnp.abs(g).max()) > 0 for g in leaves), part
