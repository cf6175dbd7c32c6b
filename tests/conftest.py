"""Test-wide setup: 8 simulated CPU devices, so multi-device code paths run for real."""

import os

# Must happen before JAX initialises its backend (first jax.devices() call).
os.environ.setdefault("JAX_NUM_CPU_DEVICES", "8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


import pytest  # noqa: E402  (after the environment set-up above)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  """A TFDS data_dir holding synthetic_me/tiny, built once per test session (per xdist worker)
  with the real TFDS machinery. Tests only read it."""
  from configs import tiny  # pylint: disable=import-outside-toplevel
  from mer_jax import input_pipeline  # pylint: disable=import-outside-toplevel
  path = str(tmp_path_factory.mktemp("tfds"))
  config = tiny.get_config()
  config.dataset.data_dir = path
  input_pipeline.prepare_builder(input_pipeline.get_builder(config.dataset), config.dataset)
  return path
