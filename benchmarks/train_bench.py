"""Train-step, inference and scaling benchmarks of the trainer's real steps.

Every figure comes from `mer_jax.steps.compile_steps("shard_map", mesh)`, the
steps `train_and_evaluate` runs: the train step (forward, backward, `pmean`,
optimiser update, metrics; state donated) and the eval step (`model.apply` in
eval mode + softmax), both jitted. Each is lowered and compiled once (timed as
`compile_s`), run `warmup` times, then timed `repeats` times with
`block_until_ready`; the median is reported. FLOPs per call come from XLA's
cost analysis of the compiled executable (`benchmarks.hardware`).

Scaling runs the train step on k devices in a fresh process per k (the device
count is fixed when JAX starts; on CPU `JAX_NUM_CPU_DEVICES=k` simulates k
devices on the same cores, which proves the multi-device code path, not a
speed-up), with a fixed per-device batch:

    python -m benchmarks.train_bench --worker '{"model": "small", ...}'

prints one JSON line (used by `scaling`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from benchmarks import hardware
from configs import default as default_config
from mer_jax import schema
from mer_jax import steps as steps_lib
from mer_jax import train_state
from mer_jax.models import create_model

WORKER_MARKER = "BENCH_WORKER_RESULT "


def _resnet_lstm_model(encoder_kwargs: dict, hidden_size: int) -> ml_collections.ConfigDict:
  """A ResNet encoder + mean pool + LSTM (last state) model on RGB frames (VGGFace2 stats)."""
  model = default_config.get_config().model
  model.encoder = "resnet"
  model.encoder_kwargs = ml_collections.ConfigDict(encoder_kwargs)
  model.spatial_pool = "mean"
  model.spatial_pool_kwargs = ml_collections.ConfigDict()
  model.temporal_head = "lstm"
  model.temporal_head_kwargs = ml_collections.ConfigDict({"hidden_size": hidden_size})
  model.input_mode = "rgb"
  model.pixel_stats = "vggface2"
  return model


def model_configs() -> dict[str, ml_collections.ConfigDict]:
  """Benchmarked models by name: `config.model` ConfigDicts.

  * "resnet50_lstm": the seed paper's model, ResNet-50 (Caffe layout) + LSTM 128.
  * "small": `configs/default.py`'s model (small CNN and temporal mean, as configured there).
  * "tiny": `configs/default.py:tiny`'s model (tests).
  * "tiny_resnet_lstm": a 1-stage, 8-wide ResNet + LSTM 16 (tests of the peer).
  """
  return {
      "resnet50_lstm": _resnet_lstm_model({"depth": 50}, 128),
      "small": default_config.get_config().model,
      "tiny": default_config.get_config("tiny").model,
      "tiny_resnet_lstm": _resnet_lstm_model({"stage_sizes": (1,), "base_width": 8}, 16),
  }


@dataclasses.dataclass(frozen=True)
class Shape:
  """One benchmark input: `batch` clips of `num_frames` frames, `image_size` px square."""
  batch: int
  num_frames: int
  image_size: int

  def __str__(self) -> str:
    return f"{self.batch}x{self.num_frames}x{self.image_size}"


def _default_shape(config: ml_collections.ConfigDict) -> Shape:
  return Shape(config.batch_size, config.input.num_frames, config.input.image_size)


# The demo sizes: ResNet-50 + LSTM small enough for a 2-core CPU, the small
# and tiny models at their configs' own training sizes.
DEFAULT_SHAPES = {
    "resnet50_lstm": Shape(2, 8, 112),
    "small": _default_shape(default_config.get_config()),
    "tiny": _default_shape(default_config.get_config("tiny")),
    "tiny_resnet_lstm": Shape(2, 3, 16),
}


def parse_shape(text: str) -> Shape:
  """Parses "BxNxS" (batch x frames x square side), e.g. "2x8x112"; ValueError if malformed."""
  parts = text.lower().split("x")
  try:
    values = [int(p) for p in parts]
  except ValueError:
    values = []
  if len(values) != 3:
    raise ValueError(f"shape {text!r} must be BATCHxFRAMESxSIZE, e.g. 2x8x112")
  return Shape(*values)


def min_image_size(model_config: ml_collections.ConfigDict) -> int:
  """Smallest square side the model's encoder accepts, in pixels."""
  if model_config.encoder.startswith("resnet"):
    # The stem's 7x7 stride-2 conv must leave the 3x3 max-pool window >= 3 px;
    # the strided 1x1 convs after it never shrink a map below 1 px.
    return 5
  return 4


