"""Input-pipeline benchmark: built TFDS records -> device-ready batches, in examples/s.

Two measurements:

* `run` (the `input` suite of `benchmarks.run`): the trainer's own path,
  `input_pipeline.create_train_dataset` (Grain: records by index from
  ArrayRecord, shuffle, sample N frames, decode only those, resize/crop/flip,
  batch; Grain threads or worker processes) followed by
`input_pipeline.prefetch_to_devices` (background thread, `shard_for_devices`
onto the mesh). A batch counts when it is on the device
(`block_until_ready`). The rate is compared with what the train step consumes
at the same model and shape (goal: the pipeline at least 2x faster, so it never
starves the step), and optionally measured end to end: the train step fed by
the pipeline against the same step on a resident batch.

* `compare` (`python -m benchmarks.input_bench`): the Grain pipeline against
  the tf.data pipeline it replaced (kept here, `_tfdata_train_batches`, only
  for this comparison), on the same records (the same builder and config,
  written once as ArrayRecord and once as TFRecord), in alternating rounds.
  Each round of each pipeline runs in a fresh process, so its peak resident
  memory (`ru_maxrss`, including the imports it needs: TensorFlow for
  tf.data, none for Grain) is its own. Host batches are timed (no device).

  python -m benchmarks.input_bench --config=default --rounds=3 --batches=100 --workers=0,2

The records are the synthetic_me benchmark, built into a temporary data_dir
(or read from `data_dir` if already built there).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Optional, Sequence

import ml_collections
import numpy as np

from mer_jax import input_pipeline

BUILDER_CONFIGS = ("tiny", "default")


def _dataset_config(builder_config: str, data_dir: str) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.name = "synthetic_me"
  config.builder_config = builder_config
  config.data_dir = data_dir
  config.manual_dir = None
  config.build_if_missing = True
  return config


def run(model: str, shape, devices: Sequence[Any], *,
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
      warm-up fills Grain's prefetch buffers).
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
  import jax  # pylint: disable=import-outside-toplevel
  from benchmarks import train_bench  # pylint: disable=import-outside-toplevel
  from mer_jax import steps as steps_lib  # pylint: disable=import-outside-toplevel

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
      batches = input_pipeline.create_train_dataset(builder, "train", index.subjects,
                                                    config.input, batch_size=shape.batch,
                                                    seed=seed, index=index)
      return input_pipeline.prefetch_to_devices(batches, mode="shard_map", mesh=mesh)

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
        "path": "create_train_dataset (Grain) -> prefetch_to_devices (shard_map layout), "
                "block_until_ready per batch",
        "num_workers": int(config.input.get("num_workers", 0) or 0),
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



# --------------------------------------------------------------------------------------------
# Grain against the tf.data pipeline it replaced, same records, alternating rounds.
# --------------------------------------------------------------------------------------------

PIPELINES = ("grain", "tf.data")


def comparison_input_config(num_frames: int = 8, image_size: int = 32, num_workers: int = 0
                            ) -> ml_collections.ConfigDict:
  """The `config.input` both pipelines run with (the trainer's defaults, tiny shapes)."""
  return ml_collections.ConfigDict({
      "num_frames": num_frames, "sampling": "uniform", "short_clip": "repeat",
      "temporal_jitter": 1, "image_size": image_size, "resize_size": None,
      "random_crop": False, "flip": True, "shuffle_buffer": 1024, "num_workers": num_workers})


def _tfdata_train_batches(builder, subjects: Sequence[str], cfg: ml_collections.ConfigDict, *,
                          batch_size: int, seed: int):
  """The tf.data training pipeline mer_jax used before Grain (TFRecord records), as it was."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  table = tf.constant(list(subjects))

  def keep(ex):
    key = tf.strings.join([ex["dataset"], ex["subject"]], separator="/")
    return tf.reduce_any(tf.equal(key, table))

  def preprocess(i, ex):
    seeds = tf.random.experimental.stateless_split(tf.stack([tf.constant(seed, tf.int64), i]), 3)
    encoded = ex["frames"]
    num_stored = tf.shape(encoded)[0]
    last = num_stored - 1
    shift = tf.random.stateless_uniform([2], seeds[0], -cfg.temporal_jitter,
                                        cfg.temporal_jitter + 1, dtype=tf.int32)
    start = tf.clip_by_value(ex["onset"] + shift[0], 0, last)
    end = tf.clip_by_value(ex["offset"] + shift[1], start, last)
    span = end - start + 1
    indices = start + tf.cast(tf.round(tf.linspace(0.0, tf.cast(span - 1, tf.float32),
                                                   cfg.num_frames)), tf.int32)
    frames = tf.map_fn(
        lambda s: tf.io.decode_image(s, channels=3, expand_animations=False),
        tf.gather(encoded, indices), fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
    size = cfg.image_size
    height, width = tf.shape(frames)[1], tf.shape(frames)[2]
    scale = size / tf.cast(tf.minimum(height, width), tf.float32)
    new_hw = tf.maximum(tf.cast(tf.round(tf.cast(tf.stack([height, width]), tf.float32) * scale),
                                tf.int32), size)
    frames = tf.image.resize(frames, new_hw, method="area")
    top, left = (new_hw[0] - size) // 2, (new_hw[1] - size) // 2
    frames = frames[:, top:top + size, left:left + size, :]
    flip = tf.random.stateless_uniform([], seeds[2]) < 0.5
    frames = tf.cond(flip, lambda: tf.reverse(frames, axis=[2]), lambda: frames)
    frames = tf.cast(tf.clip_by_value(tf.round(frames), 0, 255), tf.uint8)
    return {"frames": tf.ensure_shape(frames, [cfg.num_frames, size, size, 3]),
            "mask": tf.ones([cfg.num_frames], tf.bool), "label": tf.cast(ex["label"], tf.int32),
            "clip_id": ex["clip_id"], "subject": ex["subject"], "dataset": ex["dataset"]}

  ds = builder.as_dataset(split="train", shuffle_files=False,
                          decoders={"frames": tfds.decode.SkipDecoding()},
                          read_config=tfds.ReadConfig(interleave_cycle_length=1,
                                                      enable_ordering_guard=False))
  ds = ds.filter(keep).cache().repeat().shuffle(cfg.shuffle_buffer, seed=seed,
                                                reshuffle_each_iteration=True)
  ds = ds.enumerate().map(preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  options = tf.data.Options()
  options.deterministic = True
  ds = ds.batch(batch_size, drop_remainder=True).with_options(options)
  return ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()


def _builder(builder_config: str, data_dir: str, file_format: str):
  import importlib  # pylint: disable=import-outside-toplevel
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  importlib.import_module("data_builders.synthetic_me")
  return tfds.builder(f"synthetic_me/{builder_config}", data_dir=data_dir,
                      file_format=file_format)


def _measure(pipeline: str, builder_config: str, data_dir: str, *, batch_size: int,
             num_batches: int, warmup_batches: int, num_frames: int, image_size: int,
             num_workers: int, seed: int) -> dict[str, Any]:
  """One round of one pipeline, in this (fresh) process: examples/s and peak memory."""
  cfg = comparison_input_config(num_frames, image_size, num_workers)
  if pipeline == "grain":
    builder = _builder(builder_config, data_dir, "array_record")
    index = input_pipeline.read_clip_index(builder)
    batches = input_pipeline.create_train_dataset(builder, "train", index.subjects, cfg,
                                                  batch_size=batch_size, seed=seed, index=index)
  else:
    builder = _builder(builder_config, data_dir, "tfrecord")
    index = None
    subjects = sorted({f"{d}/{s}" for d, s in _tfrecord_subjects(builder)})
    batches = _tfdata_train_batches(builder, subjects, cfg, batch_size=batch_size, seed=seed)
  for _ in range(warmup_batches):
    next(batches)
  start = time.perf_counter()
  for _ in range(num_batches):
    batch = next(batches)
  seconds = time.perf_counter() - start
  assert batch["frames"].shape == (batch_size, num_frames, image_size, image_size, 3)
  workers_mib = sum(_peak_rss_mib(pid) for pid in _descendants(os.getpid()))
  return {"pipeline": pipeline, "examples_per_s": num_batches * batch_size / seconds,
          "seconds": seconds, "num_workers": num_workers,
          "peak_rss_mib": _peak_rss_mib(os.getpid()), "peak_rss_mib_workers": workers_mib,
          "tensorflow_imported": "tensorflow" in sys.modules}


def _peak_rss_mib(pid: int) -> float:
  """Peak resident memory of a live process (VmHWM). Not `ru_maxrss`, which keeps the
  parent's peak across fork + exec and so would charge this benchmark's parent to each round."""
  try:
    with open(f"/proc/{pid}/status") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) / 1024
  except OSError:
    pass
  return 0.0


def _descendants(pid: int) -> list[int]:
  """Live descendant processes (Grain's workers) of `pid`."""
  found, stack = [], [pid]
  while stack:
    parent = stack.pop()
    try:
      tasks = os.listdir(f"/proc/{parent}/task")
    except OSError:
      continue
    for task in tasks:
      try:
        with open(f"/proc/{parent}/task/{task}/children") as f:
          children = [int(c) for c in f.read().split()]
      except OSError:
        children = []
      found += children
      stack += children
  return found


def _tfrecord_subjects(builder):
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  ds = builder.as_dataset(split="train", decoders={"frames": tfds.decode.SkipDecoding()})
  return {(ex["dataset"].decode(), ex["subject"].decode()) for ex in tfds.as_numpy(ds)}


def prepare_records(builder_config: str, data_dir: str) -> dict[str, float]:
  """Builds `synthetic_me/<config>` into `data_dir/array_record` and `data_dir/tfrecord`."""
  seconds = {}
  for file_format in ("array_record", "tfrecord"):
    builder = _builder(builder_config, os.path.join(data_dir, file_format), file_format)
    start = time.perf_counter()
    if not builder.is_prepared():
      builder.download_and_prepare()
    seconds[file_format] = time.perf_counter() - start
  return seconds


def compare(*, builder_config: str = "tiny", data_dir: Optional[str] = None, rounds: int = 3,
            num_batches: int = 20, warmup_batches: int = 3, batch_size: int = 8,
            num_frames: int = 8, image_size: int = 32, workers: Sequence[int] = (0,),
            seed: int = 0) -> dict[str, Any]:
  """Grain vs tf.data on the same records, alternating rounds, one fresh process per round.

  Returns:
    `rows`: per pipeline and worker count, the median and every round's
    examples/s and peak RSS (MiB); `rounds`: every measurement in run order.
  """
  if rounds < 1 or num_batches < 1:
    raise ValueError(f"rounds and num_batches must be >= 1, got {rounds}, {num_batches}")
  temporary = data_dir is None
  data_dir = data_dir or tempfile.mkdtemp(prefix="mer_jax_input_compare_")
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, PYTHONPATH=repo + os.pathsep + os.environ.get("PYTHONPATH", ""),
             TF_CPP_MIN_LOG_LEVEL="2")
  try:
    build_s = prepare_records(builder_config, data_dir)
    measured = []
    for k in range(rounds):
      # Alternate which pipeline goes first, so drift in machine load hits both.
      order = [(p, w) for w in workers for p in PIPELINES if p == "grain" or w == workers[0]]
      for pipeline, num_workers in (order if k % 2 == 0 else order[::-1]):
        sub = os.path.join(data_dir, "array_record" if pipeline == "grain" else "tfrecord")
        args = [sys.executable, "-m", "benchmarks.input_bench", "--_measure", pipeline,
                "--config", builder_config, "--data_dir", sub, "--batches", str(num_batches),
                "--warmup", str(warmup_batches), "--batch", str(batch_size),
                "--frames", str(num_frames), "--size", str(image_size),
                "--workers", str(num_workers), "--seed", str(seed)]
        out = subprocess.run(args, capture_output=True, text=True, env=env, cwd=repo,
                             check=False)
        if out.returncode:
          raise RuntimeError(f"input_bench round {k} ({pipeline}, {num_workers} workers) "
                             f"failed:\n{out.stderr[-3000:]}")
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row["round"] = k
        measured.append(row)
        print(f"[input_bench] round {k}: {pipeline} workers={num_workers}: "
              f"{row['examples_per_s']:.1f} examples/s, peak {row['peak_rss_mib']:.0f} MiB",
              file=sys.stderr, flush=True)
    rows = []
    for pipeline, num_workers in dict.fromkeys((r["pipeline"], r["num_workers"])
                                               for r in measured):
      mine = [r for r in measured if r["pipeline"] == pipeline and r["num_workers"] == num_workers]
      rows.append({
          "pipeline": pipeline,
          "num_workers": num_workers if pipeline == "grain" else "AUTOTUNE threads",
          "examples_per_s_median": float(np.median([r["examples_per_s"] for r in mine])),
          "examples_per_s_rounds": [round(r["examples_per_s"], 2) for r in mine],
          "peak_rss_mib_median": float(np.median([r["peak_rss_mib"] for r in mine])),
          "peak_rss_mib_workers_median": float(np.median([r["peak_rss_mib_workers"]
                                                          for r in mine])),
          "tensorflow_imported": any(r["tensorflow_imported"] for r in mine)})
    return {"dataset": f"synthetic_me/{builder_config}", "build_s": build_s, "rounds": measured,
            "rows": rows, "settings": {
                "batch": batch_size, "num_frames": num_frames, "image_size": image_size,
                "num_batches": num_batches, "warmup_batches": warmup_batches,
                "rounds": rounds, "seed": seed},
            "method": "host batches (no device), each round of each pipeline in a fresh "
                      "process, pipelines alternating; peak RSS = VmHWM of that process "
                      "(imports included); Grain workers' peaks summed apart"}
  finally:
    if temporary:
      shutil.rmtree(data_dir, ignore_errors=True)


def format_comparison(result: dict[str, Any]) -> str:
  """A markdown table of `compare`'s rows."""
  s = result["settings"]
  lines = [f"{result['dataset']}, B x N x S = {s['batch']}x{s['num_frames']}x{s['image_size']}, "
           f"{s['num_batches']} batches x {s['rounds']} alternating rounds", "",
           "| pipeline | workers | examples/s (median) | rounds | peak RSS MiB | workers' peak "
           "RSS MiB (sum) | TF imported |", "|---|---|---|---|---|---|---|"]
  for r in result["rows"]:
    lines.append(f"| {r['pipeline']} | {r['num_workers']} | {r['examples_per_s_median']:.1f} | "
                 f"{r['examples_per_s_rounds']} | {r['peak_rss_mib_median']:.0f} | "
                 f"{r['peak_rss_mib_workers_median']:.0f} | {r['tensorflow_imported']} |")
  return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(description="Grain vs tf.data input pipeline, same records.")
  parser.add_argument("--config", choices=BUILDER_CONFIGS, default="tiny")
  parser.add_argument("--data_dir", default=None, help="where the two record copies go "
                      "(default: a temporary directory)")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--batches", type=int, default=100,
                      help="timed batches; keep it well above the batches the pipelines read "
                           "ahead (Grain: prefetch and worker buffers; tf.data: AUTOTUNE), or "
                           "buffered batches inflate the rate")
  parser.add_argument("--warmup", type=int, default=10)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--frames", type=int, default=8)
  parser.add_argument("--size", type=int, default=32)
  parser.add_argument("--workers", default="0", help="Grain worker counts, e.g. 0,2")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--json", default=None, help="also write the result here")
  parser.add_argument("--_measure", choices=PIPELINES, default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  workers = [int(w) for w in str(args.workers).split(",")]
  if args._measure:  # pylint: disable=protected-access
    print(json.dumps(_measure(args._measure, args.config, args.data_dir,  # pylint: disable=protected-access
                              batch_size=args.batch, num_batches=args.batches,
                              warmup_batches=args.warmup, num_frames=args.frames,
                              image_size=args.size, num_workers=workers[0], seed=args.seed)))
    return 0
  result = compare(builder_config=args.config, data_dir=args.data_dir, rounds=args.rounds,
                   num_batches=args.batches, warmup_batches=args.warmup, batch_size=args.batch,
                   num_frames=args.frames, image_size=args.size, workers=workers,
                   seed=args.seed)
  print(format_comparison(result))
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
