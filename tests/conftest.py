"""Test-wide setup: 8 simulated CPU devices, so multi-device code paths run for real."""

import os

# Must happen before JAX initialises its backend (first jax.devices() call).
os.environ.setdefault("JAX_NUM_CPU_DEVICES", "8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The tests' programs are tiny and compiled once each: XLA's optimisation passes cost more
# than they save (about 40 % of a trainer test's time here). No test measures speed, and
# every numeric comparison has a tolerance. Subprocesses started by tests inherit this.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
# JAX's persistent compilation cache, one fresh folder per test session: many tests start
# fresh processes (benchmark children, kill-and-resume, multi-process training) and the two
# xdist workers run the same small programs, so each program is compiled once per session
# instead of once per process (compilation is much of the suite's time). Set here, in the
# controller, before the workers and subprocesses start: they inherit it. Removed at the end.
_OWN_COMPILATION_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_COMPILATION_CACHE:
  import tempfile  # pylint: disable=g-import-not-at-top
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="mer_jax_tests_xla_cache_")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


import contextlib  # noqa: E402
import pytest  # noqa: E402  (after the environment set-up above)


@contextlib.contextmanager
def xla_optimised():
  """XLA's optimisations back on inside the block (the suite turns most off, above).

  For set-up whose time goes into *running* a heavy program rather than compiling it: TV-L1
  over every frame pair of a long video runs about 4x faster optimised (6.1 s -> 1.4 s for a
  tiny spotting video here) and compiles once.
  """
  import jax  # pylint: disable=import-outside-toplevel
  previous = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", False)
  try:
    yield
  finally:
    jax.config.update("jax_disable_most_optimizations", previous)


def pytest_sessionfinish(session, exitstatus):  # pylint: disable=unused-argument
  """The process that made the compilation cache folder removes it (not xdist's workers)."""
  if _OWN_COMPILATION_CACHE and not hasattr(session.config, "workerinput"):
    import shutil  # pylint: disable=import-outside-toplevel
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):  # pylint: disable=unused-argument
  """Make `pytest.mark.xdist_group` hold under pytest 9.

  pytest-xdist (3.8) groups a test by renaming `item._nodeid` to "<nodeid>@<group>" on each
  worker, and its `loadgroup` scheduler keeps equal suffixes on one worker. pytest 9 derives
  `item.nodeid` from `item._id` instead, so the rename is lost and every group is silently split:
  tests sharing an expensive session fixture (a trained run) then build it on every worker.
  Runs after xdist's hook and carries its rename over to `_id`; a no-op without xdist or once
  xdist renames `_id` itself.
  """
  for item in items:
    grouped = getattr(item, "_nodeid", None)
    if isinstance(grouped, str) and grouped != item.nodeid:
      item._id = type(item._id).parse(grouped)  # pylint: disable=protected-access


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  """A TFDS data_dir holding synthetic_me/tiny, built once per test session (per xdist worker)
  with the real TFDS machinery. Tests only read it."""
  from configs import default as default_config  # pylint: disable=import-outside-toplevel
  from mer_jax import input_pipeline  # pylint: disable=import-outside-toplevel
  path = str(tmp_path_factory.mktemp("tfds"))
  config = default_config.get_config("tiny")
  config.dataset.data_dir = path
  input_pipeline.prepare_builder(input_pipeline.get_builder(config.dataset), config.dataset)
  return path


def tiny_config(data_dir: str, **overrides):
  """`configs/default.py:tiny` reading the session's built `data_dir`, with dotted-field overrides
  (`tiny_config(d, **{"input.num_frames": 4})`)."""
  from configs import default as default_config  # pylint: disable=import-outside-toplevel
  config = default_config.get_config("tiny")
  config.dataset.data_dir = data_dir
  config.dataset.build_if_missing = False
  for key, value in overrides.items():
    target = config
    *parents, leaf = key.split(".")
    for parent in parents:
      target = target[parent]
    target[leaf] = value
  return config


def tiny_policy_config(data_dir: str, policy: str, specific_layer=None):
  """The Section 3.1 config shrunk to seconds: 2-stage width-4 ResNet, 32x32, 2 frames, 2 steps."""
  from configs import paper_s31  # pylint: disable=import-outside-toplevel
  config = paper_s31.get_config(f"policy={policy}")
  config.dataset.builder_config = "tiny"
  config.dataset.data_dir = data_dir
  config.dataset.build_if_missing = False
  config.input.num_frames = 2
  config.input.image_size = 32
  config.model.encoder_kwargs = {"stage_sizes": (1, 1), "block": "basic", "base_width": 4}
  config.transfer.specific_layer = specific_layer
  config.folds = ("s00",)
  config.batch_size = 8
  config.eval_batch_size = 8
  config.num_train_steps = 2
  config.warmup_steps = 0
  config.learning_rate = 1e-2
  config.log_every_steps = 2
  config.checkpoint_every_steps = 2
  return config


# The specific layer l_s each policy run uses (policy I freezes the whole encoder).
POLICY_LAYERS = {"I": None, "II": "layer2", "III": "layer1"}


@pytest.fixture(scope="session")
def policy_run(data_dir, tmp_path_factory):
  """`policy_run(policy)` -> `(config, workdir, results)` of a tiny one-fold run, trained once
  per session (per xdist worker) and shared by the policy, Grad-CAM report and workdir tests."""
  cache = {}

  def get(policy: str):
    if policy not in cache:
      from mer_jax import train  # pylint: disable=import-outside-toplevel
      config = tiny_policy_config(data_dir, policy, POLICY_LAYERS[policy])
      workdir = str(tmp_path_factory.mktemp(f"policy_{policy}"))
      cache[policy] = (config, workdir, train.train_and_evaluate(config, workdir))
    return cache[policy]
  return get
