"""Device-resident low-resolution clips (mer_jax.resident_frames) on the tiny synthetic records.

The tiny records hold 9 clips of 24 frames, 64 x 64 pixels (3 subjects x 3 classes).
"""

import jax
import numpy as np
import pytest

from configs import default as default_config
from mer_jax import input_pipeline
from mer_jax import resident_frames
from mer_jax import train
from conftest import tiny_config


def _augmenting(data_dir, **overrides):
  """Every augmentation on: jitter 2, resize to 40 then random 32 x 32 crops, flips."""
  return tiny_config(data_dir, **{"input.temporal_jitter": 2, "input.resize_size": 40,
                                  "input.random_crop": True, "input.flip": True, **overrides})


def _host(config):
  builder = input_pipeline.get_builder(config.dataset)
  return builder, input_pipeline.read_clip_index(builder, config.dataset.split)


def _device_batches(inputs, draws):
  """The resident batches of `draws` (leading steps axis), gathered by the jitted batcher."""
  gather = jax.jit(lambda arrays, d: jax.vmap(inputs.batcher, in_axes=(None, 0))(arrays, d))
  return jax.tree.map(np.asarray, gather(inputs.arrays, draws))


@pytest.mark.parametrize("sampling,short_clip,num_frames", [
    ("uniform", "repeat", 6),
    ("apex", "pad", 30),  # The apex window is longer than the clip: padded, masked frames.
])
def test_resident_batches_are_the_host_pipelines_batches(data_dir, sampling, short_clip,
                                                         num_frames):
  config = _augmenting(data_dir, **{"input.sampling": sampling, "input.short_clip": short_clip,
                                    "input.num_frames": num_frames})
  builder, index = _host(config)
  subjects = index.subjects[:2]
  store = resident_frames.build_store(builder, "train", index, config.input)
  inputs = resident_frames.FrameInputs(store, index, config)

  # Training: the serial trainer's Grain stream, batch by batch, from step 3 on.
  host = input_pipeline.train_batches(
      input_pipeline.records(builder, "train"),
      input_pipeline.fold_sampler(index, subjects, seed=11), config.input, batch_size=4,
      seed=11)
  draws = inputs.schedule(subjects, batch_size=4, fold_seed=11).steps(3, 5)
  device = _device_batches(inputs, draws)
  for t in range(5):
    expected = host[3 + t]
    np.testing.assert_array_equal(device["frames"][t], expected["frames"])
    np.testing.assert_array_equal(device["mask"][t], expected["mask"])
    np.testing.assert_array_equal(device["label"][t], expected["label"])
  # The draws exercise what they claim: flips both ways, crops away from the centre.
  assert draws["flip"].any() and not draws["flip"].all()
  assert len({tuple(c) for c in draws["crop"].reshape(-1, 2)}) > 1
  if short_clip == "pad":
    assert not draws["mask"].all()

  # Evaluation: every clip of a subject, no jitter, centred crop, no flip.
  rows = index.rows_of(subjects[:1])
  (expected,) = list(input_pipeline.create_eval_dataset(
      builder, "train", subjects[:1], config.input, batch_size=len(rows), index=index))
  device = _device_batches(inputs, jax.tree.map(lambda d: d[None], inputs.eval_draws(rows)))
  np.testing.assert_array_equal(device["frames"][0], expected["frames"])
  np.testing.assert_array_equal(device["mask"][0], expected["mask"])


def test_store_keeps_only_the_reachable_frames_resized(data_dir):
  config = _augmenting(data_dir)
  builder, index = _host(config)
  store = resident_frames.build_store(builder, "train", index, config.input)
  spans = [input_pipeline.reachable_frames(
      int(index.num_frames[r]), int(index.onset[r]), int(index.apex[r]), int(index.offset[r]),
      num_frames=6, sampling="uniform", jitter=2) for r in range(len(index))]
  assert len(store.frames) == sum(hi - lo + 1 for lo, hi in spans) < int(index.num_frames.sum())
  assert store.frames.shape[1:] == (40, 40, 3) and store.frames.dtype == np.uint8
  np.testing.assert_array_equal(store.shape, np.full((len(index), 2), 40))
  np.testing.assert_array_equal(store.source_shape, np.full((len(index), 2), 64))


def test_a_store_over_its_memory_limit_is_refused_naming_its_size(data_dir):
  config = tiny_config(data_dir, **{"input.resident_max_mib": 0.01})
  builder, index = _host(config)
  with pytest.raises(ValueError, match=r"device-resident frames of synthetic_me/tiny.* exceed "
                                       r"config.input.resident_max_mib=0.01: 0 MiB after 1 of 9"):
    resident_frames.build_store(builder, "train", index, config.input)


