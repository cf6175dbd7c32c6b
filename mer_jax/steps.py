"""The per-device steps and their placement under `jax.pmap` or `jax.shard_map`.

The training step is written once, for one device's shard of the batch, with
named-axis collectives over the axis `AXIS` ("data"); `compile_steps` wraps it
for `config.step_mode`:

* "pmap": `jax.pmap` over the local devices; states and batches carry a
  leading device axis.
* "shard_map": `jax.jit(jax.shard_map(...))` over a device `Mesh`; states are
  replicated global arrays, batches are sharded over the mesh's data axis.

`place_state` / `host_state` / `local_outputs` move states and outputs between
the host and either layout. Nothing here reads data or writes files.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mer_jax.train_state import TrainState

AXIS = "data"
STEP_MODES = ("pmap", "shard_map")


class NonFiniteLossError(FloatingPointError):
  """Raised when the training loss or the parameters become NaN or Inf (serial or parallel)."""


def clip_loss(logits: jnp.ndarray, labels: jnp.ndarray, mask: jnp.ndarray,
               label_smoothing: float) -> jnp.ndarray:
  """Cross-entropy per clip `(B,)`; per-frame logits `(B, N, C)` average over valid frames."""
  num_classes = logits.shape[-1]
  targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
  if logits.ndim == 3:
    per_frame = optax.softmax_cross_entropy(logits, targets[:, None, :])
    weights = mask.astype(jnp.float32)
    return jnp.sum(per_frame * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1.0)
  return optax.softmax_cross_entropy(logits, targets)


def clip_probabilities(logits: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
  """Class probabilities per clip `(B, C)`; per-frame models average valid frames' softmax."""
  probs = jax.nn.softmax(logits, axis=-1)
  if probs.ndim == 3:
    weights = mask.astype(jnp.float32)[..., None]
    probs = jnp.sum(probs * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1.0)
  return probs


