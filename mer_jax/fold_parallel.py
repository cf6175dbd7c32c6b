"""Fold-parallel LOSO: many folds (and seeds) of a run trained as one device program.

A LOSO run is dozens of small, independent trainings. For device-resident
inputs -- the cached flow features of `mer_jax.motion_input` (`FlowInputs`)
or low-resolution clips decoded once (`mer_jax.resident_frames.FrameInputs`),
a few MB for a whole dataset -- this module trains them together:

* **Members.** A member is one fold under one run seed (`config.num_seeds`
  seeds `config.seed, config.seed + 1, ...`). Each member has its own
  parameters, optimiser state, BatchNorm statistics and random keys, exactly
  the ones the serial trainer gives that fold (`train_state.fold_rngs` with
  the member's seed), stacked on a leading member axis.
* **Chunks.** `config.parallel_folds` folds (-1: all) times `num_seeds` seeds
  form one chunk, trained as one program; chunks run one after another
  (`config.device_loop=True` with one fold and one seed: this device-resident
  loop one fold at a time). A
  chunk is a fixed slice of the run's fold list, so a resumed run finds the
  same chunks and their checkpoints.
* **Mesh.** Members are sharded over a `folds` mesh axis; when there are more
  devices than that axis uses, each member's batch is also split over the
  `data` axis (a 2-D mesh). The per-member step is `steps.train_step` (written
  once for every trainer), vmapped over the local members inside
  `jax.shard_map`, its collectives over `data` as under serial training.
  Layout rule: `config.fold_devices` devices on the fold axis (0: the largest
  divisor of the device count not above the chunk's member count); the
  member count is padded up to a multiple of it with copies of the last
  member, whose results are discarded. `batch_size` must divide over the data
  axis; both are checked before any compute (`layout`).
* **Device-resident loop.** The inputs and labels live on the device; the
  host sends only each step's draws, made by the serial trainer's own stream
  (flow: clip rows and flips from `motion_input.TrainSchedule`; frames: clip
  rows, frame rows, mask, crop offsets and flips from the Grain stream of
  `input_pipeline`, see `mer_jax.resident_frames`). The inputs' `batcher`
  gathers the batch on the device with the host path's formulas (flow:
  `motion_input.flip_maps` and `normalize` with `xp=jax.numpy`; frames: a
  gather, a crop and a mirror of uint8 pixels): bit-identical batches.
  `config.scan_steps` runs the steps between two checkpoints as one `lax.scan`
  (no host round trip; "auto" on GPU/TPU) or dispatches one call per step
  ("auto" on CPU, where XLA runs a step inside a loop ~4x slower).
* **Selection and checkpoints.** The stacked state is saved every
  `checkpoint_every_steps` steps (Orbax, `mer_jax.checkpoints`) into
  `<workdir>/folds/chunkNNN/checkpoints`; a killed run resumes from it and,
  since the stream is a pure function of (seed, fold, step), ends where an
  uninterrupted run ends. With `model_selection="validation"` every member is
  scored on its own validation subjects at each checkpoint and its best state
  (ties keep the earlier step) is kept in the checkpoint beside the running one.
  Each member writes its own predictions file (`workdir.Workdir`), so
  `train.train_and_evaluate` pools them as it pools serial folds.

Equivalence with serial training: same seeds, same batches, same step
function. A chunk of one member on the serial run's devices reproduces the
serial fold (to 1e-6 in the probabilities). With several members, vmap
batches each convolution over the members, which rounds differently (~1e-7),
and Adam divides every gradient by its running RMS, so parameters whose
gradient is near zero take full-size updates of either sign from that
rounding: in the test (STSTNet, six steps) the probabilities differ by up to
4e-4 and the predictions agree (tests/test_fold_parallel.py); longer runs drift
further apart, as two runs on different hardware would. Dropout masks and BatchNorm
statistics are drawn per data shard, as in any data-parallel training, so a
different data-axis size (`fold_devices`) changes results like any change of
data-parallel layout.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Callable, Optional, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mer_jax import checkpoints
from mer_jax import evaluation
from mer_jax import input_pipeline
from mer_jax import motion_input
from mer_jax import predict as predict_lib
from mer_jax import schema
from mer_jax import steps as steps_lib
from mer_jax import train_state
from mer_jax.models import create_model

FOLD_AXIS = "folds"


@dataclasses.dataclass(frozen=True)
class Member:
  """One training of a run: LOSO fold `fold` (position `fold_index`) under run seed `seed`."""
  fold_index: int
  fold: input_pipeline.Fold
  seed: int
  is_first_seed: bool

  @property
  def name(self) -> str:
    """The member's predictions name: the fold's, plus `.seed<N>` for the extra seeds."""
    return self.fold.name if self.is_first_seed else f"{self.fold.name}.seed{self.seed}"


@dataclasses.dataclass(frozen=True)
class Layout:
  """How a chunk's members sit on the devices."""
  fold_devices: int    # Size of the `folds` mesh axis.
  data_devices: int    # Size of the `data` mesh axis (each member's batch split over it).
  num_members: int     # Real members of the chunk.
  padded_members: int  # num_members rounded up to a multiple of fold_devices.


