"""Tests for the recurrent temporal heads (mer_jax.models.recurrent)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import model_checks

from mer_jax.models import build_part
from mer_jax.models import recurrent  # noqa: F401  registers the heads

LENGTHS = (2, 5, 3)  # Valid frames per clip; clips are padded to N = 5.
NUM_FRAMES, FEATURES, HIDDEN = 5, 3, 4


def _inputs(seed=0):
  x = jax.random.normal(jax.random.key(seed), (len(LENGTHS), NUM_FRAMES, FEATURES))
  mask = jnp.arange(NUM_FRAMES)[None, :] < jnp.asarray(LENGTHS)[:, None]
  return x, mask


def _jitted(head):
  """`init` and a jitted eval-mode `apply`.

  Eager `init` reuses the per-op compilations of earlier tests (a jitted one
  compiles the whole program anew); eager `apply` would re-trace nn.scan on
  every call, so it is jitted.
  """
  def init(x, mask):
    return head.init(jax.random.key(1), x, mask, train=False)

  apply = jax.jit(lambda variables, x, mask: head.apply(
      variables, x, mask, train=False, mutable=["intermediates"]))
  return init, apply


def _init_apply(head, x, mask):
  init, apply = _jitted(head)
  variables = init(x, mask)
  out, state = apply(variables, x, mask)
  return variables["params"], out, state["intermediates"]["sequence"][0]


def _loop(cell_name, params, inputs):
  """Python-loop reference: steps one cell over `inputs` (T, D) -> outputs (T, H)."""
  cell = recurrent.make_cell(cell_name, HIDDEN)
  carry = cell.initialize_carry(jax.random.key(0), (1, inputs.shape[-1]))
  outputs = []
  for step in range(inputs.shape[0]):
    carry, y = cell.apply({"params": params}, carry, inputs[step][None])
    outputs.append(y[0])
  return jnp.stack(outputs)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_scan_matches_python_loop(cell):
  x, mask = _inputs()
  head = recurrent.RecurrentHead(cell=cell, hidden_size=HIDDEN, output="last")
  params, out, sequence = _init_apply(head, x, mask)
  assert out.shape == (len(LENGTHS), HIDDEN)
  for row, length in enumerate(LENGTHS):
    expected = _loop(cell, params["layer0"], x[row, :length])
    np.testing.assert_allclose(sequence[row, :length], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[row], expected[-1], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(sequence[row, length:], 0.0)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_bidirectional_is_forward_concat_reversed_backward(cell):
  x, mask = _inputs(seed=2)
  head = recurrent.RecurrentHead(cell=cell, hidden_size=HIDDEN, bidirectional=True,
                                 output="last")
  params, out, sequence = _init_apply(head, x, mask)
  assert out.shape == (len(LENGTHS), 2 * HIDDEN)
  for row, length in enumerate(LENGTHS):
    valid = x[row, :length]
    forward = _loop(cell, params["layer0_forward"], valid)
    # The backward pass starts at the last valid frame, not at the padding.
    backward = _loop(cell, params["layer0_backward"], valid[::-1])[::-1]
    expected = jnp.concatenate([forward, backward], axis=-1)
    np.testing.assert_allclose(sequence[row, :length], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[row], jnp.concatenate([forward[-1], backward[0]]),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell,bidirectional,output", [
    ("lstm", True, "last"), ("gru", True, "mean"), ("lstm", False, "attention"),
])
def test_padded_frames_change_nothing(cell, bidirectional, output):
  x, mask = _inputs(seed=3)
  head = recurrent.RecurrentHead(cell=cell, hidden_size=HIDDEN, num_layers=2,
                                 bidirectional=bidirectional, output=output)
  init, apply = _jitted(head)
  variables = init(x, mask)
  # The clips, then again with random padded frames: one batch, one compilation.
  noise = 100.0 * jax.random.normal(jax.random.key(4), x.shape)
  x_noisy = jnp.where(mask[..., None], x, noise)
  out, _ = apply(variables, jnp.concatenate([x, x_noisy]), jnp.concatenate([mask, mask]))
  clean, noisy = jnp.split(out, 2)
  np.testing.assert_array_equal(noisy, clean)
  assert not np.allclose(clean[0], clean[1])  # Distinct clips give distinct features.


def test_attention_output_weights_are_a_distribution_over_valid_frames():
  x, mask = _inputs(seed=5)
  head = recurrent.RecurrentHead(cell="gru", hidden_size=HIDDEN, output="attention")
  init, apply = _jitted(head)
  _, state = apply(init(x, mask), x, mask)
  weights = state["intermediates"]["pool"]["temporal_attention"][0]
  assert weights.shape == mask.shape
  np.testing.assert_allclose(jnp.sum(weights, axis=1), 1.0, rtol=1e-6)
  np.testing.assert_array_equal(jnp.where(mask, 0.0, weights), 0.0)
  assert bool(jnp.all(jnp.where(mask, weights, 1.0) > 0))


@pytest.mark.slow
def test_bfloat16_compute_stays_close_to_float32():
  x, mask = _inputs(seed=8)
  head = recurrent.RecurrentHead(cell="gru", hidden_size=HIDDEN, bidirectional=True,
                                 output="mean")
  init, apply = _jitted(head)
  variables = init(x, mask)
  out_bf16, _ = _jitted(head.clone(dtype=jnp.bfloat16))[1](variables, x, mask)
  assert out_bf16.dtype == jnp.bfloat16
  np.testing.assert_allclose(out_bf16.astype(jnp.float32), apply(variables, x, mask)[0],
                             atol=0.05)


def test_dropout_between_layers_only_in_training():
  x, mask = _inputs(seed=6)
  head = recurrent.RecurrentHead(cell="lstm", hidden_size=HIDDEN, num_layers=2,
                                 dropout_rate=0.5, output="mean")
  init, _ = _jitted(head)
  variables = init(x, mask)
  apply = jax.jit(lambda train, key: head.apply(variables, x, mask, train=train,
                                                rngs={"dropout": key}), static_argnums=0)
  eval_out = apply(False, jax.random.key(7))
  np.testing.assert_array_equal(apply(False, jax.random.key(8)), eval_out)
  assert not np.allclose(apply(True, jax.random.key(7)), eval_out)


def test_registered_names_set_cell_and_direction():
  heads = {name: build_part("temporal_head", name) for name in ("lstm", "gru", "bilstm", "bigru")}
  assert [(h.cell, h.bidirectional) for h in heads.values()] == [
      ("lstm", False), ("gru", False), ("lstm", True), ("gru", True)]
  assert isinstance(build_part("temporal_head", "rnn", dict(cell="gru")), recurrent.RecurrentHead)


@pytest.mark.parametrize("field,value", [("cell", "rnn_tanh"), ("output", "max"),
                                         ("num_layers", 0)])
def test_bad_config_names_the_field(field, value):
  x, mask = _inputs()
  head = recurrent.RecurrentHead(hidden_size=HIDDEN, **{field: value})
  with pytest.raises(ValueError, match=field):
    jax.eval_shape(lambda: head.init(jax.random.key(0), x, mask, train=False))


@pytest.mark.parametrize("name,kwargs,width", [
    # "lstm", "gru", "bigru" and "rnn" are the same module with other defaults.
    ("bilstm", dict(hidden_size=HIDDEN, dropout_rate=0.1, output="attention"), 2 * HIDDEN),
])
@pytest.mark.slow
def test_plugs_into_create_model_under_jit_and_trains(name, kwargs, width):
  model = model_checks.check_head_trains_in_mer_model(name, kwargs, num_frames=4, valid_first=3,
                                                      classifier_inputs=width)
  assert model.temporal_head.features == width
