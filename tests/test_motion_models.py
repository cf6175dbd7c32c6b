"""Motion-input models (mer_jax.models.motion), MERModel's flow mode and hidden classifier layers.

Shapes and parameter counts are derived from the architectures in the
docstrings; the training runs use a small synthetic flow dataset generated
here (class = which face region carries a u blob), never a benchmark fold.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import default as default_config
from mer_jax.flow import minmax_normalize
from mer_jax.models import build_part
from mer_jax.models import create_model
from mer_jax.models import mer_model
from mer_jax.models import motion

SIZE = 28  # The field's flow map side (STSTNet, OFF-ApexNet).

# The paper models and ours as compositions of registered parts (docs/motion_models.md).
MODELS = {
    "ststnet": dict(encoder="ststnet", spatial_pool="flatten"),
    "off_apexnet": dict(encoder="off_apexnet", spatial_pool="flatten",
                        classifier_hidden=(1024, 1024)),
    "flow_linear": dict(encoder="identity", spatial_pool="grid",
                        spatial_pool_kwargs=dict(grid_size=7)),
    "flow_resnet": dict(encoder="flow_resnet", spatial_pool="grid",
                        spatial_pool_kwargs=dict(grid_size=4)),
}


def _flow_model_config(name, **overrides):
  fields = dict(temporal_head="mean", input_mode="flow", **MODELS[name])
  fields.update(overrides)
  return ml_collections.ConfigDict(fields)


def _count(tree):
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


def _init_and_apply(module, *inputs):
  """`(variables, output)` of `module` in eval mode: one jitted trace (eager Flax is slower)."""
  init = jax.jit(functools.partial(module.init_with_output, train=False))
  output, variables = init(jax.random.key(0), *inputs)
  return variables, output


def _shapes(module, *inputs):
  """`(variables, output)` shapes of `module` in eval mode, traced without compiling."""
  output, variables = jax.eval_shape(functools.partial(module.init_with_output, train=False),
                                     jax.random.key(0), *inputs)
  return variables, output


def _flow(batch, channels, seed=0):
  """Min-max normalised random flow features as a one-frame clip `(B, 1, S, S, C)`."""
  x = jax.random.normal(jax.random.key(seed), (batch, SIZE, SIZE, channels))
  return minmax_normalize(x)[:, None]


# --------------------------------------------------------------------------------------------
# Encoders: output shapes and parameter counts.
# --------------------------------------------------------------------------------------------

def _conv(k, c_in, c_out, bias=True):
  return k * k * c_in * c_out + (c_out if bias else 0)


STSTNET_3 = sum(_conv(3, 3, f) for f in (3, 5, 8)) + 2 * 16          # 448 + 32 = 480
STSTNET_6 = sum(_conv(3, 6, f) for f in (3, 5, 8)) + 2 * 16          # 880 + 32 = 912
STSTNET_PER_CHANNEL = sum(_conv(3, 1, f) for f in (3, 5, 8)) + 2 * 16  # 160 + 32 = 192
OFF_APEXNET_3 = 2 * (_conv(5, 1, 6) + _conv(5, 6, 16))               # 2 * (156 + 2416) = 5144
OFF_APEXNET_6 = 2 * (_conv(5, 2, 6) + _conv(5, 6, 16))               # 2 * (306 + 2416) = 5444


def _resnet_block(c_in, width):
  convs = _conv(3, c_in, width, False) + _conv(3, width, width, False)
  shortcut = _conv(1, c_in, width, False) + 2 * width
  return convs + 2 * 2 * width + shortcut


FLOW_RESNET_3 = 3 * _conv(3, 1, 4, False) + 2 * 12 + _resnet_block(12, 16) + _resnet_block(16, 32)
FLOW_RESNET_6 = 3 * _conv(3, 2, 4, False) + 2 * 12 + _resnet_block(12, 16) + _resnet_block(16, 32)


@pytest.mark.parametrize("name, kwargs, channels, out_shape, num_params", [
    ("ststnet", {}, 3, (5, 5, 16), STSTNET_3),
    ("ststnet", {}, 6, (5, 5, 16), STSTNET_6),
    ("ststnet", {"stream_inputs": "per_channel"}, 3, (5, 5, 16), STSTNET_PER_CHANNEL),
    ("off_apexnet", {}, 3, (7, 7, 32), OFF_APEXNET_3),
    ("off_apexnet", {}, 6, (7, 7, 32), OFF_APEXNET_6),
    ("off_apexnet", {"padding": "VALID"}, 3, (4, 4, 32), OFF_APEXNET_3),
    ("flow_resnet", {}, 3, (14, 14, 32), FLOW_RESNET_3),
    ("flow_resnet", {}, 6, (14, 14, 32), FLOW_RESNET_6),
    ("identity", {}, 6, (SIZE, SIZE, 6), 0),
])
def test_encoder_output_shape_and_parameter_count(name, kwargs, channels, out_shape, num_params):
  variables, out = _shapes(build_part("encoder", name, kwargs), _flow(2, channels)[:, 0])
  assert out.shape == (2,) + out_shape and out.dtype == jnp.float32
  assert _count(variables.get("params", {})) == num_params


def test_stated_parameter_counts():
  # The figures written in the docstrings and docs/motion_models.md.
  assert (STSTNET_3, OFF_APEXNET_3, FLOW_RESNET_3) == (480, 5144, 18980)


def test_identity_returns_its_input():
  x = _flow(2, 3)[:, 0]
  np.testing.assert_array_equal(_init_and_apply(build_part("encoder", "identity"), x)[1], x)


def test_channel_kinds_gather_both_flow_pairs():
  x = jnp.arange(6.0).reshape(1, 1, 1, 6)  # u, v, strain onset->apex, then apex->offset.
  kinds = [np.asarray(k).reshape(-1).tolist() for k in motion.channel_kinds(x, "test")]
  assert kinds == [[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]]


def test_off_apexnet_ignores_strain():
  encoder = build_part("encoder", "off_apexnet")
  x = _flow(2, 3)[:, 0]
  other_strain = x.at[..., 2].set(jax.random.uniform(jax.random.key(1), x.shape[:-1]))
  _, out = _init_and_apply(encoder, jnp.concatenate([x, other_strain]))
  np.testing.assert_array_equal(out[:2], out[2:])


def test_flow_resnet_is_blind_to_a_constant_offset_per_channel():
  # Head translation (or min-max's sample-dependent zero) adds a constant to a channel.
  x = _flow(2, 3)[:, 0]
  offset = jnp.asarray([[0.3, -0.2, 0.1], [-0.1, 0.25, 0.0]])[:, None, None, :]
  both = jnp.concatenate([x, x + offset])  # Eval-mode batch norm treats samples alone.
  for center, invariant in (("median", True), ("none", False)):
    encoder = build_part("encoder", "flow_resnet", {"center": center, "widths": (4,),
                                                    "strides": (1,)})  # Small: fast to compile.
    _, out = _init_and_apply(encoder, both)
    assert np.allclose(out[:2], out[2:], atol=1e-5) == invariant, center


# --------------------------------------------------------------------------------------------
# Composition through create_model in flow mode.
# --------------------------------------------------------------------------------------------

# Whole models on C = 3 with 3 classes: encoder + hidden layers + classifier.
MODEL_PARAMS = {
    "ststnet": STSTNET_3 + 400 * 3 + 3,                                         # 1,683
    "off_apexnet": OFF_APEXNET_3 + 1568 * 1024 + 1024 + 1024 * 1024 + 1024 + 1024 * 3 + 3,
    "flow_linear": 7 * 7 * 3 * 3 + 3,                                           # 444
    "flow_resnet": FLOW_RESNET_3 + 4 * 4 * 32 * 3 + 3,                           # 20,519
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_flow_models_compose_for_three_and_six_channels(name):
  model = create_model(_flow_model_config(name))
  mask = jnp.ones((2, 1), bool)
  variables_3, logits_3 = _shapes(model, _flow(2, 3), mask)
  variables_6, logits_6 = _init_and_apply(model, _flow(2, 6), mask)  # One real run.
  for logits in (logits_3, logits_6):
    assert logits.shape == (2, 3) and logits.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(logits_6)))
  assert _count(variables_3["params"]) == MODEL_PARAMS[name]
  # The apex->offset channels are read, not dropped.
  assert _count(variables_6["params"]) > _count(variables_3["params"])


def test_stated_model_parameter_counts():
  assert MODEL_PARAMS == {"ststnet": 1683, "off_apexnet": 2664475, "flow_linear": 444,
                          "flow_resnet": 20519}


def test_flow_features_pass_through_unchanged():
  # Identity + flatten: the classifier sees exactly the features the trainer passed.
  config = _flow_model_config("flow_linear", spatial_pool="flatten", spatial_pool_kwargs={})
  frames = _flow(1, 3)
  variables, logits = _init_and_apply(create_model(config), frames, jnp.ones((1, 1), bool))
  kernel = variables["params"]["classifier"]["kernel"]
  bias = variables["params"]["classifier"]["bias"]
  expected = frames.reshape(1, -1) @ kernel + bias
  np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------
# classifier_hidden: the seed paper's {fc1, fc2, fc3}; () keeps today's parameter tree.
# --------------------------------------------------------------------------------------------

def _tiny_frames():
  frames = jax.random.randint(jax.random.key(0), (2, 6, 32, 32, 3), 0, 256).astype(jnp.uint8)
  return frames, jnp.ones((2, 6), bool)


def test_no_hidden_layers_keep_the_existing_parameter_tree():
  existing = default_config.get_config("tiny").model.to_dict()
  existing.pop("classifier_hidden", None)
  frames, mask = _tiny_frames()
  variables, _ = _shapes(create_model(existing), frames, mask)
  same, _ = _shapes(create_model({**existing, "classifier_hidden": ()}), frames, mask)
  assert set(variables["params"]) == {"encoder", "classifier"}
  # small_cnn (8, 16) on 32 x 32 -> 8 x 8 x 16; grid 4 -> 16 cells x 16 = 256 features.
  assert variables["params"]["classifier"]["kernel"].shape == (256, 3)
  # Same paths, shapes and dtypes (jax.ShapeDtypeStruct compares both).
  assert (jax.tree_util.tree_flatten_with_path(same)
          == jax.tree_util.tree_flatten_with_path(variables))


def test_seed_paper_head_has_fc1_fc2_fc3():
  config = {**default_config.get_config("tiny").model.to_dict(), "classifier_hidden": (64, 32)}
  frames, mask = _tiny_frames()
  params = _shapes(create_model(config), frames, mask)[0]["params"]
  assert set(params) == {"encoder", "classifier_hidden_0", "classifier_hidden_1", "classifier"}
  assert params["classifier_hidden_0"]["kernel"].shape == (256, 64)  # fc1
  assert params["classifier_hidden_1"]["kernel"].shape == (64, 32)   # fc2
  assert params["classifier"]["kernel"].shape == (32, 3)             # fc3


# --------------------------------------------------------------------------------------------
# Bad input: a clear ValueError naming the field or argument.
# --------------------------------------------------------------------------------------------

def _init(config, frames, mask):
  return _shapes(create_model(config), frames, mask)


@pytest.mark.parametrize("channels", [2, 4])
def test_flow_mode_refuses_other_channel_counts(channels):
  with pytest.raises(ValueError, match=r"frames: input_mode='flow' takes flow features .* C = 3 "
                                       r"\(u, v, strain\) or 6"):
    _init(_flow_model_config("flow_resnet"), _flow(1, channels), jnp.ones((1, 1), bool))


def test_flow_mode_refuses_pixel_frames():
  frames = jnp.zeros((1, 1, SIZE, SIZE, 3), jnp.uint8)
  with pytest.raises(ValueError, match=r"frames: input_mode='flow' takes float flow features, "
                                       r"got uint8"):
    _init(_flow_model_config("ststnet"), frames, jnp.ones((1, 1), bool))


def test_flow_mode_refuses_magnification():
  config = _flow_model_config("ststnet", magnify=ml_collections.ConfigDict(
      {"fps": 6.0, "low_hz": 0.5, "high_hz": 2.5, "alpha": 8.0}))
  with pytest.raises(ValueError, match=r"config.model.magnify must be None with "
                                       r"config.model.input_mode='flow'"):
    create_model(config)
  # Built directly, the model refuses it too (any module stands in for the magnifier).
  model = mer_model.MERModel(encoder=motion.STSTNet(), spatial_pool=build_part("spatial_pool",
                             "flatten"), temporal_head=build_part("temporal_head", "mean"),
                             magnifier=motion.Identity(), input_mode="flow")
  with pytest.raises(ValueError, match=r"config.model.magnify must be None"):
    _shapes(model, _flow(1, 3), jnp.ones((1, 1), bool))


def test_frame_model_refuses_flow_features():
  frame_config = default_config.get_config("tiny").model  # input_mode "diff".
  with pytest.raises(ValueError, match=r"frames must be \(B, N, H, W, 3\) RGB pixels for "
                                       r"config.model.input_mode='diff', got shape "
                                       r"\(1, 1, 28, 28, 6\).*input_mode='flow'"):
    _init(frame_config, _flow(1, 6), jnp.ones((1, 1), bool))
  # Three-channel flow as a one-frame clip: difference images would be all zero.
  with pytest.raises(ValueError, match=r"config.model.input_mode='diff' subtracts each clip's "
                                       r"first frame.*input_mode='flow'"):
    _init(frame_config, _flow(1, 3), jnp.ones((1, 1), bool))


@pytest.mark.parametrize("encoder", ["ststnet", "off_apexnet", "flow_resnet"])
def test_flow_encoders_refuse_pixel_modes(encoder):
  config = ml_collections.ConfigDict(dict(encoder=encoder, input_mode="diff"))
  with pytest.raises(ValueError, match=r"config.model.input_mode='diff': encoder \w+ reads "
                                       r"'flow' input"):
    create_model(config)


def test_flow_encoders_refuse_channels_that_are_not_triples():
  x = jnp.zeros((1, SIZE, SIZE, 4))
  with pytest.raises(ValueError, match=r"off_apexnet: input channels must be \(u, v, strain\) "
                                       r"triples .* got C = 4"):
    _shapes(build_part("encoder", "off_apexnet"), x)


@pytest.mark.parametrize("field, value, message", [
    ("classifier_hidden", (0,), "config.model.classifier_hidden must be a sequence of positive"),
    ("classifier_hidden", (1.5,), "config.model.classifier_hidden must be a sequence of positive"),
    ("classifier_hidden", "64", "config.model.classifier_hidden must be a sequence of positive"),
    ("encoder_kwargs", {"stream_inputs": "pairs"},
     "config.model.encoder_kwargs.stream_inputs must be one of"),
])
def test_bad_model_fields_are_named(field, value, message):
  config = _flow_model_config("ststnet", **{field: value})
  with pytest.raises(ValueError, match=message):
    _init(config, _flow(1, 3), jnp.ones((1, 1), bool))


# --------------------------------------------------------------------------------------------
# Short training runs on a separable synthetic flow dataset.
# --------------------------------------------------------------------------------------------

# Region centres (row, col) on the 28 x 28 map: left brow, right brow, mouth.
REGIONS = ((7, 8), (7, 20), (21, 14))


def _blob_dataset(num, seed):
  """Class c has a positive u blob at REGIONS[c]; noise and a per-sample head translation.

  Returns min-max normalised (u, v, strain) one-frame clips `(num, 1, 28, 28, 3)`
  and labels `(num,)`.
  """
  rng = np.random.default_rng(seed)
  labels = np.arange(num) % 3
  rows, cols = np.mgrid[:SIZE, :SIZE]
  u = 0.3 * rng.normal(size=(num, SIZE, SIZE))
  v = 0.3 * rng.normal(size=(num, SIZE, SIZE))
  for i, label in enumerate(labels):
    row, col = np.asarray(REGIONS[label]) + rng.integers(-2, 3, size=2)
    u[i] += rng.uniform(1.0, 2.0) * np.exp(-((rows - row) ** 2 + (cols - col) ** 2) / 12.0)
  u += rng.normal(size=(num, 1, 1))  # Rigid head motion.
  v += rng.normal(size=(num, 1, 1))
  du_dy, du_dx = np.gradient(u, axis=(1, 2))
  dv_dy, dv_dx = np.gradient(v, axis=(1, 2))
  strain = np.sqrt(du_dx ** 2 + dv_dy ** 2 + 0.5 * (du_dy + dv_dx) ** 2)
  features = np.stack([u, v, strain], axis=-1).astype(np.float32)
  return minmax_normalize(features)[:, None], jnp.asarray(labels)


def _train_and_score(config, *, steps, learning_rate):
  model = create_model(config)
  x, y = _blob_dataset(48, seed=0)
  x_test, y_test = _blob_dataset(60, seed=1)
  mask_test = jnp.ones(x_test.shape[:2], bool)
  variables = jax.jit(functools.partial(model.init, train=False))(jax.random.key(0), x[:2],
                                                                   mask_test[:2])
  tx = optax.adam(learning_rate)

  @jax.jit
  def step(variables, opt_state, x, y, rng):  # Data as arguments: XLA would fold constants.
    def loss_fn(params):
      mask = jnp.ones(x.shape[:2], bool)
      logits, updates = model.apply({**variables, "params": params}, x, mask, train=True,
                                    rngs={"dropout": rng}, mutable=["batch_stats"])
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), updates

    grads, updates = jax.grad(loss_fn, has_aux=True)(variables["params"])
    param_updates, opt_state = tx.update(grads, opt_state, variables["params"])
    params = optax.apply_updates(variables["params"], param_updates)
    return {**variables, **updates, "params": params}, opt_state

  opt_state = tx.init(variables["params"])
  for i in range(steps):
    variables, opt_state = step(variables, opt_state, x, y, jax.random.key(i))
  logits = jax.jit(functools.partial(model.apply, train=False))(variables, x_test, mask_test)
  return float(jnp.mean(jnp.argmax(logits, -1) == y_test))


@pytest.mark.parametrize("name, learning_rate", [
    ("flow_linear", 1e-2),
    pytest.param("ststnet", 3e-3, marks=pytest.mark.slow),      # ~4 s on 2 shared cores.
    pytest.param("off_apexnet", 3e-3, marks=pytest.mark.slow),  # ~5 s.
    pytest.param("flow_resnet", 1e-2, marks=pytest.mark.slow),  # ~8 s.
])
def test_short_training_run_beats_chance(name, learning_rate):
  accuracy = _train_and_score(_flow_model_config(name), steps=25, learning_rate=learning_rate)
  assert accuracy >= 0.8, f"{name}: held-out accuracy {accuracy:.2f} (chance 0.33)"


# --------------------------------------------------------------------------------------------
# flow_standardize: per-feature z-scores with the training batches' statistics.
# --------------------------------------------------------------------------------------------

def test_flow_standardize_z_scores_each_feature_with_training_statistics():
  config = _flow_model_config("flow_linear", spatial_pool="flatten", spatial_pool_kwargs={},
                              flow_standardize=True)
  model = create_model(config)
  # Features with very different means and scales per position and channel.
  key_a, key_b = jax.random.split(jax.random.key(1))
  scale = jax.random.uniform(key_a, (1, 1, SIZE, SIZE, 3), minval=0.01, maxval=5.0)
  frames = 3.0 + scale * jax.random.normal(key_b, (64, 1, SIZE, SIZE, 3))
  mask = jnp.ones((64, 1), bool)
  variables = model.init(jax.random.key(0), frames, mask, train=False)
  # No learned scale or bias: only running statistics, one per input feature.
  assert "flow_standardize" not in variables["params"]
  assert variables["batch_stats"]["flow_standardize"]["mean"].shape == (SIZE, SIZE, 3)
  # In training the batch is z-scored per feature: the classifier sees x' = (x - mean) / std.
  kernel = variables["params"]["classifier"]["kernel"]
  bias = variables["params"]["classifier"]["bias"]
  logits, updates = model.apply(variables, frames, mask, train=True, mutable=["batch_stats"],
                                rngs={"dropout": jax.random.key(2)})
  z = (frames - frames.mean(axis=0)) / jnp.sqrt(frames.var(axis=0) + 1e-6)
  np.testing.assert_allclose(logits, z.reshape(64, -1) @ kernel + bias, rtol=1e-4, atol=1e-3)
  # Evaluation uses the running statistics, which moved toward the batch's.
  moved = updates["batch_stats"]["flow_standardize"]["mean"]
  np.testing.assert_allclose(moved, 0.1 * frames.mean(axis=(0, 1)), rtol=1e-5, atol=1e-5)


def test_flow_standardize_needs_flow_input():
  config = default_config.get_config("tiny")
  config.model.flow_standardize = True
  with pytest.raises(ValueError, match=r"flow_standardize=True z-scores flow features and "
                                       r"needs config.model.input_mode='flow', got 'diff'"):
    create_model(config.model)


@pytest.mark.parametrize("size,padding,shape", [
    (2, "VALID", (3, 28, 28, 4)), (2, "VALID", (2, 9, 7, 3)),
    (3, "SAME", (3, 28, 28, 4)), (3, "SAME", (2, 10, 11, 3))])
def test_tiled_max_pool_matches_max_pool_in_value_and_gradient(size, padding, shape):
  """The reshape pooling OFF-ApexNet and STSTNet use gives `nn.max_pool`'s values, and through
  a ReLU (ties among its zeros included) the same input gradient."""
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  x = jax.random.normal(jax.random.PRNGKey(size), shape)
  weights = jax.random.normal(jax.random.PRNGKey(7), motion.tiled_max_pool(x, size, padding).shape)
  reference = lambda x: nn.max_pool(x, (size, size), strides=(size, size), padding=padding)
  tiled = lambda x: motion.tiled_max_pool(x, size, padding)
  np.testing.assert_array_equal(tiled(x), reference(x))
  loss = lambda pool: lambda x: jnp.sum(weights * pool(jax.nn.relu(x)))
  np.testing.assert_allclose(jax.grad(loss(tiled))(x), jax.grad(loss(reference))(x), atol=1e-6)
  with pytest.raises(ValueError, match="padding must be"):
    motion.tiled_max_pool(x, size, "FULL")
