"""Flow input: in-memory batches of cached flow features (streams, isolation, flips, errors)."""

import dataclasses

import numpy as np
import pytest

from conftest import tiny_config
from mer_jax import config_checks
from mer_jax import input_pipeline
from mer_jax import motion_input


def _toy(num_subjects=4, clips_per_subject=3, size=8, channels=3):
  """A fake clip index and feature maps whose value encodes the clip's row."""
  rows = num_subjects * clips_per_subject
  subjects = np.repeat([f"s{i:02d}" for i in range(num_subjects)], clips_per_subject)
  index = input_pipeline.ClipIndex(
      clip_id=np.array([f"c{i:02d}" for i in range(rows)]),
      subject_key=np.array([f"toy/{s}" for s in subjects]), dataset=np.array(["toy"] * rows),
      label=np.arange(rows) % 3, num_frames=np.full(rows, 10), onset=np.zeros(rows, int),
      apex=np.full(rows, 5), offset=np.full(rows, 9))
  maps = np.random.default_rng(0).normal(size=(rows, size, size, channels)).astype(np.float32)
  maps[..., 0] += np.arange(rows)[:, None, None] * 100  # Row id readable from u's mean.
  features = motion_input.FlowFeatures(features=maps, cache_path="toy", apex_sources={},
                                       computed=False)
  return index, features


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def test_stream_is_a_function_of_seed_and_step_and_holds_training_subjects_only():
  index, features = _toy()
  train = ["toy/s01", "toy/s02", "toy/s03"]
  make = lambda start: motion_input.train_batches(features, index, train, batch_size=4,
                                                  seed=7, start_step=start)
  full = _take(make(0), 8)
  resumed = _take(make(5), 3)
  for a, b in zip(full[5:], resumed):
    np.testing.assert_array_equal(a["frames"], b["frames"])
    assert a["clip_id"].tolist() == b["clip_id"].tolist()
  seen = {c for batch in full for c in batch["clip_id"].tolist()}
  held_out = set(index.clip_id[index.subject_key == "toy/s00"].tolist())
  assert seen == set(index.clip_id.tolist()) - held_out  # 32 draws cover the 9 clips.
  # Epochs are permutations: the first 9 positions hold every training clip once.
  first_epoch = [c for batch in full[:3] for c in batch["clip_id"].tolist()][:9]
  assert sorted(first_epoch) == sorted(set(index.clip_id.tolist()) - held_out)
  batch = full[0]
  assert batch["frames"].shape == (4, 1, 8, 8, 3) and batch["frames"].dtype == np.float32
  assert batch["mask"].shape == (4, 1) and batch["mask"].all()
  assert batch["frames"].min() >= 0.0 and batch["frames"].max() <= 1.0  # Min-max scaled.


def test_flip_mirrors_the_maps_and_negates_u():
  maps = np.random.default_rng(1).normal(size=(2, 5, 5, 6)).astype(np.float32)
  out = motion_input.flip_maps(maps, np.array([True, False]))
  flipped = out[0]
  np.testing.assert_array_equal(flipped[:, :, 0], -maps[0, :, ::-1, 0])
  np.testing.assert_array_equal(flipped[:, :, 3], -maps[0, :, ::-1, 3])
  for c in (1, 2, 4, 5):
    np.testing.assert_array_equal(flipped[:, :, c], maps[0, :, ::-1, c])
  np.testing.assert_array_equal(out[1], maps[1])  # Not flipped: unchanged.


