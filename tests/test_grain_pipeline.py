"""The Grain input pipeline: fold samplers, determinism in (seed, fold, step), resumable state."""

import copy

import numpy as np
import pytest

from conftest import tiny_config
from mer_jax import checkpoints
from mer_jax import input_pipeline


@pytest.fixture(scope="module")
def tiny(data_dir):
  config = tiny_config(data_dir)
  builder = input_pipeline.get_builder(config.dataset)
  return config, builder, input_pipeline.read_clip_index(builder)


def _stream(tiny, subjects, input_config=None, **kwargs):
  config, builder, index = tiny
  kwargs.setdefault("batch_size", 2)
  kwargs.setdefault("seed", 7)
  return input_pipeline.create_train_dataset(builder, "train", subjects,
                                             input_config or config.input, index=index, **kwargs)


def _same(a, b):
  assert a["clip_id"].tolist() == b["clip_id"].tolist()
  np.testing.assert_array_equal(a["frames"], b["frames"])
  np.testing.assert_array_equal(a["mask"], b["mask"])


def test_batch_s_is_the_same_from_step_zero_from_step_s_and_from_a_saved_state(tiny):
  subjects = tiny[2].subjects[:2]
  full = _stream(tiny, subjects)
  expected = [next(full) for _ in range(8)]
  # Opened at step 3 (a slice: nothing before it is read).
  resumed = _stream(tiny, subjects, start_step=3)
  for batch in expected[3:6]:
    _same(next(resumed), batch)
  # Restored from the state saved after consuming 4 batches.
  interrupted = _stream(tiny, subjects)
  for _ in range(4):
    next(interrupted)
  restored = _stream(tiny, subjects, data_state=interrupted.get_state())
  for batch in expected[4:]:
    _same(next(restored), batch)
  # The state of a stream that was itself opened at step 3 (and gave batches 3..5) goes on at 6.
  again = _stream(tiny, subjects, data_state=resumed.get_state())
  for batch in expected[6:]:
    _same(next(again), batch)


def test_another_seed_gives_another_stream(tiny):
  subjects = tiny[2].subjects[:2]
  a, b = _stream(tiny, subjects, seed=1), _stream(tiny, subjects, seed=2)
  batches_a = [next(a) for _ in range(3)]
  batches_b = [next(b) for _ in range(3)]
  assert any(x["clip_id"].tolist() != y["clip_id"].tolist()
             or not np.array_equal(x["frames"], y["frames"])
             for x, y in zip(batches_a, batches_b))


