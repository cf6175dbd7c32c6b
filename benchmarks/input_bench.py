"""Input-pipeline benchmark: built TFDS records -> device-ready batches, in examples/s.

The path timed is the trainer's own: `input_pipeline.create_train_dataset`
(read, filter subjects, cache, shuffle, sample N frames, decode only those,
resize/crop/flip, batch; tf.data's thread pool) followed by
`input_pipeline.prefetch_to_devices` (background thread, `shard_for_devices`
onto the mesh). A batch counts when it is on the device
(`block_until_ready`). The rate is compared with what the train step consumes
at the same model and shape (goal: the pipeline at least 2x faster, so it never
starves the step), and optionally measured end to end: the train step fed by
the pipeline against the same step on a resident batch.

The records are the synthetic_me benchmark, built into a temporary data_dir
(or read from `data_dir` if already built there).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from typing import Any, Optional, Sequence

import jax
import ml_collections

from benchmarks import train_bench
from mer_jax import input_pipeline
from mer_jax import steps as steps_lib

BUILDER_CONFIGS = ("tiny", "default")


def _dataset_config(builder_config: str, data_dir: str) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.name = "synthetic_me"
  config.builder_config = builder_config
  config.data_dir = data_dir
  config.manual_dir = None
  config.build_if_missing = True
  return config


def run(model: str, shape: train_bench.Shape, devices: Sequence[jax.Device], *,
        builder_config: str = "default", data_dir: Optional[str] = None,
        num_batches: int = 20, warmup_batches: int = 3,
        train_clips_per_s: Optional[float] = None, end_to_end: bool = True,
        prepared: Optional[train_bench.PreparedSteps] = None, half_precision: bool = False,
        seed: int = 0) -> dict[str, Any]:
  """Measures the pipeline's examples/s at `model`'s input config and `shape`.

  Args:
    model, shape: the benchmarked model (`train_bench.model_configs()`) and the
      batch / frames / image size its input config is set to.
    devices: the mesh the batches are sharded over (batch divisible by its size).
    builder_config: synthetic_me config to build ("tiny" or "default").
    data_dir: TFDS data_dir; None builds into a temporary directory that is
      deleted afterwards.
    num_batches: batches timed after `warmup_batches` untimed ones (the
      warm-up fills tf.data's cache and AUTOTUNE buffers).
    train_clips_per_s: the train step's measured consumption at this
      model/shape; None measures it here (resident batch).
    end_to_end: also time `num_batches` train steps fed by the pipeline.
    prepared: the compiled train step of this model/shape/devices (from the
      train suite) to reuse; None compiles it here when needed.
    half_precision: bf16 compute in the train step compiled here.

  Returns:
    A dict with `examples_per_s`, `batches_per_s`, `build_s`,
    `train_clips_per_s`, `ratio_to_train_step` (goal >= 2), and, with
    `end_to_end`, `end_to_end_clips_per_s` and `end_to_end_over_resident`.
  """
  if builder_config not in BUILDER_CONFIGS:
    raise ValueError(f"builder_config must be one of {BUILDER_CONFIGS}, got {builder_config!r}")
  if num_batches < 1 or warmup_batches < 0:
    raise ValueError(f"num_batches must be >= 1 and warmup_batches >= 0, got {num_batches}, "
                     f"{warmup_batches}")
  train_bench.check_shape(model, shape, len(devices))
  if shape.num_frames < 2:
    raise ValueError(f"input suite: num_frames must be >= 2 (the pipeline samples a clip "
                     f"span), got {shape.num_frames}")
  temporary = data_dir is None
  data_dir = data_dir or tempfile.mkdtemp(prefix="mer_jax_input_bench_")
  try:
    dataset_config = _dataset_config(builder_config, data_dir)
    builder = input_pipeline.get_builder(dataset_config)
    start = time.perf_counter()
    was_built = builder.is_prepared()
    builder = input_pipeline.prepare_builder(builder, dataset_config)
    build_s = time.perf_counter() - start
    index = input_pipeline.read_clip_index(builder, "train")
    config = train_bench.make_config(model, shape, half_precision=False)
    input_pipeline.check_sampling(index, config.input)
    mesh = jax.sharding.Mesh(list(devices), (steps_lib.AXIS,))

    def stream():
      ds = input_pipeline.create_train_dataset(builder, "train", index.subjects, config.input,
                                               batch_size=shape.batch, seed=seed)
      return input_pipeline.prefetch_to_devices(ds.as_numpy_iterator(), mode="shard_map",
                                                mesh=mesh)

    batches = stream()
    for _ in range(warmup_batches):
      jax.block_until_ready(next(batches))
    start = time.perf_counter()
    for _ in range(num_batches):
      jax.block_until_ready(next(batches))
    seconds = time.perf_counter() - start
    examples_per_s = num_batches * shape.batch / seconds
    result: dict[str, Any] = {
        "dataset": builder.info.full_name, "num_clips": len(index),
        "stored_frames_per_clip": int(index.num_frames.max()),
        "built_in_this_run": not was_built, "build_s": build_s if not was_built else 0.0,
        "model": model,
        "shape": {"batch": shape.batch, "num_frames": shape.num_frames,
                  "image_size": shape.image_size},
        "input_config": config.input.to_dict(),
        "num_batches": num_batches, "warmup_batches": warmup_batches,
        "seconds": seconds, "batches_per_s": num_batches / seconds,
        "examples_per_s": examples_per_s,
        "frames_per_s": examples_per_s * shape.num_frames,
        "path": "create_train_dataset -> prefetch_to_devices (shard_map layout), "
                "block_until_ready per batch",
    }

    if end_to_end or train_clips_per_s is None:
      if prepared is None:
        prepared = train_bench.prepare(model, shape, devices, half_precision=half_precision,
                                       with_eval=False)
      state = prepared.state

      def step(batch):
        nonlocal state
        state, metrics = prepared.train(state, batch)
        jax.block_until_ready((state, metrics))

      step(prepared.batch)  # Warm-up.
      if train_clips_per_s is None:
        resident_s, _ = train_bench.median_time(lambda: step(prepared.batch), num_batches)
        train_clips_per_s = shape.batch / resident_s
        result["train_clips_per_s_source"] = "measured here, resident batch"
      else:
        result["train_clips_per_s_source"] = "train suite of the same run"
      if end_to_end:
        fed = stream()
        step(next(fed))
        start = time.perf_counter()
        for _ in range(num_batches):
          step(next(fed))
        e2e = num_batches * shape.batch / (time.perf_counter() - start)
        prepared.state = state
        result["end_to_end_clips_per_s"] = e2e
        result["end_to_end_over_resident"] = e2e / train_clips_per_s
    else:
      result["train_clips_per_s_source"] = "train suite of the same run"
    result["train_clips_per_s"] = train_clips_per_s
    result["ratio_to_train_step"] = examples_per_s / train_clips_per_s
    result["goal"] = "ratio_to_train_step >= 2"
    result["goal_met"] = result["ratio_to_train_step"] >= 2.0
    return result
  finally:
    if temporary:
      shutil.rmtree(data_dir, ignore_errors=True)