def run_seeds(config: ml_collections.ConfigDict) -> list[int]:
  """The run seeds: `config.seed` and the `num_seeds - 1` after it."""
  return [config.seed + s for s in range(config.get("num_seeds", 1))]


def folds_per_chunk(config: ml_collections.ConfigDict, num_folds: int) -> int:
  """`config.parallel_folds` resolved (-1: every fold)."""
  k = config.get("parallel_folds", 1)
  return num_folds if k == -1 else k


def uses_device_loop(config: ml_collections.ConfigDict) -> bool:
  """True when the run trains here: parallel folds, several seeds or `config.device_loop`."""
  return (config.get("parallel_folds", 1) != 1 or config.get("num_seeds", 1) != 1
          or bool(config.get("device_loop", False)))


def plan_chunks(config: ml_collections.ConfigDict, folds: Sequence) -> list[list[Member]]:
  """The run's chunks: consecutive slices of `folds`, each with every seed (fold-major).

  Raises:
    ValueError: `parallel_folds` is larger than the number of folds.
  """
  k = folds_per_chunk(config, len(folds))
  if k > len(folds):
    raise ValueError(f"config.parallel_folds={k} is larger than the run's {len(folds)} "
                     "fold(s); use -1 for all folds at once")
  seeds = run_seeds(config)
  chunks = []
  for start in range(0, len(folds), k):
    chunks.append([Member(fold_index=start + i, fold=fold, seed=seed,
                          is_first_seed=seed == seeds[0])
                   for i, fold in enumerate(folds[start:start + k]) for seed in seeds])
  return chunks


SCAN_STEPS = ("auto", "scan", "dispatch")


def scan_steps(config: ml_collections.ConfigDict, platform: str) -> bool:
  """Whether the steps between two checkpoints run as one `lax.scan` on `platform`.

  `config.scan_steps`: "scan", "dispatch" (one call per step; the data still stays on the
  device) or "auto": scan on accelerators, dispatch on CPU, where XLA runs a step inside a
  while loop about 4x slower than the same step called on its own (measured here:
  ~90 vs ~25 ms for the demo model's step, 2-core CPU, JAX 0.10).
  """
  mode = config.get("scan_steps", "auto")
  if mode not in SCAN_STEPS:
    raise ValueError(f"config.scan_steps must be one of {SCAN_STEPS}, got {mode!r}")
  return mode == "scan" or (mode == "auto" and platform != "cpu")


