"""Test-wide setup: 8 simulated CPU devices, so multi-device code paths run for real."""

import os

# Must happen before JAX initialises its backend (first jax.devices() call).
os.environ.setdefault("JAX_NUM_CPU_DEVICES", "8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