def train_step(state: TrainState, batch: dict, rng: jax.Array, class_weights: jnp.ndarray, *,
               label_smoothing: float) -> tuple[TrainState, dict]:
  """One data-parallel SGD step on this device's shard of the batch.

  Args:
    state: the replicated train state.
    batch: this device's `frames` (b, N, H, W, 3) uint8, `mask` (b, N) bool,
      `label` (b,) int32.
    rng: dropout key, the same on every device (folded with the device index).
    class_weights: (num_classes,) float32 loss weight per class.

  The loss is the class-weighted mean over the global batch (the same for any
  number of shards); gradients are summed and BatchNorm statistics and metrics
  averaged over the "data" axis, so every device ends with the same state.
  """
  rng = jax.random.fold_in(rng, jax.lax.axis_index(AXIS))
  weights = class_weights[batch["label"]]
  # The class-weighted mean over the *global* batch: each shard's weighted sum over the
  # total weight of every shard, gradients summed. A mean of per-shard means would change
  # with the number of shards whenever shards carry different total weights.
  total_weight = jax.lax.psum(jnp.sum(weights), AXIS)

  def loss_fn(params):
    logits, updates = state.apply_fn(
        {"params": params, "batch_stats": state.batch_stats}, batch["frames"], batch["mask"],
        train=True, rngs={"dropout": rng}, mutable=["batch_stats"])
    per_clip = clip_loss(logits, batch["label"], batch["mask"], label_smoothing)
    loss = jnp.sum(per_clip * weights) / jnp.maximum(total_weight, 1e-6)
    return loss, (logits, updates)

  (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  grads = jax.lax.psum(grads, AXIS)
  loss = jax.lax.psum(loss, AXIS)
  batch_stats = jax.lax.pmean(updates.get("batch_stats", state.batch_stats), AXIS)
  new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  predictions = jnp.argmax(clip_probabilities(logits, batch["mask"]), axis=-1)
  metrics = {
      "loss": loss,
      "accuracy": jax.lax.pmean(jnp.mean(predictions == batch["label"]), AXIS),
      "grad_norm": optax.tree.norm(grads),
      # The loss is computed before the update; the updated parameters are
      # checked too so that a diverged state is never checkpointed.
      "param_norm": optax.tree.norm(new_state.params),
  }
  return new_state, metrics


def eval_step(state: TrainState, batch: dict) -> jnp.ndarray:
  """Class probabilities `(B_device, C)` for this device's shard."""
  logits = state.apply_fn({"params": state.params, "batch_stats": state.batch_stats},
                          batch["frames"], batch["mask"], train=False)
  return clip_probabilities(logits, batch["mask"])


@flax.struct.dataclass
class Steps:
  """The compiled train and eval steps of one run (shared by every fold: same shapes)."""
  train: Callable = flax.struct.field(pytree_node=False)
  eval: Callable = flax.struct.field(pytree_node=False)


def compile_steps(mode: str, mesh: jax.sharding.Mesh, *, label_smoothing: float) -> Steps:
  """Wraps the per-device steps for `mode` ("pmap" or "shard_map").

  The wrapped functions are created once per run, so every fold reuses the
  same compiled executables (the shapes do not change between folds).
  """
  train = functools.partial(train_step, label_smoothing=label_smoothing)
  if mode == "pmap":
    return Steps(train=jax.pmap(train, axis_name=AXIS, in_axes=(0, 0, None, None),
                                donate_argnums=(0,)),
                 eval=jax.pmap(eval_step, axis_name=AXIS))
  P = jax.sharding.PartitionSpec
  return Steps(
      train=jax.jit(per_device(train, mesh, in_specs=(P(), P(AXIS), P(), P()),
                               out_specs=(P(), P())), donate_argnums=(0,)),
      eval=jax.jit(per_device(eval_step, mesh, in_specs=(P(), P(AXIS)), out_specs=P(AXIS))))


def per_device(fn: Callable, mesh: jax.sharding.Mesh, *, in_specs, out_specs) -> Callable:
  """`jax.shard_map` of a per-device function written for pmap semantics.

  `check_vma=False`: with varying-manual-axes checking on, `jax.grad` inside
  shard_map of a loss with respect to *replicated* parameters already sums the
  gradient over devices (the transpose of the implicit broadcast), and the
  step's own `lax.pmean` would then return 8x the mean on 8 devices. Without
  the check every device sees local values, exactly as under pmap, so one step
  function serves both modes. The outputs declared replicated are replicated
  because the step all-reduces them itself.
  """
  return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)


def place_state(state: TrainState, mode: str, mesh: jax.sharding.Mesh) -> TrainState:
  """Replicates a host state on the devices: per local device (pmap) or over the mesh."""
  if mode == "pmap":
    return flax.jax_utils.replicate(state)
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  return jax.tree.map(
      lambda x: jax.make_array_from_callback(np.shape(x), replicated,
                                             lambda idx, x=x: np.asarray(x)[idx]), state)


def host_state(state: TrainState, mode: str) -> TrainState:
  """A host (numpy) copy of a replicated device state."""
  def first(x):
    # An explicit copy: on CPU np.asarray may alias the device buffer, which the
    # next (donating) train step overwrites while an async checkpoint save reads it.
    shard = np.array(x.addressable_data(0), copy=True)
    # `shard[0, ...]` keeps a 0-d array for scalars such as `step` (`shard[0]` would give a
    # NumPy scalar, which Orbax refuses as a restore target).
    return shard[0, ...] if mode == "pmap" else shard
  return jax.tree.map(first, state)


def local_outputs(x: jax.Array, mode: str) -> np.ndarray:
  """This process's rows of a per-example device output, in input order."""
  shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
  rows = [np.asarray(s.data) for s in shards]
  return np.concatenate([r.reshape((-1,) + r.shape[2:]) if mode == "pmap" else r for r in rows])


def parameter_fingerprint(params: Any) -> str:
  """A short digest of every parameter's bytes (for lockstep and determinism checks)."""
  digest = hashlib.sha256()
  for leaf in jax.tree.leaves(params):
    digest.update(np.ascontiguousarray(np.asarray(leaf, np.float32)).tobytes())
  return digest.hexdigest()[:16]
