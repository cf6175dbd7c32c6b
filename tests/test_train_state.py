"""Every fold's state has the same static data, so a run compiles its train step once."""

import jax
import jax.numpy as jnp
import numpy as np

from configs import default as default_config
from mer_jax import schema
from mer_jax import steps as steps_lib
from mer_jax import train_state
from mer_jax.models import create_model


def _fresh_model(config):
  # What each fold (serial) or chunk (fold-parallel) does: its own, equal, model instance.
  return create_model(train_state.model_config(config), num_classes=schema.NUM_CLASSES)


def test_equal_models_give_states_of_one_structure():
  config = default_config.get_config("input=flow,tiny")
  first, second = _fresh_model(config), _fresh_model(config)
  assert first == second and first is not second
  state_a = train_state.initial_state(config, first, jax.random.key(0))
  state_b = train_state.initial_state(config, second, jax.random.key(1))
  # TrainState keeps apply_fn and tx as static pytree data: unequal data, a new compile.
  assert jax.tree.structure(state_a) == jax.tree.structure(state_b)


def test_two_folds_compile_the_train_step_once():
  config = default_config.get_config("input=flow,tiny")
  mesh = jax.sharding.Mesh(np.array(jax.devices()), (steps_lib.AXIS,))
  steps = steps_lib.compile_steps("shard_map", mesh, label_smoothing=0.0)
  shape, dtype = train_state.model_input(config)
  batch_size = jax.device_count()
  batch = {"frames": np.zeros((batch_size,) + shape, dtype),
           "mask": np.ones((batch_size, shape[0]), bool),
           "label": np.zeros((batch_size,), np.int32)}
  for fold in range(2):
    state = train_state.initial_state(config, _fresh_model(config), jax.random.key(fold))
    device_state = steps_lib.place_state(state, "shard_map", mesh)
    device_state, _ = steps.train(device_state, batch, jax.random.key(fold),
                                  jnp.ones(schema.NUM_CLASSES, jnp.float32))
  assert steps.train._cache_size() == 1  # pylint: disable=protected-access
