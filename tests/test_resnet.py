"""Tests of the Caffe-style ResNet: layout, options, and parity with PyTorch."""

import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from mer_jax.models import registry, resnet, weights
import torch_resnet_reference as ref

torch.set_num_threads(2)


def _key(seed):
  # The "rbg" PRNG compiles much faster than threefry on CPU (~2 s instead of
  # ~10 s for a ResNet's initialisers), which dominates these small tests.
  return jax.random.key(seed, impl="rbg")


def _init(model, shape=(2, 64, 64, 3), seed=0):
  x = jnp.asarray(np.random.RandomState(seed).randn(*shape).astype(np.float32))
  return x, jax.jit(model.init)(_key(1), x)


@pytest.mark.slow
def test_registered_encoder_obeys_contract():
  encoder = registry.build_part("encoder", "resnet", {"depth": 18, "base_width": 8})
  assert isinstance(encoder, resnet.ResNet)
  x, variables = _init(encoder, (3, 64, 32, 3))
  out = encoder.apply(variables, x, train=False)
  # Stride 32 overall, last stage 8 * base_width channels (basic blocks).
  assert out.shape == (3, 2, 1, 64) and out.dtype == jnp.float32
  assert set(variables["params"]) == set(resnet.layer_order(resnet.STAGE_SIZES[18]))
  for name, depth in (("resnet18", 18), ("resnet34", 34), ("resnet50", 50)):
    assert registry.build_part("encoder", name, {}).depth == depth


def test_bottleneck_layout_matches_caffe_resnet50():
  model = resnet.ResNet50(base_width=8)
  shapes = jax.eval_shape(lambda x: model.init(_key(0), x), jnp.zeros((1, 64, 64, 3)))
  params = shapes["params"]
  block = params["layer2_0"]
  # Stride on the first 1x1 conv: its kernel is 1x1; 3x3 in conv2; 4x expansion in conv3.
  assert block["conv1"]["kernel"].shape == (1, 1, 32, 16)
  assert block["conv2"]["kernel"].shape == (3, 3, 16, 16)
  assert block["conv3"]["kernel"].shape == (1, 1, 16, 64)
  assert block["downsample_conv"]["kernel"].shape == (1, 1, 32, 64)
  assert "downsample_conv" in params["layer1_0"] and "downsample_conv" not in params["layer1_1"]
  assert not any("bias" in p for p in ("conv1", "conv2", "conv3") for p in block[p])
  assert [len([k for k in params if k.startswith(f"layer{s}_")]) for s in (1, 2, 3, 4)] == \
      [3, 4, 6, 3]


@pytest.mark.parametrize("size", [5, 6, 7, 8, 56, 57, 112])
def test_stem_max_pool_is_pytorch_ceil_mode(size):
  x = np.random.RandomState(size).randn(1, 2, size, size + 1).astype(np.float32)
  expected = torch.nn.MaxPool2d(3, 2, padding=0, ceil_mode=True)(torch.from_numpy(x)).numpy()
  got = np.asarray(resnet._max_pool_ceil(jnp.asarray(x.transpose(0, 2, 3, 1))))
  np.testing.assert_array_equal(got.transpose(0, 3, 1, 2), expected)


def test_stem_rejects_too_small_input():
  model = resnet.ResNet(depth=18, base_width=8)
  with pytest.raises(ValueError, match="smaller than the 3x3 window"):
    jax.eval_shape(lambda x: model.init(_key(0), x), jnp.zeros((1, 4, 4, 3)))


TINY = dict(stage_sizes=(1, 1, 1, 1), block="basic", base_width=8)


def test_truncate_after_drops_later_layers():
  model = resnet.ResNet(depth=18, base_width=8, truncate_after="layer2")
  x, variables = _init(model)
  assert set(variables["params"]) == {"conv1", "bn1", "layer1_0", "layer1_1", "layer2_0",
                                      "layer2_1"}
  assert model.layer_names() == ("conv1", "bn1", "layer1_0", "layer1_1", "layer2_0", "layer2_1")
  out, state = model.apply(variables, x, mutable=["intermediates"])
  assert out.shape == (2, 8, 8, 16)
  np.testing.assert_array_equal(out, state["intermediates"]["layer2"][0])
  assert set(state["intermediates"]) == {"stem", "layer1", "layer2"}
  stem = resnet.ResNet(**TINY, truncate_after="stem")
  assert jax.eval_shape(lambda im: stem.init_with_output(_key(0), im)[0], x).shape == \
      (2, 16, 16, 8)
  with pytest.raises(ValueError, match=r"truncate_after='layer9'.*expected one of"):
    jax.eval_shape(lambda im: resnet.ResNet(depth=18, truncate_after="layer9").init(_key(0), im), x)