def test_device_formulas_equal_the_host_ones():
  """fold_parallel gathers batches on the device with the same functions (xp=jax.numpy)."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  maps = np.random.default_rng(2).normal(size=(4, 6, 6, 6)).astype(np.float32)
  flips = np.array([True, False, True, False])
  for mode in motion_input.NORMALIZATIONS:
    host = motion_input.normalize(motion_input.flip_maps(maps, flips), mode)
    device = motion_input.normalize(motion_input.flip_maps(jnp.asarray(maps), jnp.asarray(flips),
                                                           xp=jnp), mode, xp=jnp)
    np.testing.assert_array_equal(np.asarray(device), host)  # Bit for bit.


def test_normalizations():
  maps = np.stack([np.full((2, 2, 3), 1.0), np.arange(12.0).reshape(2, 2, 3)]).astype(np.float32)
  minmax = motion_input.normalize(maps, "minmax")
  np.testing.assert_array_equal(minmax[0], 0.0)  # A constant channel becomes 0, not NaN.
  np.testing.assert_allclose(minmax[1, ..., 0], [[0, 1 / 3], [2 / 3, 1]])
  fixed = motion_input.normalize(np.array([[[[-2.0, 1.0, 1.0]]]], np.float32), "fixed",
                                 max_flow=2.0)
  np.testing.assert_allclose(fixed[0, 0, 0], [0.0, 0.75, 0.5])
  with pytest.raises(ValueError, match="config.flow.normalize"):
    motion_input.normalize(maps, "zscore")


def test_eval_batches_cover_each_clip_once_in_order():
  index, features = _toy()
  batches = list(motion_input.eval_batches(features, index, ["toy/s02"], batch_size=2))
  assert [c for b in batches for c in b["clip_id"].tolist()] == ["c06", "c07", "c08"]
  assert [len(b["label"]) for b in batches] == [2, 1]


def test_missing_cache_names_the_command_that_builds_it(data_dir, tmp_path):
  config = tiny_config(data_dir, **{"input.representation": "flow", "model.input_mode": "flow",
                                    "flow.build_if_missing": False,
                                    "flow.cache_dir": str(tmp_path / "flow")})
  builder = input_pipeline.get_builder(config.dataset)
  index = input_pipeline.read_clip_index(builder)
  with pytest.raises(ValueError, match=r"python -m mer_jax.flow dataset synthetic_me/tiny "
                                       r"--out .*flow --size 112"):
    motion_input.load_flow_features(config, index)


def test_representation_and_model_must_agree_before_any_data(tmp_path):
  config = tiny_config(str(tmp_path / "none"), **{"input.representation": "flow"})
  with pytest.raises(ValueError, match="a flow model needs flow input"):
    config_checks.validate_config(config)
  config = tiny_config(str(tmp_path / "none"), **{"input.representation": "flows"})
  with pytest.raises(ValueError, match=r"config.input.representation must be one of"):
    config_checks.validate_config(config)
  assert not (tmp_path / "none").exists()


def test_flow_features_dataclass_reports_channels():
  _, features = _toy(channels=6)
  assert features.num_channels == 6
  assert dataclasses.replace(features, computed=True).computed


@pytest.mark.slow
def test_flow_input_trains_end_to_end_and_reuses_the_cache(data_dir, tmp_path):
  from configs import default as default_config  # pylint: disable=import-outside-toplevel
  from mer_jax import train  # pylint: disable=import-outside-toplevel
  config = default_config.get_config("input=flow,tiny")
  config.dataset.data_dir = data_dir
  config.dataset.build_if_missing = False
  config.flow.cache_dir = str(tmp_path / "flow")
  config.flow.size = 48
  config.folds = ("s00", "s01")
  results = train.train_and_evaluate(config, str(tmp_path / "work"))
  assert results["overall"]["num_samples"] == 6  # Two held-out subjects x 3 clips.
  assert results["input"]["representation"] == "flow"
  assert results["input"]["pairs"] == "onset->apex and apex->offset"  # The demo model's pair.
  assert results["input"]["apex_sources"] == {"ground_truth": 9}
  builder = input_pipeline.get_builder(config.dataset)
  features = motion_input.load_flow_features(config, input_pipeline.read_clip_index(
      builder))
  assert not features.computed and features.features.shape == (9, 28, 28, 6)  # Reused.