def check_plan(config: ml_collections.ConfigDict, folds: Sequence, num_devices: int) -> None:
  """Every chunk's layout, checked before any data is loaded or computed (raises ValueError)."""
  transfer = config.get("transfer", None)
  if (transfer is not None and transfer.get("policy", None) in ("II", "III")
      and transfer.get("specific_layer", None) == "auto"):
    raise ValueError(
        f"config.parallel_folds={config.get('parallel_folds', 1)} / config.num_seeds="
        f"{config.get('num_seeds', 1)} / config.device_loop={config.get('device_loop', False)} "
        "train every member of a chunk with one config, but config.transfer.specific_layer="
        "'auto' chooses a layer per fold (Grad-CAM on its training subjects); name the layer, "
        "or train one fold at a time (parallel_folds=1, num_seeds=1, device_loop=False)")
  if jax.process_count() > 1:
    raise ValueError("config.parallel_folds / config.num_seeds run in a single process; "
                     "with several processes set config.parallel_folds=1 and num_seeds=1")
  for members in plan_chunks(config, folds):
    layout(len(members), num_devices, batch_size=config.batch_size,
           eval_batch_size=config.eval_batch_size, fold_devices=config.get("fold_devices", 0))


def layout(num_members: int, num_devices: int, *, batch_size: int, eval_batch_size: int,
           fold_devices: int = 0) -> Layout:
  """The mesh of a chunk of `num_members` members on `num_devices` devices.

  Raises:
    ValueError (before any compute): `fold_devices` does not divide the device
      count, or a batch size does not divide over the resulting data axis.
  """
  if fold_devices < 0:
    raise ValueError(f"config.fold_devices must be >= 0 (0: automatic), got {fold_devices}")
  if fold_devices == 0:
    fold_devices = max(d for d in range(1, num_devices + 1)
                       if num_devices % d == 0 and d <= max(1, num_members))
  elif num_devices % fold_devices:
    raise ValueError(f"config.fold_devices={fold_devices} does not divide the {num_devices} "
                     f"device(s); use a divisor of {num_devices} or 0 (automatic)")
  data_devices = num_devices // fold_devices
  for field, size in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
    if size % data_devices:
      raise ValueError(
          f"config.{field}={size} does not divide over the data axis of {data_devices} "
          f"device(s) ({num_devices} devices / config.fold_devices={fold_devices} on the fold "
          f"axis); make it a multiple of {data_devices} or set config.fold_devices")
  padded = math.ceil(num_members / fold_devices) * fold_devices
  return Layout(fold_devices=fold_devices, data_devices=data_devices, num_members=num_members,
                padded_members=padded)


def device_batch(features: jax.Array, labels: jax.Array, rows: jax.Array,
                 flips: Optional[jax.Array], normalization: str) -> dict:
  """A member's batch gathered on the device: `frames` `(b, 1, S, S, C)`, `mask`, `label`.

  Args:
    features: `(num_clips, S, S, C)` float32, unnormalised flow features.
    labels: `(num_clips,)` int32.
    rows: `(b,)` int32 clip-index rows; flips: `(b,)` bool or None.
  """
  maps = features[rows]
  if flips is not None:
    maps = motion_input.flip_maps(maps, flips, xp=jnp)
  return {"frames": motion_input.normalize(maps, normalization, xp=jnp)[:, None],
          "mask": jnp.ones((rows.shape[0], 1), bool), "label": labels[rows]}


@dataclasses.dataclass(frozen=True)
class FlowBatcher:
  """Flow draws (`rows`, `flips`) -> a model batch on the device (`device_batch`). Hashable."""
  normalization: str
  flip: bool

  def __call__(self, arrays: dict, draws: dict) -> dict:
    flips = draws["flips"] if self.flip and "flips" in draws else None
    return device_batch(arrays["features"], arrays["labels"], draws["rows"], flips,
                        self.normalization)