def check_shape(model: str, shape: Shape, num_devices: int = 1) -> None:
  """Raises ValueError naming the bad field before any compute.

  Checks that the model exists, sizes are positive, the batch splits evenly
  over `num_devices`, and the frames are large enough for the encoder.
  """
  configs = model_configs()
  if model not in configs:
    raise ValueError(f"unknown model {model!r}; benchmarked models are {sorted(configs)}")
  for field in ("batch", "num_frames", "image_size"):
    value = getattr(shape, field)
    if value < 1:
      raise ValueError(f"{model}: {field} must be >= 1, got {value} (shape {shape})")
  if num_devices < 1:
    raise ValueError(f"num_devices must be >= 1, got {num_devices}")
  if shape.batch % num_devices:
    raise ValueError(f"{model}: batch {shape.batch} is not divisible by the {num_devices} "
                     "devices it is split over")
  smallest = min_image_size(configs[model])
  if shape.image_size < smallest:
    raise ValueError(f"{model}: image_size {shape.image_size} is below the encoder's minimum "
                     f"of {smallest} px")


def make_config(model: str, shape: Shape, half_precision: bool) -> ml_collections.ConfigDict:
  """The trainer config (configs/default.py) with `model`'s `config.model` at `shape`."""
  config = default_config.get_config()
  config.model = model_configs()[model]
  config.batch_size = shape.batch
  config.eval_batch_size = shape.batch
  config.input.num_frames = shape.num_frames
  config.input.image_size = shape.image_size
  config.half_precision = half_precision
  return config


def random_batch(shape: Shape, seed: int = 0) -> dict[str, np.ndarray]:
  """A host batch like the input pipeline's: uint8 frames, all-valid mask, int32 labels."""
  rng = np.random.default_rng(seed)
  return {
      "frames": rng.integers(0, 256, (shape.batch, shape.num_frames, shape.image_size,
                                      shape.image_size, 3), dtype=np.uint8),
      "mask": np.ones((shape.batch, shape.num_frames), bool),
      "label": rng.integers(0, schema.NUM_CLASSES, shape.batch).astype(np.int32),
  }


def place_batch(batch: dict[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
  """One host batch as global arrays split over `mesh`'s data axis (single process)."""
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(steps_lib.AXIS))
  return {k: jax.device_put(v, sharding) for k, v in batch.items()}


def median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float]]:
  """Median wall seconds of `repeats` calls of `fn` (which must block until done)."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times), times


def _rates(shape: Shape, seconds: float) -> dict[str, float]:
  return {"step_s": seconds, "clips_per_s": shape.batch / seconds,
          "frames_per_s": shape.batch * shape.num_frames / seconds}


@dataclasses.dataclass
class PreparedSteps:
  """The trainer's compiled steps, a device-resident state and batch for one model/shape."""
  config: ml_collections.ConfigDict
  mesh: jax.sharding.Mesh
  state: Any
  batch: dict
  train: Any                # Compiled train step (donates the state).
  eval: Any                 # Compiled eval step.
  compile_train_s: float
  compile_eval_s: float
  num_parameters: int


def prepare(model: str, shape: Shape, devices: Sequence[jax.Device], *,
            half_precision: bool = False, with_eval: bool = True) -> PreparedSteps:
  """Builds the model, places state and a random batch on `devices`, compiles the steps."""
  check_shape(model, shape, len(devices))
  config = make_config(model, shape, half_precision)
  mesh = jax.sharding.Mesh(np.array(devices), (steps_lib.AXIS,))
  flax_model = create_model(config.model, num_classes=schema.NUM_CLASSES,
                            dtype=jnp.bfloat16 if half_precision else jnp.float32)
  with jax.default_device(devices[0]):
    host_state = train_state.initial_state(config, flax_model, jax.random.key(0))
  num_parameters = sum(int(np.size(x)) for x in jax.tree.leaves(host_state.params))
  steps = steps_lib.compile_steps("shard_map", mesh, label_smoothing=config.label_smoothing)
  state = steps_lib.place_state(host_state, "shard_map", mesh)
  # The batch is placed as the trainer's shard_map layout places it (one global array split
  # over the mesh's data axis); the input pipeline itself is not imported here.
  batch = place_batch(random_batch(shape), mesh)
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  rng = jax.device_put(jax.random.key(1), replicated)
  class_weights = jax.device_put(jnp.ones(schema.NUM_CLASSES, jnp.float32), replicated)
  start = time.perf_counter()
  train_compiled = steps.train.lower(state, batch, rng, class_weights).compile()
  compile_train_s = time.perf_counter() - start
  eval_compiled, compile_eval_s = None, 0.0
  if with_eval:
    start = time.perf_counter()
    eval_compiled = steps.eval.lower(state, batch).compile()
    compile_eval_s = time.perf_counter() - start
  bound_train = _BoundTrain(train_compiled, rng, class_weights)
  return PreparedSteps(config, mesh, state, batch, bound_train, eval_compiled, compile_train_s,
                       compile_eval_s, num_parameters)


