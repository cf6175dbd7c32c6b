"""Tests for the dilated TCN and ED-TCN temporal heads (mer_jax.models.tcn)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import model_checks

from mer_jax.models import build_part
from mer_jax.models import tcn

LENGTHS = (2, 7, 4)  # Valid frames per clip; N = 7 is not a multiple of 4.


def _inputs(num_frames=7, features=3, seed=0):
  x = jax.random.normal(jax.random.key(seed), (len(LENGTHS), num_frames, features))
  mask = jnp.arange(num_frames)[None, :] < jnp.asarray(LENGTHS)[:, None]
  return x, mask


def _gradient_support(net, num_frames, t):
  """Input frames whose values reach output frame `t` of `net` (all frames valid)."""
  x = jax.random.normal(jax.random.key(3), (4, num_frames, 3))
  mask = jnp.ones(x.shape[:2], bool)
  variables = net.init(jax.random.key(4), x, mask, train=False)
  # A random projection of the output features avoids chance cancellations.
  projection = jax.random.normal(jax.random.key(5), (net.channels[-1],))

  def output_at_t(x):
    return jnp.sum(net.apply(variables, x, mask, train=False)[:, t] @ projection)

  gradient = jax.jit(jax.grad(output_at_t))(x)
  return np.flatnonzero(np.asarray(jnp.abs(gradient).sum(axis=(0, 2))) > 0)


@pytest.mark.parametrize("kernel_size,num_levels,expected", [(3, 3, 29), (2, 1, 3), (5, 2, 25)])
def test_receptive_field_formula(kernel_size, num_levels, expected):
  assert tcn.tcn_receptive_field(kernel_size, num_levels) == expected
  head = tcn.TCNHead(channels=(4,) * num_levels, kernel_size=kernel_size)
  assert head.receptive_field == expected


def test_causal_tcn_sees_exactly_its_receptive_field_in_the_past():
  net = tcn.TemporalConvNet(channels=(6, 6), kernel_size=3, causal=True)
  field = net.receptive_field  # 1 + 2 * 2 * (1 + 2) = 13.
  assert field == 13
  t = 15
  support = _gradient_support(net, num_frames=20, t=t)
  # Nothing after t (causality), everything in the field, nothing older.
  np.testing.assert_array_equal(support, np.arange(t - field + 1, t + 1))


def test_centred_tcn_sees_the_future_within_its_receptive_field():
  net = tcn.TemporalConvNet(channels=(6, 6), kernel_size=3, causal=False, weight_norm=False)
  half = (net.receptive_field - 1) // 2
  t = 9
  support = _gradient_support(net, num_frames=20, t=t)
  np.testing.assert_array_equal(support, np.arange(t - half, t + half + 1))


@pytest.mark.parametrize("head,width", [
    (tcn.TCNHead(channels=(5, 6), kernel_size=3, causal=True, output="last"), 6),
    (tcn.TCNHead(channels=(5, 5), kernel_size=3, causal=False, output="attention"), 5),
    (tcn.EDTCNHead(channels=(4, 6), kernel_size=3, output="mean"), 4),
    (tcn.EDTCNHead(channels=(4, 6), kernel_size=3, output="last"), 4),
], ids=["tcn-causal-last", "tcn-centred-attention", "ed_tcn-mean", "ed_tcn-last"])
def test_padded_frames_change_nothing(head, width):
  x, mask = _inputs(seed=1)
  variables = head.init(jax.random.key(2), x, mask, train=False)
  apply = jax.jit(lambda x, mask: head.apply(variables, x, mask, train=False,
                                             mutable=["intermediates"]))
  noise = 100.0 * jax.random.normal(jax.random.key(3), x.shape)
  x_noisy = jnp.where(mask[..., None], x, noise)
  out, state = apply(jnp.concatenate([x, x_noisy]), jnp.concatenate([mask, mask]))
  clean, noisy = jnp.split(out, 2)
  np.testing.assert_array_equal(noisy, clean)
  assert not np.allclose(clean[0], clean[1])
  sequence = state["intermediates"]["sequence"][0]
  assert clean.shape == (len(LENGTHS), width)
  assert sequence.shape == (2 * len(LENGTHS), 7, width)
  np.testing.assert_array_equal(jnp.where(jnp.concatenate([mask, mask])[..., None], 0.0,
                                          sequence), 0.0)


@pytest.mark.slow
@pytest.mark.parametrize("num_frames", [1, 9])
def test_ed_tcn_clip_alone_equals_clip_in_padded_batch(num_frames):
  """N not divisible by 2**levels is padded inside; the padding amount never matters."""
  head = tcn.EDTCNHead(channels=(4, 6), kernel_size=3)
  x = jax.random.normal(jax.random.key(6), (1, 12, 3))
  mask = jnp.ones((1, 12), bool)
  variables = head.init(jax.random.key(7), x, mask, train=False)
  short = head.apply(variables, x[:, :num_frames], mask[:, :num_frames], train=False)
  padded = head.apply(variables, x, jnp.arange(12)[None] < num_frames, train=False)
  assert short.shape == (1, 4)
  np.testing.assert_allclose(short, padded, rtol=1e-5, atol=1e-6)


def test_ed_tcn_shapes_and_activation_range():
  net = tcn.EncoderDecoderTCN(channels=(4, 6), kernel_size=3)
  x, mask = _inputs(num_frames=8)
  variables = net.init(jax.random.key(0), x, mask, train=False)
  assert variables["params"]["encoder1"]["kernel"].shape == (3, 4, 6)
  assert variables["params"]["decoder0"]["kernel"].shape == (3, 6, 4)
  out = net.apply(variables, x, mask, train=False)
  assert out.shape == (3, 8, 4)
  # Normalised ReLU output lies in [0, 1).
  assert float(out.min()) >= 0.0 and float(out.max()) < 1.0


def test_weight_norm_and_residual_projection():
  block = tcn.TemporalBlock(features=5, kernel_size=3, dilation=2, weight_norm=True)
  x, mask = _inputs()
  params = block.init(jax.random.key(0), x, mask, train=False)["params"]
  assert params["residual"]["kernel"].shape == (1, 3, 5)
  assert params["weight_norm0"]["conv0/kernel/scale"].shape == (5,)
  # Doubling a kernel leaves a weight-normalised block unchanged.
  doubled = dict(params)
  doubled["conv0"] = {**params["conv0"], "kernel": 2.0 * params["conv0"]["kernel"]}
  np.testing.assert_allclose(block.apply({"params": doubled}, x, mask, train=False),
                             block.apply({"params": params}, x, mask, train=False),
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,kwargs", [
    ("tcn", dict(channels=())), ("tcn", dict(output="max")), ("ed_tcn", dict(kernel_size=0)),
])
def test_bad_config_names_the_field(name, kwargs):
  head = build_part("temporal_head", name, kwargs)
  x, mask = _inputs()
  with pytest.raises(ValueError, match=next(iter(kwargs))):
    jax.eval_shape(lambda: head.init(jax.random.key(0), x, mask, train=False))


@pytest.mark.parametrize("name,kwargs,width", [
    ("tcn", dict(channels=(8, 8), kernel_size=3, dropout_rate=0.1), 8),
    ("ed_tcn", dict(channels=(6, 8), kernel_size=3, output="attention"), 6),
])
@pytest.mark.slow
def test_plugs_into_create_model_under_jit_and_trains(name, kwargs, width):
  model_checks.check_head_trains_in_mer_model(name, kwargs, num_frames=5, valid_first=3,
                                              classifier_inputs=width)