class FlowInputs:
  """Cached flow features as device-resident inputs.

  The interface every device-resident input offers `ChunkTrainer` (see also
  `mer_jax.resident_frames.FrameInputs`): `arrays` (host arrays placed once on
  every device), `batcher` (draws -> batch, inside the jitted step),
  `schedule(subjects, batch_size=, fold_seed=)` (a member's training draws,
  `.steps(first, count)`) and `eval_draws(rows)`.
  """

  def __init__(self, flow_features: motion_input.FlowFeatures, index,
               config: ml_collections.ConfigDict):
    self.index, self.config = index, config
    self.arrays = {"features": flow_features.features.astype(np.float32),
                   "labels": index.label.astype(np.int32)}
    self.batcher = FlowBatcher(config.flow.normalize, bool(config.input.flip))

  def schedule(self, subjects: Sequence[str], *, batch_size: int, fold_seed: int
               ) -> motion_input.TrainSchedule:
    """The serial flow trainer's stream (seeded `fold_seed * 1009`, process 0)."""
    return motion_input.TrainSchedule(self.index, subjects, batch_size=batch_size,
                                      seed=fold_seed * 1009, flip=self.config.input.flip)

  def eval_draws(self, rows: np.ndarray) -> dict[str, np.ndarray]:
    return {"rows": np.asarray(rows, np.int32)}


@functools.lru_cache(maxsize=16)
def _train_program(mesh: jax.sharding.Mesh, batcher: Callable, *, label_smoothing: float,
                   scan: bool) -> Callable:
  """jit(shard_map(vmap over local members of `steps.train_step`)), per step or scanned.

  `batcher(arrays, draws)` makes a member's batch from the resident arrays and its draws.
  `scan=True`: `lax.scan` over a block of steps (draws carry a steps axis).
  `scan=False`: one step per call (the host dispatches each; the data stays on the device).
  """
  P = jax.sharding.PartitionSpec

  def per_device(states, arrays, draws, step_numbers, dropout_keys, class_weights):
    keys = jax.random.wrap_key_data(dropout_keys)

    def member_step(state, member_draws, key, weights, step):
      return steps_lib.train_step(state, batcher(arrays, member_draws),
                                  jax.random.fold_in(key, step), weights,
                                  label_smoothing=label_smoothing)

    def one_step(carry, xs):
      step_draws, step = xs
      return jax.vmap(member_step, in_axes=(0, 0, 0, 0, None))(
          carry, step_draws, keys, class_weights, step)

    if not scan:
      return one_step(states, (draws, step_numbers))
    states, metrics = jax.lax.scan(
        one_step, states, (jax.tree.map(lambda d: d.swapaxes(0, 1), draws), step_numbers))
    return states, jax.tree.map(lambda m: m.swapaxes(0, 1), metrics)  # (members, steps)

  draws_spec = (P(FOLD_AXIS, None, steps_lib.AXIS) if scan else P(FOLD_AXIS, steps_lib.AXIS))
  program = jax.shard_map(
      per_device, mesh=mesh,
      in_specs=(P(FOLD_AXIS), P(), draws_spec, P(), P(FOLD_AXIS), P(FOLD_AXIS)),
      out_specs=(P(FOLD_AXIS), P(FOLD_AXIS)), check_vma=False)
  return jax.jit(program, donate_argnums=(0,))


@functools.lru_cache(maxsize=16)
def _eval_program(mesh: jax.sharding.Mesh, batcher: Callable) -> Callable:
  """jit(shard_map(vmap over local members of `steps.eval_step`)): probabilities `(M, B, C)`."""
  P = jax.sharding.PartitionSpec

  def per_device(states, arrays, draws):
    def member(state, member_draws):
      return steps_lib.eval_step(state, batcher(arrays, member_draws))
    return jax.vmap(member)(states, draws)

  return jax.jit(jax.shard_map(
      per_device, mesh=mesh, in_specs=(P(FOLD_AXIS), P(), P(FOLD_AXIS, steps_lib.AXIS)),
      out_specs=P(FOLD_AXIS, steps_lib.AXIS), check_vma=False))


def _stack(trees: Sequence) -> object:
  """Stacks pytrees of one structure leaf by leaf (static fields taken from the first)."""
  leaves = [jax.tree.leaves(t) for t in trees]
  return jax.tree.unflatten(jax.tree.structure(trees[0]),
                            [np.stack(column) for column in zip(*leaves)])


