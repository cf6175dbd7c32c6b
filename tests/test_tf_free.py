"""The runtime without TensorFlow: each test runs a fresh Python where `import tensorflow` fails.

GPU machines have no TensorFlow (docs/gpu.md). Before anything else, each child wraps the
import system's finders so that none finds `tensorflow`: `import tensorflow` raises
ModuleNotFoundError and `importlib.util.find_spec("tensorflow")` is None, as on a machine
without it. (`sys.modules["tensorflow"] = None` would not do: etils and TFDS test
`"tensorflow" in sys.modules` and then reach for it; a finder that raises breaks etils'
`find_spec` probe.) Each child ends by asserting that TensorFlow was never imported.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NO_TENSORFLOW = "import benchmarks.without_tensorflow  # noqa: F401\nimport sys\n"


def _run_without_tensorflow(body: str, timeout: float) -> subprocess.CompletedProcess:
  script = NO_TENSORFLOW + textwrap.dedent(body) + textwrap.dedent("""
      assert "tensorflow" not in sys.modules, "TensorFlow was imported"
      try:
        import tensorflow  # noqa: F401
      except ImportError:
        pass
      else:
        raise AssertionError("the import hook did not block TensorFlow")
      """)
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
  proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=timeout, check=False)
  assert proc.returncode == 0, f"stdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-5000:]}"
  return proc


def test_writer_events_read_back_by_tensorboard(tmp_path):
  _run_without_tensorflow(f"""
      from mer_jax import metric_writers
      writer = metric_writers.create_writer({str(tmp_path)!r})
      for step in (1, 2, 3):
        writer.write_scalars(step, {{"train/loss": 1.0 / step}})
      writer.close()
      from tensorboard.backend.event_processing import plugin_event_accumulator
      from tensorboard.util import tensor_util
      accumulator = plugin_event_accumulator.EventAccumulator({str(tmp_path)!r})
      accumulator.Reload()
      assert list(accumulator.PluginTagToContent("scalars")) == ["train/loss"]
      values = [(e.step, round(float(tensor_util.make_ndarray(e.tensor_proto)), 6))
                for e in accumulator.Tensors("train/loss")]
      assert values == [(1, 1.0), (2, 0.5), (3, 0.333333)], values
      """, timeout=120)


@pytest.mark.slow
def test_benchmark_smoke_run_without_tensorflow(tmp_path, data_dir):
  out = tmp_path / "bench.json"
  _run_without_tensorflow(f"""
      from benchmarks import run
      run.main(["--suite", "train,inference,input", "--tiny", "--data_dir", {data_dir!r},
                "--input_batches", "2", "--xla_flags=--xla_cpu_enable_fast_math=false",
                "--out", {str(out)!r}])
      """, timeout=600)
  result = json.loads(out.read_text())
  assert set(result["suites"]) == {"train", "inference", "input"}
  (row,) = result["suites"]["train"]
  assert row["mer_jax"]["train"]["step_s"] > 0 and row["mer_jax"]["inference"]["step_s"] > 0
  assert result["suites"]["input"]["examples_per_s"] > 0
  assert result["versions"]["jax"]
  assert "--xla_cpu_enable_fast_math=false" in result["settings"]["xla_flags"]
  assert "--xla_cpu_enable_fast_math=false" in (tmp_path / "bench.md").read_text()


@pytest.mark.slow
def test_trainer_two_folds_without_tensorflow(tmp_path, data_dir):
  workdir = tmp_path / "run"
  _run_without_tensorflow(f"""
      from configs import default as default_config
      from mer_jax import metric_writers, train
      config = default_config.get_config("tiny")
      config.dataset.data_dir = {data_dir!r}
      config.dataset.build_if_missing = False
      config.folds = ("s00", "s01")
      results = train.train_and_evaluate(config, {str(workdir)!r})
      assert results["num_folds"] == 2, results["num_folds"]
      scalars = metric_writers.read_scalars({str(workdir)!r})
      assert "train/loss" in scalars and "test/uf1" in scalars, sorted(scalars)
      """, timeout=600)
  results = json.loads((workdir / "results.json").read_text())
  assert results["num_folds"] == 2
  assert {r["fold"] for r in results["predictions"]} == {"synthetic_me__s00", "synthetic_me__s01"}
  assert any(n.startswith("events.out.tfevents") for n in os.listdir(workdir))