def test_fold_batches_never_hold_the_test_subject(tiny):
  _, _, index = tiny
  for fold in input_pipeline.loso_folds(index):
    stream = _stream(tiny, fold.train_subjects, batch_size=3)
    seen = set()
    for _ in range(2 * len(index) // 3):  # ~2 epochs of the fold's clips.
      batch = next(stream)
      seen |= {f"{d.decode()}/{s.decode()}" for d, s in zip(batch["dataset"], batch["subject"])}
    assert fold.test_subject not in seen
    assert seen == set(fold.train_subjects)


def test_fold_samplers_are_independent_streams_of_their_own_clips(tiny):
  _, _, index = tiny
  folds = input_pipeline.loso_folds(index)
  samplers = [input_pipeline.fold_sampler(index, f.train_subjects, seed=0) for f in folds]
  for fold, sampler in zip(folds, samplers):
    own = set(np.flatnonzero(np.isin(index.subject_key, fold.train_subjects)).tolist())
    epoch = [sampler[k] for k in range(len(own))]
    assert sorted(epoch) == sorted(own)  # One epoch: each training clip once.
    second = [sampler[k] for k in range(len(own), 2 * len(own))]
    assert sorted(second) == sorted(own)
  # Drawing from one fold's sampler does not move another's.
  assert [samplers[1][k] for k in range(4)] == [
      input_pipeline.fold_sampler(index, folds[1].train_subjects, seed=0)[k] for k in range(4)]


def test_process_shards_split_the_fold_clips(tiny):
  import grain  # pylint: disable=import-outside-toplevel
  _, _, index = tiny
  subjects = index.subjects
  shards = [input_pipeline.fold_sampler(
      index, subjects, seed=0,
      shard_options=grain.sharding.ShardOptions(shard_index=i, shard_count=2)) for i in range(2)]
  clips = [{s[k] for k in range(40)} for s in shards]
  assert not clips[0] & clips[1]
  assert clips[0] | clips[1] == set(range(len(index)))


def test_iterator_state_travels_in_the_orbax_checkpoint(tiny, tmp_path):
  # The training loop's path: prefetcher (reads ahead) -> data_state -> checkpoint -> resume.
  import jax  # pylint: disable=import-outside-toplevel
  subjects = tiny[2].subjects
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
  reference = _stream(tiny, subjects, batch_size=8)
  expected = [next(reference) for _ in range(5)]
  batches = input_pipeline.prefetch_to_devices(_stream(tiny, subjects, batch_size=8),
                                               mode="shard_map", mesh=mesh, size=2)
  for _ in range(3):
    next(batches)
  manager = checkpoints.create_manager(str(tmp_path / "ckpt"), validation_selection=False)
  checkpoints.save(manager, 3, {"w": np.zeros(2, np.float32)}, data_state=batches.data_state)
  checkpoints.wait(manager)
  assert checkpoints.restore_data_state(manager, 3) == batches.data_state
  resumed = _stream(tiny, subjects, batch_size=8, start_step=3,
                    data_state=checkpoints.restore_data_state(manager, 3))
  manager.close()
  for batch in expected[3:]:
    _same(next(resumed), batch)
  # A checkpoint without a data item (older run, flow input) has no state.
  manager = checkpoints.create_manager(str(tmp_path / "plain"), validation_selection=False)
  checkpoints.save(manager, 1, {"w": np.zeros(2, np.float32)})
  checkpoints.wait(manager)
  assert checkpoints.restore_data_state(manager, 1) is None
  manager.close()


def test_eval_dataset_holds_each_clip_of_the_subjects_once_in_record_order(tiny):
  config, builder, index = tiny
  subject = index.subjects[1]
  batches = list(input_pipeline.create_eval_dataset(builder, "train", [subject], config.input,
                                                    batch_size=2, index=index))
  clips = [c.decode() for b in batches for c in b["clip_id"]]
  assert clips == index.clip_id[index.subject_key == subject].tolist()
  again = list(input_pipeline.create_eval_dataset(builder, "train", [subject], config.input,
                                                  batch_size=2, index=index))
  for a, b in zip(batches, again):
    np.testing.assert_array_equal(a["frames"], b["frames"])  # No randomness at evaluation.


def test_sampling_rules_pad_and_repeat():
  idx, mask = input_pipeline.sample_frame_indices(20, 5, 7, 8, num_frames=6, sampling="uniform",
                                                  short_clip="pad")
  assert idx.tolist() == [5, 6, 7, 8, 8, 8]
  assert mask.tolist() == [True] * 4 + [False] * 2
  idx, mask = input_pipeline.sample_frame_indices(20, 5, 7, 8, num_frames=6, sampling="uniform",
                                                  short_clip="repeat")
  assert sorted(set(idx.tolist())) == [5, 6, 7, 8] and mask.all()
  idx, _ = input_pipeline.sample_frame_indices(20, 0, 18, 19, num_frames=5, sampling="apex",
                                               short_clip="pad")
  assert idx.tolist() == [15, 16, 17, 18, 19]  # Window shifted inside the clip.
  idx, _ = input_pipeline.sample_frame_indices(20, 0, 5, 19, num_frames=5, sampling="uniform",
                                               short_clip="repeat")
  assert idx.tolist() == [0, 5, 10, 14, 19]  # Evenly spaced, halves rounded to even.


def test_jitter_stays_inside_the_clip_and_follows_the_generator():
  draws = [input_pipeline.sample_frame_indices(
      10, 1, 4, 8, num_frames=4, sampling="uniform", short_clip="repeat", jitter=2,
      rng=np.random.default_rng(seed))[0] for seed in range(40)]
  assert all(0 <= d.min() and d.max() <= 9 for d in draws)
  assert len({tuple(d) for d in draws}) > 1
  again = input_pipeline.sample_frame_indices(
      10, 1, 4, 8, num_frames=4, sampling="uniform", short_clip="repeat", jitter=2,
      rng=np.random.default_rng(3))[0]
  assert again.tolist() == draws[3].tolist()


@pytest.mark.slow
def test_worker_processes_give_the_in_process_stream(tiny):
  subjects = tiny[2].subjects
  in_process = _stream(tiny, subjects)
  expected = [next(in_process) for _ in range(4)]
  input_config = copy.deepcopy(tiny[0].input)
  with input_config.unlocked():
    input_config.num_workers = 2
  workers = _stream(tiny, subjects, input_config)
  for batch in expected:
    _same(next(workers), batch)
  resumed = _stream(tiny, subjects, input_config, data_state=workers.get_state())
  _same(next(resumed), next(in_process))


@pytest.mark.slow
def test_input_benchmark_compares_grain_with_tf_data_on_the_same_records(tmp_path):
  from benchmarks import input_bench  # pylint: disable=import-outside-toplevel
  result = input_bench.compare(builder_config="tiny", data_dir=str(tmp_path), rounds=1,
                               num_batches=2, warmup_batches=1, batch_size=4, num_frames=4,
                               image_size=16, workers=(0,))
  rows = {r["pipeline"]: r for r in result["rows"]}
  assert set(rows) == {"grain", "tf.data"}
  for row in rows.values():
    assert row["examples_per_s_median"] > 0 and row["peak_rss_mib_median"] > 0
  assert rows["grain"]["tensorflow_imported"] is False
  assert rows["tf.data"]["tensorflow_imported"] is True
  assert "| grain | 0 |" in input_bench.format_comparison(result)