def _host(tree):
  # An explicit copy: on CPU a device buffer may alias memory the next (donating) step reuses.
  return jax.tree.map(lambda x: np.array(x, copy=True), tree)


class ChunkTrainer:
  """Trains one chunk of members as one program and predicts their held-out clips."""

  def __init__(self, config: ml_collections.ConfigDict, members: Sequence[Member], index,
               inputs, devices: Sequence[jax.Device]):
    """`inputs`: the device-resident inputs (`FlowInputs` or `resident_frames.FrameInputs`)."""
    self.config = config
    self.inputs = inputs
    self.members = list(members)
    self.index = index
    self.layout = layout(len(members), len(devices), batch_size=config.batch_size,
                         eval_batch_size=config.eval_batch_size,
                         fold_devices=config.get("fold_devices", 0))
    padded = self.members + [self.members[-1]] * (self.layout.padded_members - len(members))
    self.padded = padded
    self.mesh = jax.sharding.Mesh(
        np.asarray(devices).reshape(self.layout.fold_devices, self.layout.data_devices),
        (FOLD_AXIS, steps_lib.AXIS))
    member_sharding = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec(FOLD_AXIS))
    self.member_sharding = member_sharding
    replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
    self.arrays = jax.device_put(inputs.arrays, replicated)

    self.model = create_model(train_state.model_config(config), num_classes=schema.NUM_CLASSES,
                              dtype=jnp.bfloat16 if config.half_precision else jnp.float32)
    inits, keys = [], []
    for m in padded:
      init_rng, dropout_rng = train_state.fold_rngs(config, m.fold_index, m.seed)
      inits.append(train_state.initial_state(config, self.model, init_rng))
      keys.append(np.asarray(jax.random.key_data(dropout_rng)))
    self.initial = _host(_stack(inits))
    self.dropout_keys = jax.device_put(np.stack(keys), member_sharding)
    self.class_weights = jax.device_put(
        np.stack([input_pipeline.loss_class_weights(config, index, m.fold.train_subjects)
                  for m in padded]), member_sharding)
    # The serial trainer's stream, member by member.
    self.schedules = [inputs.schedule(m.fold.train_subjects, batch_size=config.batch_size,
                                      fold_seed=train_state.fold_seed(config, m.fold_index, m.seed))
                      for m in padded]
    self.scan = scan_steps(config, devices[0].platform)
    self.train_program = _train_program(self.mesh, inputs.batcher,
                                        label_smoothing=config.label_smoothing, scan=self.scan)
    self.eval_program = _eval_program(self.mesh, inputs.batcher)

  # ---- the stacked state on the host and on the devices -------------------------------------
  def checkpoint_target(self) -> dict:
    """The host pytree a chunk checkpoint holds (running state, best state, its UF1 and step)."""
    n = self.layout.padded_members
    return {"state": self.initial, "best_state": self.initial,
            "best_uf1": np.full((n,), -1.0, np.float32), "best_step": np.zeros((n,), np.int32)}

  def place(self, tree):
    return jax.device_put(tree, self.member_sharding)

  # ---- training -----------------------------------------------------------------------------
  def train(self, device_state, first_step: int, last_step: int):
    """Steps `first_step + 1 .. last_step` (1-based, as the serial loop counts) in one scan.

    Returns `(device_state, metrics)`, metrics a dict of host `(members, steps)` arrays.
    """
    count = last_step - first_step
    draws = _stack([s.steps(first_step, count) for s in self.schedules])  # (M, steps, b, ..)
    if self.scan:
      step_numbers = jnp.arange(first_step + 1, last_step + 1, dtype=jnp.int32)
      device_state, metrics = self.train_program(
          device_state, self.arrays, self.place(draws), step_numbers, self.dropout_keys,
          self.class_weights)
    else:
      per_step = []
      for t in range(count):
        device_state, step_metrics = self.train_program(
            device_state, self.arrays, self.place({k: v[:, t] for k, v in draws.items()}),
            np.int32(first_step + 1 + t), self.dropout_keys, self.class_weights)
        per_step.append(step_metrics)
      metrics = jax.tree.map(lambda *m: jnp.stack(m, axis=1), *per_step)
    return device_state, jax.tree.map(np.asarray, metrics)

  def check_finite(self, metrics: dict, first_step: int, directory: str,
                   last_good_step: Optional[int]) -> None:
    """Raises `steps.NonFiniteLossError` naming the first member and step with a non-finite loss."""
    bad = ~(np.isfinite(metrics["loss"]) & np.isfinite(metrics["param_norm"]))
    if bad[:self.layout.num_members].any():
      member, t = np.argwhere(bad[:self.layout.num_members])[0]
      m = self.members[member]
      raise steps_lib.NonFiniteLossError(
          f"fold {m.fold.name} (seed {m.seed}): training loss is {metrics['loss'][member, t]} "
          f"(parameter norm {metrics['param_norm'][member, t]}) at step {first_step + t + 1}; "
          f"stopping the run. The last good checkpoint (step {last_good_step}) is kept in "
          f"{directory}. Lower config.learning_rate or set config.grad_clip_norm.")

  # ---- prediction ---------------------------------------------------------------------------
  def predict(self, device_state, subjects_of: Callable[[Member], Sequence[str]]) -> list[list]:
    """Every member's predictions for its subjects (`subjects_of(member)`), in index order.

    Returns one list of prediction dicts per real member (the fields of
    `mer_jax.predict.predict`).
    """
    rows_of = [self.index.rows_of(subjects_of(m)) for m in self.padded]
    for m, rows in zip(self.members, rows_of):
      if not len(rows):
        raise ValueError(f"no clips for subjects {list(subjects_of(m))} (fold {m.fold.name})")
    width = self.config.eval_batch_size
    longest = max(len(r) for r in rows_of)
    probabilities = [[] for _ in self.padded]
    for start in range(0, longest, width):
      block = np.zeros((len(self.padded), width), np.int32)
      for i, rows in enumerate(rows_of):
        part = rows[start:start + width]
        block[i, :len(part)] = part
      draws = _stack([self.inputs.eval_draws(b) for b in block])
      probs = np.asarray(self.eval_program(device_state, self.arrays, self.place(draws)))
      for i, rows in enumerate(rows_of):
        probabilities[i].append(probs[i, :max(0, min(width, len(rows) - start))])
    results = []
    for i, m in enumerate(self.members):
      probs = np.concatenate(probabilities[i])
      results.append([predict_lib.prediction_record(
          self.index.clip_id[row], str(self.index.subject_key[row]).split("/", 1)[1],
          self.index.dataset[row], self.index.label[row], p)
                      for row, p in zip(rows_of[i], probs)])
    return results


