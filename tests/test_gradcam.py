"""Tests of Grad-CAM, specific-layer selection and the overlay pictures."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib.image
import ml_collections
import numpy as np
import optax
import pytest

from mer_jax import gradcam
from mer_jax.models import create_model, resnet

SIZE, PATCH = 32, 12


def _key(seed):
  # "rbg" keys: threefry's initialisers take ~10 s to compile on CPU.
  return jax.random.key(seed, impl="rbg")


def _stripes_task(rng, n):
  """Frames whose label is the stripe orientation inside a random patch (the mask).

  A second, uninformative patch (checkerboard or noise) elsewhere is a
  distractor, so attending to the labelled patch is something to learn.
  Returns frames `(n, 1, S, S, 3)` 0..255, masks `(n, 1, S, S)`, labels `(n,)`.
  """
  images = rng.normal(0.5, 0.08, (n, SIZE, SIZE)).astype(np.float32)
  masks = np.zeros((n, SIZE, SIZE), np.float32)
  labels = rng.integers(0, 2, n)
  yy, xx = np.mgrid[0:PATCH, 0:PATCH]
  for i in range(n):
    while True:
      (y, x), (y2, x2) = rng.integers(0, SIZE - PATCH + 1, (2, 2))
      if abs(y - y2) >= PATCH or abs(x - x2) >= PATCH:
        break
    stripes = ((yy if labels[i] == 0 else xx) // 2) % 2
    images[i, y:y + PATCH, x:x + PATCH] = 0.2 + 0.6 * stripes
    masks[i, y:y + PATCH, x:x + PATCH] = 1.0
    distractor = ((yy // 2 + xx // 2) % 2 if rng.random() < 0.5
                  else rng.random((PATCH, PATCH)) > 0.5)
    images[i, y2:y2 + PATCH, x2:x2 + PATCH] = 0.2 + 0.6 * distractor
  frames = np.repeat(images[:, None, :, :, None], 3, axis=-1) * 255.0
  return frames, masks[:, None], labels


@pytest.mark.slow
def test_training_moves_heat_map_energy_into_the_pattern_mask(tmp_path):
  config = ml_collections.ConfigDict({
      "encoder": "resnet", "temporal_head": "frames",
      "encoder_kwargs": {"stage_sizes": (1, 1), "block": "basic", "base_width": 8}})
  model = create_model(config, num_classes=2)
  rng = np.random.default_rng(0)
  eval_frames, eval_masks, eval_labels = _stripes_task(rng, 48)
  frame_mask = jnp.ones(eval_frames.shape[:2], bool)
  variables = jax.jit(lambda f, m: model.init(_key(0), f, m, train=False))(
      eval_frames[:1], frame_mask[:1])
  layers = ["layer1", "layer2"]
  inputs = (eval_frames, frame_mask)
  before = gradcam.score_layers(model, variables, inputs, eval_masks, layers,
                                target_class=eval_labels)

  tx = optax.adam(3e-3)

  @jax.jit
  def step(params, batch_stats, opt_state, frames, labels):
    def loss_fn(p):
      logits, updates = model.apply({"params": p, "batch_stats": batch_stats}, frames,
                                    jnp.ones(frames.shape[:2], bool), train=True,
                                    mutable=["batch_stats"])
      return optax.softmax_cross_entropy_with_integer_labels(logits[:, 0], labels).mean(), updates
    grads, updates = jax.grad(loss_fn, has_aux=True)(params)
    deltas, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, deltas), updates["batch_stats"], opt_state

  params, batch_stats = variables["params"], variables["batch_stats"]
  opt_state = tx.init(params)
  for _ in range(120):
    frames, _, labels = _stripes_task(rng, 32)
    params, batch_stats, opt_state = step(params, batch_stats, opt_state, frames, labels)
  trained = {"params": params, "batch_stats": batch_stats}
  logits = model.apply(trained, eval_frames, frame_mask, train=False)
  assert np.mean(np.argmax(logits[:, 0], -1) == eval_labels) > 0.9

  after = gradcam.score_layers(model, trained, inputs, eval_masks, layers,
                               target_class=eval_labels)
  chance = float(eval_masks.mean())  # 0.14: the patch's share of the image.
  # Measured (seed 0, 120 steps): layer1 0.21 -> 0.52, layer2 0.22 -> 0.35, chance 0.14.
  assert after["layer1"] > 0.4 and after["layer1"] > before["layer1"] + 0.15
  assert after["layer2"] > before["layer2"]
  assert before["layer1"] < 2 * chance
  assert gradcam.select_specific_layer(after) == max(after, key=after.get)

  # Same shapes and layer as in score_layers: the compiled function is reused.
  heat_before, _ = gradcam.grad_cam(model, variables, *inputs, layer="layer1",
                                    target_class=eval_labels)
  heat_after, classes = gradcam.grad_cam(model, trained, *inputs, layer="layer1",
                                         target_class=eval_labels)
  np.testing.assert_array_equal(classes, eval_labels)
  path = gradcam.save_overlay_grid(
      eval_frames[:4, 0], np.stack([heat_before[:4, 0], heat_after[:4, 0]]),
      str(tmp_path / "figs" / "gradcam.png"), row_labels=["before", "after"],
      column_labels=[f"class {c}" for c in eval_labels[:4]])
  picture = matplotlib.image.imread(path)
  assert picture.ndim == 3 and picture.shape[0] > 100 and picture.shape[1] > 200
  assert picture[..., :3].std() > 0.05  # Not a blank canvas.


class _Features(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(4, (3, 3), strides=2, name="conv_a")(x))
    return nn.Conv(6, (3, 3), name="conv_b")(x)


class _Head(nn.Module):
  @nn.compact
  def __call__(self, a):
    return nn.Dense(3)(nn.relu(a).mean(axis=(1, 2)))


class _TwoPart(nn.Module):
  def setup(self):
    self.features = _Features()
    self.head = _Head()

  def __call__(self, x, *, train):
    del train
    return self.head(self.features(x))


def test_heat_maps_match_the_grad_cam_formula():
  x = jnp.asarray(np.random.RandomState(1).randn(3, 12, 10, 2).astype(np.float32))
  model = _TwoPart()
  variables = model.init(_key(0), x, train=False)
  heatmaps, classes = gradcam.make_grad_cam(model, "features")(variables, x, target_class=1)
  np.testing.assert_array_equal(classes, [1, 1, 1])

  # Reference: split the model at the layer and differentiate the head directly.
  features = _Features().apply({"params": variables["params"]["features"]}, x)
  head = lambda a: _Head().apply({"params": variables["params"]["head"]}, a)[:, 1].sum()
  grads = jax.grad(head)(features)
  cam = nn.relu(jnp.sum(grads.mean(axis=(1, 2), keepdims=True) * features, axis=-1))
  cam = jax.image.resize(cam, (3, 12, 10), "bilinear")
  cam = np.asarray(cam) / np.asarray(cam).max(axis=(1, 2), keepdims=True)
  assert heatmaps.shape == (3, 12, 10)
  np.testing.assert_allclose(heatmaps, cam, atol=1e-5)
  assert float(heatmaps.min()) >= 0.0 and np.allclose(heatmaps.max(axis=(1, 2)), 1.0)

  # A conv inside a part is reachable by path; a wrong name is an error.
  inner, _ = gradcam.grad_cam(model, variables, x, layer="features/conv_a")
  assert inner.shape == (3, 12, 10)
  with pytest.raises(ValueError, match="'features/conv_z'.*never called"):
    gradcam.grad_cam(model, variables, x, layer="features/conv_z")


def test_mer_model_heat_maps_per_frame_and_padding():
  config = ml_collections.ConfigDict({
      "encoder": "resnet", "temporal_head": "mean",
      "encoder_kwargs": {"stage_sizes": (1, 1), "block": "basic", "base_width": 8}})
  model = create_model(config, num_classes=3)
  frames = jnp.asarray(np.random.RandomState(2).uniform(0, 255, (2, 3, 32, 32, 3)),
                       jnp.float32)
  mask = jnp.asarray([[True, True, False], [True, True, True]])
  variables = jax.jit(lambda f, m: model.init(_key(0), f, m, train=False))(frames, mask)
  heatmaps, classes = gradcam.grad_cam(model, variables, frames, mask, layer="layer2")
  assert heatmaps.shape == (2, 3, 32, 32) and classes.shape == (2,)
  np.testing.assert_array_equal(
      classes, np.argmax(model.apply(variables, frames, mask, train=False), -1))
  np.testing.assert_array_equal(heatmaps[0, 2], 0.0)  # Padded frame: no gradient, no heat.
  assert float(heatmaps[1].max()) == pytest.approx(1.0)
  assert gradcam.resolve_layer_path(model, "layer2") == ("encoder", "layer2_0")
  assert gradcam.resolve_layer_path(model, "encoder/layer1_0/conv2") == (
      "encoder", "layer1_0", "conv2")
  assert gradcam.resolve_layer_path(resnet.ResNet(depth=18), "layer3") == ("layer3_1",)


def test_energy_fraction_and_layer_selection():
  heat = np.zeros((2, 4, 4))
  heat[0, :2] = 1.0  # Top half.
  heat[1, :, :1] = 3.0  # Left column.
  mask = np.zeros((4, 4))
  mask[:1] = 1.0  # Top row.
  fractions = gradcam.mask_energy_fraction(heat, mask)
  np.testing.assert_allclose(fractions, [4 / 8, 3 / 12])
  assert np.isnan(gradcam.mask_energy_fraction(np.zeros((1, 4, 4)), mask)[0])

  scores = {"layer1": 0.2, "layer2": 0.6, "layer3": 0.6, "layer4": float("nan")}
  assert gradcam.select_specific_layer(scores) == "layer2"  # Earliest of the best.
  assert gradcam.select_specific_layer(scores, "layer3") == "layer3"
  with pytest.raises(ValueError, match=r"'layer9' is not among the candidates"):
    gradcam.select_specific_layer(scores, "layer9")
  with pytest.raises(ValueError, match="every layer's score is NaN"):
    gradcam.select_specific_layer({"layer1": float("nan")})
  with pytest.raises(ValueError, match="heatmaps must be"):
    gradcam.save_overlay_grid(np.zeros((2, 4, 4, 3)), np.zeros((4, 4)), "unused.png")