class _BoundTrain:
  """`step(state, batch) -> (state, metrics)` with the rng and class weights bound."""

  def __init__(self, compiled, rng, class_weights):
    self.compiled = compiled
    self.rng = rng
    self.class_weights = class_weights

  def __call__(self, state, batch):
    return self.compiled(state, batch, self.rng, self.class_weights)


def run_model(model: str, shape: Shape, devices: Sequence[jax.Device], *, repeats: int = 5,
              warmup: int = 2, half_precision: bool = False,
              suites: Sequence[str] = ("train", "inference"),
              prepared: Optional[PreparedSteps] = None) -> dict[str, Any]:
  """Times the train and/or eval step of `model` at `shape` on `devices`.

  `prepared` (from `prepare` with the same arguments) reuses compiled steps;
  its `state` is updated to the last trained state, so a caller can keep
  using it (e.g. the input suite's end-to-end run) without recompiling.

  Returns:
    `{"model", "shape", "num_parameters", "train": {...}, "inference": {...}}`;
    each suite dict has `compile_s`, `step_s` (median seconds), `times_s`,
    `clips_per_s`, `frames_per_s`, `flops_per_step`, `bytes_accessed_per_step`,
    `achieved_flops_per_s`, `mfu` (or `mfu_na_reason`), `peak`.
  """
  if repeats < 1 or warmup < 0:
    raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats}, {warmup}")
  if prepared is None:
    prepared = prepare(model, shape, devices, half_precision=half_precision,
                       with_eval="inference" in suites)
  elif "inference" in suites and prepared.eval is None:
    raise ValueError("run_model: `prepared` was compiled without the eval step")
  peak = hardware.peak_flops(devices[0], "bfloat16" if half_precision else "float32")
  result: dict[str, Any] = {
      "model": model, "shape": dataclasses.asdict(shape), "num_devices": len(devices),
      "num_parameters": prepared.num_parameters, "half_precision": half_precision,
      "model_config": prepared.config.model.to_dict(),
      "step": "mer_jax.steps.compile_steps('shard_map', mesh)",
  }
  state = prepared.state
  if "train" in suites:
    def step():
      nonlocal state
      state, metrics = prepared.train(state, prepared.batch)
      jax.block_until_ready((state, metrics))
    for _ in range(warmup):
      step()
    seconds, times = median_time(step, repeats)
    cost = hardware.cost_analysis(prepared.train.compiled)
    result["train"] = {
        "compile_s": prepared.compile_train_s, **_rates(shape, seconds), "times_s": times,
        "flops_per_step": cost["flops"], "bytes_accessed_per_step": cost["bytes_accessed"],
        **hardware.utilisation(cost["flops"], seconds, peak, len(devices)), "peak": peak}
  if "inference" in suites:
    def infer():
      jax.block_until_ready(prepared.eval(state, prepared.batch))
    for _ in range(warmup):
      infer()
    seconds, times = median_time(infer, repeats)
    cost = hardware.cost_analysis(prepared.eval)
    result["inference"] = {
        "compile_s": prepared.compile_eval_s, **_rates(shape, seconds), "times_s": times,
        "flops_per_step": cost["flops"], "bytes_accessed_per_step": cost["bytes_accessed"],
        **hardware.utilisation(cost["flops"], seconds, peak, len(devices)), "peak": peak}
  prepared.state = state  # The old one was donated to the last step.
  return result


def run_peer(model: str, shape: Shape, *, device: str, repeats: int, warmup: int,
             threads: int, half_precision: bool = False) -> dict[str, Any]:
  """The PyTorch peer (`benchmarks.torch_peer`) at the same model and shape.

  Returns `{"available": False, "reason": ...}` when torch is not installed or
  the model family has no peer.
  """
  try:
    from benchmarks import torch_peer  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    return {"available": False, "reason": f"torch not importable: {e}"}
  config = make_config(model, shape, half_precision)
  try:
    torch_peer.from_model_config(config.model, schema.NUM_CLASSES)
  except ValueError as e:
    return {"available": False, "reason": str(e)}
  result = torch_peer.benchmark(
      config.model, num_classes=schema.NUM_CLASSES, batch=shape.batch,
      num_frames=shape.num_frames, image_size=shape.image_size, repeats=repeats, warmup=warmup,
      device=device, threads=threads, half_precision=half_precision,
      learning_rate=config.learning_rate, weight_decay=config.weight_decay,
      grad_clip_norm=config.grad_clip_norm)
  return {"available": True, **result}