def _select_best(target: dict, new_state, uf1: np.ndarray, step: int) -> dict:
  """Keeps, member by member, the state with the highest validation UF1 (ties: earlier)."""
  better = uf1 > target["best_uf1"]
  if not better.any():
    return target
  def pick(best, new):
    mask = better.reshape((-1,) + (1,) * (np.ndim(new) - 1))
    return np.where(mask, new, best)
  return {"state": target["state"],
          "best_state": jax.tree.map(pick, target["best_state"], new_state),
          "best_uf1": np.where(better, uf1, target["best_uf1"]).astype(np.float32),
          "best_step": np.where(better, step, target["best_step"]).astype(np.int32)}


def train_chunk(config: ml_collections.ConfigDict, members: Sequence[Member], index,
                inputs, checkpoint_dir: str, *,
                writer=None, progress: Optional[Callable[[int, int, float], None]] = None,
                devices: Optional[Sequence[jax.Device]] = None) -> list[list[dict]]:
  """Trains a chunk of members together (resuming from its checkpoint); their test predictions.

  Args:
    members: the chunk (`plan_chunks`).
    inputs: the device-resident inputs (`FlowInputs`, `resident_frames.FrameInputs`).
    checkpoint_dir: the chunk's Orbax directory.
    writer: optional metric writer (`write_scalars(step, dict)`).
    progress: optional `progress(step, num_steps, member_steps_per_second)` callback.
    devices: the devices to use (default: every device).

  Returns:
    One predictions list per member (held-out subject's clips), each dict
    with the fields of `mer_jax.predict.predict` plus `fold`, `seed` and
    `selected_step`.
  """
  trainer = ChunkTrainer(config, members, index, inputs,
                         list(devices) if devices is not None else jax.devices())
  validation = config.model_selection == "validation"
  manager = checkpoints.create_manager(checkpoint_dir, validation_selection=False)
  target, start_step = checkpoints.restore_latest(manager, trainer.checkpoint_target())
  if target is None:
    target = trainer.checkpoint_target()
  else:
    logging.info("chunk %s: resumed from step %d", checkpoint_dir, start_step)
  logging.info("chunk of %d member(s) (%s), mesh %d fold x %d data device(s), %d padded",
               len(members), ", ".join(m.name for m in members[:4]) +
               (", ..." if len(members) > 4 else ""), trainer.layout.fold_devices,
               trainer.layout.data_devices, trainer.layout.padded_members - len(members))
  device_state = trainer.place(target["state"])
  num_steps = config.num_train_steps
  every = config.checkpoint_every_steps
  step = start_step
  while step < num_steps:
    last = min(num_steps, (step // every + 1) * every)
    began = time.time()
    device_state, metrics = trainer.train(device_state, step, last)
    trainer.check_finite(metrics, step, checkpoint_dir, manager.latest_step())
    seconds = time.time() - began
    host_state = _host(device_state)
    target = {**target, "state": host_state}
    if validation:
      reports = trainer.predict(device_state, lambda m: m.fold.validation_subjects)
      uf1 = np.array([evaluation.pooled_report(r)["overall"]["uf1"] for r in reports]
                     + [-1.0] * (trainer.layout.padded_members - len(members)), np.float32)
      target = _select_best(target, host_state, uf1, last)
    checkpoints.save(manager, last, target)
    if writer is not None:
      real = slice(0, len(members))
      writer.write_scalars(last, {
          **{f"{m.name}/train_loss": float(metrics["loss"][i, -1]) for i, m in enumerate(members)},
          "train/mean_loss": float(np.mean(metrics["loss"][real, -1])),
          "train/mean_accuracy": float(np.mean(metrics["accuracy"][real, -1]))})
    if progress is not None:
      progress(last, num_steps, (last - step) * len(members) / max(seconds, 1e-9))
    step = last
  checkpoints.wait(manager)
  manager.close()

  if validation:
    final = trainer.place(target["best_state"])
    selected = [int(s) for s in target["best_step"]]
  else:
    final = device_state
    selected = [num_steps] * len(members)
  predictions = trainer.predict(final, lambda m: [m.fold.test_subject])
  for m, records, chosen in zip(members, predictions, selected):
    for record in records:
      record["fold"] = m.fold.name
      record["selected_step"] = chosen
      if not m.is_first_seed:
        record["seed"] = m.seed
  return predictions


def seed_summary(predictions_by_seed: dict[int, list[dict]]) -> dict:
  """Pooled metrics per seed and their mean and standard deviation (sample std, ddof=1).

  Args:
    predictions_by_seed: `{seed: every fold's predictions under that seed}`.
  """
  per_seed = []
  for seed, predictions in sorted(predictions_by_seed.items()):
    report = evaluation.pooled_report(predictions)
    per_seed.append({"seed": seed,
                     **{k: report["overall"][k] for k in ("uf1", "uar", "accuracy")},
                     "per_dataset_uf1": {d: r["uf1"] for d, r in
                                         sorted(report.get("per_dataset", {}).items())}})
  summary = {}
  for key in ("uf1", "uar", "accuracy"):
    values = np.array([s[key] for s in per_seed], np.float64)
    summary[key] = {"mean": float(values.mean()),
                    "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0}
  return {"per_seed": per_seed, "mean_std": summary, "num_seeds": len(per_seed)}
