"""The one per-device train step gives the same parameters under pmap and shard_map."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default as default_config
from mer_jax import config_checks
from mer_jax import input_pipeline
from mer_jax import steps as steps_lib
from mer_jax import train_state
from mer_jax.models import create_model


def _batches(config, num, seed=0):
  rng = np.random.default_rng(seed)
  cfg = config.input
  for _ in range(num):
    yield {
        "frames": rng.integers(0, 256, (config.batch_size, cfg.num_frames, cfg.image_size,
                                        cfg.image_size, 3), dtype=np.uint8),
        "mask": np.ones((config.batch_size, cfg.num_frames), bool),
        "label": rng.integers(0, 3, config.batch_size).astype(np.int32),
    }


def _run(mode, config, num_steps=3):
  mesh = jax.sharding.Mesh(np.array(jax.devices()), (steps_lib.AXIS,))
  model = create_model(config.model)
  state = train_state.initial_state(config, model, jax.random.key(0))
  steps = steps_lib.compile_steps(mode, mesh, label_smoothing=0.0)
  device_state = steps_lib.place_state(state, mode, mesh)
  losses = []
  for i, batch in enumerate(_batches(config, num_steps)):
    device_batch = input_pipeline.shard_for_devices(batch, mode=mode, mesh=mesh)
    device_state, metrics = steps.train(device_state, device_batch, jax.random.key(i),
                                          jnp.ones(3, jnp.float32))
    losses.append(float(np.asarray(metrics["loss"].addressable_data(0)).reshape(-1)[0]))
  return steps_lib.host_state(device_state, mode), losses


def test_eight_devices_are_simulated():
  assert jax.device_count() == 8


@pytest.mark.slow
def test_pmap_and_shard_map_agree():
  config = default_config.get_config("tiny")
  state_pmap, losses_pmap = _run("pmap", config)
  state_shard, losses_shard = _run("shard_map", config)
  assert int(state_pmap.step) == int(state_shard.step) == 3
  np.testing.assert_allclose(losses_pmap, losses_shard, rtol=1e-5)
  initial = train_state.initial_state(config, create_model(config.model), jax.random.key(0))
  moved = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), state_pmap.params,
                       initial.params)
  assert max(jax.tree.leaves(moved)) > 1e-4  # The steps did train.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               state_pmap.params, state_shard.params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               state_pmap.batch_stats, state_shard.batch_stats)


def test_data_parallel_step_equals_single_device_full_batch():
  # Averaging gradients over 8 devices equals one device taking the whole batch
  # (BatchNorm off: per-device batch statistics would differ by construction).
  config = default_config.get_config("tiny")
  config.model.encoder_kwargs.widths = (8,)
  config.model.dropout_rate = 0.0
  config.model.spatial_pool = "mean"
  config.model.spatial_pool_kwargs = {}
  model = create_model(config.model)
  state = train_state.initial_state(config, model, jax.random.key(1))
  batch = next(_batches(config, 1, seed=5))

  def loss_fn(params):
    # Evaluation-mode BN: a pure function of params, identical on every device.
    logits = model.apply({"params": params, "batch_stats": state.batch_stats},
                         batch["frames"], batch["mask"], train=False)
    return jnp.mean(steps_lib.clip_loss(logits, batch["label"], batch["mask"], 0.0))

  full_grad = jax.grad(loss_fn)(state.params)

  def per_device(params, b):
    def device_loss(p):
      logits = model.apply({"params": p, "batch_stats": state.batch_stats}, b["frames"],
                           b["mask"], train=False)
      return jnp.mean(steps_lib.clip_loss(logits, b["label"], b["mask"], 0.0))
    return jax.lax.pmean(jax.grad(device_loss)(params), steps_lib.AXIS)

  mesh = jax.sharding.Mesh(np.array(jax.devices()), (steps_lib.AXIS,))
  P = jax.sharding.PartitionSpec
  sharded = jax.jit(steps_lib.per_device(per_device, mesh, in_specs=(P(), P(steps_lib.AXIS)),
                                     out_specs=P()))
  grads = sharded(state.params, batch)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6),
               full_grad, grads)


def test_bad_step_mode_is_named(tmp_path):
  config = default_config.get_config("tiny")
  config.step_mode = "pjit"
  with pytest.raises(ValueError, match="config.step_mode"):
    config_checks.validate_config(config, str(tmp_path))