@pytest.mark.slow
def test_frozen_batch_stats_are_used_and_kept_in_training():
  x = jnp.asarray(np.random.RandomState(3).randn(4, 32, 32, 3).astype(np.float32)) * 2.0 + 1.0
  free = resnet.ResNet(**TINY)
  _, variables = _init(free, (1, 32, 32, 3))
  _, free_state = free.apply(variables, x, train=True, mutable=["batch_stats"])
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), variables["batch_stats"],
                         free_state["batch_stats"])
  assert all(jax.tree.leaves(changed))

  frozen = resnet.ResNet(**TINY, frozen_batch_stats=True)
  out, state = frozen.apply(variables, x, train=True, mutable=["batch_stats"])
  jax.tree.map(np.testing.assert_array_equal, state["batch_stats"], variables["batch_stats"])
  np.testing.assert_allclose(out, frozen.apply(variables, x, train=False), atol=1e-6)

  partial = resnet.ResNet(**TINY, frozen_stats_before="layer2")
  _, state = partial.apply(variables, x, train=True, mutable=["batch_stats"])
  for name, stats in state["batch_stats"].items():
    same = all(jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), stats,
                                            variables["batch_stats"][name])))
    assert same == (name in ("bn1", "layer1_0")), name


@pytest.mark.slow
def test_bfloat16_compute_keeps_float32_params():
  model = resnet.ResNet(**TINY, dtype=jnp.bfloat16, num_classes=5)
  x, variables = _init(model, (2, 32, 32, 3))
  assert {a.dtype for a in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  logits, state = model.apply(variables, x, mutable=["intermediates"])
  assert logits.dtype == jnp.float32 and state["intermediates"]["layer4"][0].dtype == jnp.bfloat16
  reference = resnet.ResNet(**TINY, num_classes=5).apply(variables, x)
  np.testing.assert_allclose(logits, reference, atol=0.1 * float(jnp.abs(reference).max()))


def test_bad_configuration_errors_name_the_field():
  x = jnp.zeros((1, 32, 32, 3))
  for kwargs, message in (({"depth": 42}, "depth=42"),
                          ({"depth": 18, "block": "wide"}, "block='wide'"),
                          ({"depth": 18, "frozen_stats_before": "layer7"},
                           "frozen_stats_before='layer7'"),
                          ({"stage_sizes": (2, 0)}, "stage_sizes")):
    with pytest.raises(ValueError, match=message):
      jax.eval_shape(lambda im, kw=kwargs: resnet.ResNet(**kw).init(_key(0), im), x)
  with pytest.raises(ValueError, match=r"must be \(B, H, W, C\)"):
    jax.eval_shape(lambda im: resnet.ResNet(depth=18).init(_key(0), im), jnp.zeros((32, 32, 3)))


def _parity(block, stage_sizes, num_classes, image_hw, tmp_path):
  """Random torch net -> release-format pickle -> Flax; returns max abs errors."""
  torch_model = ref.TorchResNet(block, stage_sizes, num_classes)
  ref.randomize_(torch_model, seed=len(stage_sizes) + num_classes)
  torch_model.eval()
  path = tmp_path / "weights.pkl"
  with open(path, "wb") as f:
    pickle.dump(ref.export_state_dict(torch_model), f, protocol=2)  # As the Python 2 release.
  x = np.random.RandomState(0).randn(2, 3, *image_hw).astype(np.float32)
  with torch.no_grad():
    torch_features, torch_logits = (t.numpy() for t in torch_model(torch.from_numpy(x)))

  state_dict = weights.load_state_dict(str(path))
  model = weights.model_for_state_dict(state_dict)
  assert (model.resolved_stage_sizes, model.block_kind, model.num_classes) == \
      (tuple(stage_sizes), block, num_classes)
  variables = weights.state_dict_to_variables(state_dict, model)
  logits, state = jax.jit(lambda v, im: model.apply(v, im, mutable=["intermediates"]))(
      variables, jnp.asarray(x.transpose(0, 2, 3, 1)))
  features = np.asarray(state["intermediates"]["pooled"][0])
  assert features.shape == torch_features.shape and logits.shape == torch_logits.shape
  # Outputs of order 1-10: an architectural slip would be off by far more than 1e-4.
  assert np.abs(torch_logits).max() > 0.5
  np.testing.assert_allclose(features, torch_features, atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(logits, torch_logits, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_resnet50_vggface2_parity_with_pytorch(tmp_path):
  # Full ResNet-50 with the 8631-identity fc; a 64x64 input keeps it quick on CPU
  # and still exercises the ceil-mode pool (32x32 -> 16x16).
  _parity("bottleneck", (3, 4, 6, 3), resnet.VGGFACE2_NUM_CLASSES, (64, 64), tmp_path)


def test_resnet18_parity_with_pytorch(tmp_path):
  _parity("basic", (2, 2, 2, 2), 10, (72, 88), tmp_path)