# --------------------------------------------------------------------------------------------
# Scaling: one process per device count.
# --------------------------------------------------------------------------------------------

def _worker(spec: dict) -> dict:
  """Runs in the child process: the train step on the first `num_devices` devices."""
  devices = jax.devices(spec["platform"])
  k = spec["num_devices"]
  if len(devices) < k:
    raise ValueError(f"scaling worker: {k} {spec['platform']} devices requested, "
                     f"{len(devices)} visible")
  per_device = spec["per_device_batch"]
  shape = Shape(per_device * k, spec["num_frames"], spec["image_size"])
  return run_model(spec["model"], shape, devices[:k], repeats=spec["repeats"],
                   warmup=spec["warmup"], half_precision=spec["half_precision"],
                   suites=("train",))


def scaling(model: str, *, per_device_batch: int, num_frames: int, image_size: int,
            device_counts: Sequence[int], platform: str, repeats: int = 3, warmup: int = 1,
            half_precision: bool = False, timeout_s: float = 1200) -> dict[str, Any]:
  """The train step on each of `device_counts` devices, fixed per-device batch.

  Each count runs in a fresh Python process. On CPU the child gets
  `JAX_NUM_CPU_DEVICES=k` (simulated devices sharing this host's cores, so
  throughput cannot grow with k: the run proves the code path); on an
  accelerator it uses the first k real devices and counts above the visible
  number are reported as skipped.

  Returns:
    `{"rows": [{"num_devices", "global_batch", "clips_per_s", "step_s",
    "compile_s", "efficiency"}, ...], ...}`; efficiency = clips/s at k /
    (k x clips/s at the smallest k).
  """
  for k in device_counts:
    if k < 1:
      raise ValueError(f"scaling device counts must be >= 1, got {list(device_counts)}")
  check_shape(model, Shape(per_device_batch, num_frames, image_size))
  visible = len(jax.devices(platform)) if platform != "cpu" else None
  rows = []
  for k in device_counts:
    if visible is not None and k > visible:
      rows.append({"num_devices": k, "skipped": f"only {visible} {platform} device(s) visible"})
      continue
    spec = {"model": model, "num_devices": k, "per_device_batch": per_device_batch,
            "num_frames": num_frames, "image_size": image_size, "repeats": repeats,
            "warmup": warmup, "half_precision": half_precision, "platform": platform}
    env = dict(os.environ)
    if platform == "cpu":
      env["JAX_NUM_CPU_DEVICES"] = str(k)
      env["JAX_PLATFORMS"] = "cpu"
      # The XLA flag would override the device count we set.
      env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                                  if "force_host_platform_device_count" not in f)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "benchmarks.train_bench", "--worker",
                           json.dumps(spec)], env=env, capture_output=True, text=True,
                          timeout=timeout_s, check=False)
    lines = [l for l in proc.stdout.splitlines() if l.startswith(WORKER_MARKER)]
    if proc.returncode != 0 or not lines:
      raise RuntimeError(f"scaling worker for {k} device(s) failed (exit {proc.returncode}):\n"
                         f"{proc.stderr[-3000:]}")
    result = json.loads(lines[-1][len(WORKER_MARKER):])
    rows.append({"num_devices": k, "global_batch": result["shape"]["batch"],
                 "clips_per_s": result["train"]["clips_per_s"],
                 "frames_per_s": result["train"]["frames_per_s"],
                 "step_s": result["train"]["step_s"], "compile_s": result["train"]["compile_s"],
                 "process_wall_s": time.perf_counter() - start})
  done = [r for r in rows if "clips_per_s" in r]
  if done:
    base = min(done, key=lambda r: r["num_devices"])
    for r in done:
      r["efficiency"] = r["clips_per_s"] / (r["num_devices"] / base["num_devices"]
                                            * base["clips_per_s"])
  return {
      "model": model, "per_device_batch": per_device_batch, "num_frames": num_frames,
      "image_size": image_size, "platform": platform, "rows": rows,
      "note": ("simulated CPU devices share the host's cores: this proves the multi-device "
               "code path (shard_map over k devices, pmean), not a speed-up"
               if platform == "cpu" else "real devices"),
  }


def main(argv: Optional[Sequence[str]] = None) -> None:
  import argparse  # pylint: disable=import-outside-toplevel
  parser = argparse.ArgumentParser(description="scaling worker (used by benchmarks.run)")
  parser.add_argument("--worker", required=True, help="JSON spec of one scaling run")
  args = parser.parse_args(argv)
  result = _worker(json.loads(args.worker))
  print(WORKER_MARKER + json.dumps(result), flush=True)


if __name__ == "__main__":
  main()