def test_no_member_draws_clips_of_its_held_out_subject(data_dir):
  config = _augmenting(data_dir)
  builder, index = _host(config)
  store = resident_frames.build_store(builder, "train", index, config.input)
  inputs = resident_frames.FrameInputs(store, index, config)
  for fold in input_pipeline.loso_folds(index):
    draws = inputs.schedule(fold.train_subjects, batch_size=8, fold_seed=0).steps(0, 20)
    drawn = set(index.subject_key[draws["rows"].ravel()].tolist())
    assert drawn == set(fold.train_subjects)
    # Every gathered frame belongs to a drawn clip (store rows first..first + count).
    clip_of_frame = np.searchsorted(store.first, draws["frame_rows"], side="right") - 1
    np.testing.assert_array_equal(clip_of_frame, np.broadcast_to(
        draws["rows"][..., None], clip_of_frame.shape))


@pytest.mark.slow
def test_frame_folds_on_the_device_equal_serial_folds(data_dir, tmp_path):
  """Small CNN on frames: one fold serially (Grain batches) and with `device_loop` (resident
  clips, one member on the same 8-device data axis): the same predictions; then two folds with
  two seeds as one chunk."""
  serial_config = tiny_config(data_dir, folds=("s00",))
  serial = train.train_and_evaluate(serial_config, str(tmp_path / "serial"))
  loop_config = tiny_config(data_dir, folds=("s00",), device_loop=True, fold_devices=1)
  loop = train.train_and_evaluate(loop_config, str(tmp_path / "loop"))
  probabilities = [np.array([p["probabilities"] for p in r["predictions"]])
                   for r in (serial, loop)]
  np.testing.assert_allclose(probabilities[1], probabilities[0], rtol=0, atol=1e-5)
  assert not np.allclose(probabilities[0], 1 / 3, atol=0.02)  # Trained, not a fresh model.
  # The accelerators' default: the steps between checkpoints as one lax.scan.
  scan_config = tiny_config(data_dir, folds=("s00",), device_loop=True, fold_devices=1,
                            scan_steps="scan")
  scan = train.train_and_evaluate(scan_config, str(tmp_path / "scan"))
  np.testing.assert_allclose([p["probabilities"] for p in scan["predictions"]],
                             probabilities[1], rtol=0, atol=1e-5)

  chunk_config = tiny_config(data_dir, folds=("s00", "s01"), parallel_folds=-1, num_seeds=2)
  chunk = train.train_and_evaluate(chunk_config, str(tmp_path / "chunk"))
  assert [s["seed"] for s in chunk["seeds"]["per_seed"]] == [0, 1]
  assert chunk["overall"]["num_samples"] == 6


def test_the_memory_limit_is_not_part_of_the_run_identity():
  """Raising the limit to resume a refused run must not make its workdir refuse it."""
  from mer_jax import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  config = default_config.get_config("tiny")
  assert config.input.resident_max_mib == 1024
  raised = default_config.get_config("tiny")
  raised.input.resident_max_mib = 4096.0
  assert workdir_lib.config_identity(raised) == workdir_lib.config_identity(config)
  raised.device_loop = True  # The device loop rounds differently: another run.
  assert workdir_lib.config_identity(raised) != workdir_lib.config_identity(config)


def test_a_frame_that_does_not_decode_is_named_with_its_clip(monkeypatch):
  """A record whose frame bytes are damaged: the store refuses it naming the clip and frame."""
  import cv2  # pylint: disable=import-outside-toplevel
  good = cv2.imencode(".png", np.zeros((16, 16, 3), np.uint8))[1].tobytes()
  records = [{"frames": [good] * 4}, {"frames": [good, good, b"not a png", good]}]
  monkeypatch.setattr(input_pipeline, "records", lambda builder, split: records)
  index = input_pipeline.ClipIndex(
      clip_id=np.array(["a", "b"]), subject_key=np.array(["toy/s0", "toy/s1"]),
      dataset=np.array(["toy", "toy"]), label=np.array([0, 1]), num_frames=np.array([4, 4]),
      onset=np.array([0, 0]), apex=np.array([1, 1]), offset=np.array([3, 3]))
  config = default_config.get_config("tiny")
  config.input.num_frames = 4
  with pytest.raises(ValueError, match=r"clip b: frame 2 is not a decodable PNG/JPEG"):
    resident_frames.build_store(None, "train", index, config.input)
