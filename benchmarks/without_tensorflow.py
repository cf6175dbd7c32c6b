"""Importing this module makes `import tensorflow` fail, as on a machine without TensorFlow.

    python -c "import benchmarks.without_tensorflow; import mer_jax.train; ..."

Used to prove the runtime needs no TensorFlow (tests/test_tf_free.py, benchmarks/device_check.sh).
`sys.modules["tensorflow"] = None` is not enough: etils and TFDS take any `tensorflow` entry in
`sys.modules` to mean TensorFlow is loaded, and they call `importlib.util.find_spec`, which must
then answer None. So every meta-path finder is wrapped so that it never finds `tensorflow*`.
"""

import sys


class _WithoutTensorFlow:
  """Wraps a meta-path finder so that it never finds tensorflow, as if it were not installed."""

  def __init__(self, finder):
    self._finder = finder

  def __getattr__(self, attr):
    return getattr(self._finder, attr)

  def find_spec(self, name, path=None, target=None):
    if name.partition(".")[0] == "tensorflow":
      return None
    return self._finder.find_spec(name, path, target)


if "tensorflow" in sys.modules:
  raise RuntimeError("benchmarks.without_tensorflow must be imported before TensorFlow is")
sys.meta_path[:] = [f if isinstance(f, _WithoutTensorFlow) or not hasattr(f, "find_spec")
                    else _WithoutTensorFlow(f) for f in sys.meta_path]
