"""Tests of the safe weight loader, the key/shape checks and the Orbax conversion."""

import collections
import os
import pickle

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mer_jax.models import create_model, resnet, weights

TINY = dict(stage_sizes=(1, 1), block="bottleneck", base_width=4)


def _tiny_state_dict(num_classes=3, seed=0):
  """A random torchvision-layout state dict for `ResNet(**TINY, num_classes)`."""
  rng = np.random.RandomState(seed)
  model = resnet.ResNet(**TINY, num_classes=num_classes)
  shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), jnp.zeros((1, 32, 32, 3)))
  state = {}
  for collection in ("params", "batch_stats"):
    for path, spec in jax.tree_util.tree_flatten_with_path(shapes[collection])[0]:
      names = tuple(p.key for p in path)
      key = weights._torch_key(collection, names)
      state[key] = rng.rand(*weights._torch_shape(spec.shape, names[-1])).astype(np.float32)
      if key.endswith("running_mean"):
        state[key.replace("running_mean", "num_batches_tracked")] = np.array(7, np.int64)
  return state


class _Exploit:
  """Pickles to a call of os.system: what a malicious weight file would do."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_before_running(tmp_path):
  marker = tmp_path / "pwned"
  path = tmp_path / "evil.pkl"
  payload = {"conv1.weight": np.zeros((2, 3, 7, 7), np.float32), "x": _Exploit(marker)}
  with open(path, "wb") as f:
    pickle.dump(payload, f, protocol=2)
  with pytest.raises(weights.UnsafePickleError) as error:
    weights.load_state_dict(str(path))
  message = str(error.value)
  assert str(path) in message and ("posix.system" in message or "nt.system" in message)
  assert not marker.exists()
  # The same file through plain pickle does run the payload: the test is real.
  with open(path, "rb") as f:
    pickle.load(f)
  assert marker.exists()


@pytest.mark.parametrize("protocol", [2, 4])
def test_release_format_pickle_and_npz_load_identically(tmp_path, protocol):
  state = _tiny_state_dict()
  state_ordered = collections.OrderedDict(state)
  pkl = tmp_path / "w.pkl"
  with open(pkl, "wb") as f:
    pickle.dump(state_ordered, f, protocol=protocol)
  npz = tmp_path / "w.npz"
  np.savez(npz, **state)
  for path in (pkl, npz):
    loaded = weights.load_state_dict(str(path))
    assert set(loaded) == set(state)
    for key, value in state.items():
      np.testing.assert_array_equal(loaded[key], value)
      assert loaded[key].dtype == value.dtype


def test_non_array_entries_and_garbage_are_rejected(tmp_path):
  path = tmp_path / "w.pkl"
  with open(path, "wb") as f:
    pickle.dump({"conv1.weight": [1.0, 2.0]}, f)
  with pytest.raises(ValueError, match=r"entry 'conv1.weight' is not a numeric NumPy array"):
    weights.load_state_dict(str(path))
  path.write_bytes(b"not a pickle at all")
  with pytest.raises(ValueError, match="cannot read as a pickle"):
    weights.load_state_dict(str(path))
  with pytest.raises(FileNotFoundError, match="nope.pkl"):
    weights.load_state_dict(str(tmp_path / "nope.pkl"))


def test_conversion_layout_and_all_key_problems_reported_at_once():
  state = _tiny_state_dict()
  model = weights.model_for_state_dict(state)
  assert (model.resolved_stage_sizes, model.block_kind, model.base_width, model.num_classes) == \
      ((1, 1), "bottleneck", 4, 3)
  variables = weights.state_dict_to_variables(state, model)
  np.testing.assert_array_equal(variables["params"]["layer2_0"]["conv2"]["kernel"],
                                state["layer2.0.conv2.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(variables["params"]["fc"]["kernel"], state["fc.weight"].T)
  np.testing.assert_array_equal(variables["params"]["layer1_0"]["downsample_bn"]["scale"],
                                state["layer1.0.downsample.1.weight"])
  np.testing.assert_array_equal(variables["batch_stats"]["bn1"]["var"], state["bn1.running_var"])

  broken = dict(state)
  del broken["layer1.0.bn2.running_var"]
  del broken["fc.bias"]
  broken["layer9.0.conv1.weight"] = np.zeros((1,), np.float32)
  broken["layer2.0.conv3.weight"] = np.zeros((5, 8, 1, 1), np.float32)
  with pytest.raises(ValueError) as error:
    weights.state_dict_to_variables(broken, model, source="broken.pkl")
  message = str(error.value)
  for expected in ("broken.pkl", "missing keys", "layer1.0.bn2.running_var", "fc.bias",
                   "unexpected keys", "layer9.0.conv1.weight", "mis-shaped keys",
                   "layer2.0.conv3.weight: file (5, 8, 1, 1), model expects (32, 8, 1, 1)"):
    assert expected in message, (expected, message)


def test_convert_cli_checkpoint_round_trip_into_mer_model(tmp_path, capsys):
  state = _tiny_state_dict(num_classes=5)
  source = tmp_path / "vggface2.pkl"
  with open(source, "wb") as f:
    pickle.dump(state, f, protocol=2)
  out_dir = tmp_path / "ckpt"
  weights.main(["convert", str(source), str(out_dir)])
  assert "wrote" in capsys.readouterr().out
  assert weights.checkpoint_architecture(str(out_dir))["stage_sizes"] == [1, 1]
  with pytest.raises(FileExistsError, match="already exists"):
    weights.convert(str(source), str(out_dir))

  full = weights.load_encoder_checkpoint(str(out_dir), include_top=True)
  np.testing.assert_array_equal(full["params"]["fc"]["kernel"], state["fc.weight"].T)
  # By default the stem takes RGB: same logits on RGB images as the source on BGR ones.
  model = weights.model_for_state_dict(state)
  bgr = jnp.asarray(np.random.RandomState(4).randn(2, 32, 32, 3).astype(np.float32))
  np.testing.assert_allclose(model.apply(full, bgr[..., ::-1]),
                             model.apply(weights.state_dict_to_variables(state, model), bgr),
                             rtol=1e-5, atol=1e-5)
  weights.main(["convert", str(source), str(tmp_path / "bgr"), "--keep_bgr"])
  np.testing.assert_array_equal(
      weights.load_encoder_checkpoint(str(tmp_path / "bgr"))["params"]["conv1"]["kernel"],
      state["conv1.weight"].transpose(2, 3, 1, 0))
  encoder = weights.load_encoder_checkpoint(str(out_dir))
  assert "fc" not in encoder["params"]

  # A MERModel with a truncated ResNet encoder picks up the pretrained layers it has.
  config = ml_collections.ConfigDict({
      "encoder": "resnet", "temporal_head": "frames",
      "encoder_kwargs": {**TINY, "truncate_after": "layer1"}})
  model = create_model(config, num_classes=2)
  frames = jnp.zeros((1, 2, 32, 32, 3))
  mask = jnp.ones((1, 2), bool)
  initial = jax.eval_shape(lambda: model.init(jax.random.key(0), frames, mask, train=False))
  initial = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), initial)
  merged = weights.merge_encoder_variables(initial, encoder)
  np.testing.assert_array_equal(merged["params"]["encoder"]["layer1_0"]["conv3"]["kernel"],
                                state["layer1.0.conv3.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(merged["batch_stats"]["encoder"]["bn1"]["mean"],
                                state["bn1.running_mean"])
  assert "layer2_0" not in merged["params"]["encoder"]
  np.testing.assert_array_equal(merged["params"]["classifier"]["kernel"], 0.0)

  wider = jax.eval_shape(lambda: create_model(ml_collections.ConfigDict({
      "encoder": "resnet", "temporal_head": "frames",
      "encoder_kwargs": {**TINY, "base_width": 8}}), num_classes=2).init(
          jax.random.key(0), frames, mask, train=False))
  with pytest.raises(ValueError, match=r"params/conv1/kernel: pretrained \(7, 7, 3, 4\), "
                     r"model \(7, 7, 3, 8\)"):
    weights.merge_encoder_variables(wider, encoder)
  with pytest.raises(FileNotFoundError, match="not a converted ResNet checkpoint"):
    weights.load_encoder_checkpoint(str(tmp_path))
