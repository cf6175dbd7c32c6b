"""Smoke tests of `benchmarks.run` (every suite at tiny sizes) and its helpers."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from benchmarks import hardware
from benchmarks import run
from benchmarks import torch_compare
from benchmarks import torch_peer
from benchmarks import train_bench
from mer_jax import schema
from mer_jax.models import create_model


def _positive(value):
  return value is not None and np.isfinite(value) and value > 0


@pytest.mark.slow
def test_all_suites_at_tiny_sizes_write_json_and_markdown(tmp_path):
  out = tmp_path / "results.json"
  run.main(["--suite", "all", "--tiny", "--out", str(out)])
  result = json.loads(out.read_text())

  assert result["machine"]["usable_cores"] >= 1 and result["machine"]["memory_gib"] > 0
  assert result["machine"]["cpu_model"]
  assert result["device"]["platform"] == jax.devices()[0].platform
  for library in ("jax", "jaxlib", "flax", "torch"):
    assert result["versions"][library], library
  assert set(result["suites"]) == set(run.SUITES)
  assert result["peer_settings"]["torch_threads"] == result["peer_settings"]["xla_cores"]

  for suite in ("train", "inference"):
    rows = {row["model"]: row for row in result["suites"][suite]}
    assert set(rows) == set(run.TINY_MODELS)
    for row in rows.values():
      timed = row["mer_jax"][suite]
      for field in ("compile_s", "step_s", "clips_per_s", "frames_per_s", "flops_per_step",
                    "achieved_flops_per_s"):
        assert _positive(timed[field]), (suite, row["model"], field, timed[field])
      shape = row["mer_jax"]["shape"]
      np.testing.assert_allclose(timed["clips_per_s"] * timed["step_s"], shape["batch"])
      np.testing.assert_allclose(timed["frames_per_s"],
                                 timed["clips_per_s"] * shape["num_frames"])
      assert timed["mfu"] is None or 0 < timed["mfu"] < 1
      assert timed["mfu"] is not None or timed["mfu_na_reason"]
    peer_row = rows["tiny_resnet_lstm"]
    assert peer_row["peer"]["available"]
    assert peer_row["peer"]["torch"]["num_threads"] == result["peer_settings"]["torch_threads"]
    assert _positive(peer_row["peer"][suite]["step_s"])
    np.testing.assert_allclose(peer_row["ratio_vs_peer"][suite],
                               peer_row["peer"][suite]["step_s"]
                               / peer_row["mer_jax"][suite]["step_s"])
    assert _positive(peer_row["ratio_vs_peer_best"][suite])

  # Training costs about 3x the FLOPs of inference (forward + backward).
  train_row = result["suites"]["train"][0]["mer_jax"]
  assert 2 < train_row["train"]["flops_per_step"] / train_row["inference"]["flops_per_step"] < 5

  magnify = result["suites"]["magnify"]["results"]
  assert magnify and all(_positive(r["jax_s"]) and _positive(r["speedup_vs_peer"])
                         for r in magnify)

  flow = result["suites"]["flow"]
  assert flow["results"] and all(_positive(r["jax_pairs_per_s"]) and _positive(r["opencv_pairs_per_s"])
                                for r in flow["results"]), flow
  pipeline = result["suites"]["input"]
  assert pipeline["dataset"].startswith("synthetic_me/tiny")
  assert pipeline["model"] == "tiny_resnet_lstm"
  for field in ("examples_per_s", "train_clips_per_s", "ratio_to_train_step",
                "end_to_end_clips_per_s"):
    assert _positive(pipeline[field]), field
  assert pipeline["train_clips_per_s_source"] == "train suite of the same run"

  scaling = result["suites"]["scaling"]["rows"]
  assert [r["num_devices"] for r in scaling] == [1, 2]
  assert [r["global_batch"] for r in scaling] == [1, 2]
  assert all(_positive(r["clips_per_s"]) and _positive(r["efficiency"]) for r in scaling)
  assert scaling[0]["efficiency"] == pytest.approx(1.0)

  markdown = (tmp_path / "results.md").read_text()
  for heading in ("## Train step", "## Inference", "## Eulerian magnification",
                  "## Input pipeline", "## Scaling"):
    assert heading in markdown
  assert "tiny_resnet_lstm" in markdown


def _gpu_visible():
  try:
    return bool(jax.devices("gpu"))
  except RuntimeError:
    return False


@pytest.mark.parametrize("argv, message", [
    (["--suite", "train,warp"], "unknown suite"),
    (["--suite", ""], "unknown suite"),
    (["--model", "tiny:0x6x32"], "batch must be >= 1"),
    (["--model", "tiny:-2x6x32"], "batch must be >= 1"),
    (["--model", "tiny:2x0x32"], "num_frames must be >= 1"),
    (["--model", "tiny:2x6x0"], "image_size must be >= 1"),
    (["--model", "tiny:2x6"], "BATCHxFRAMESxSIZE"),
    (["--model", "vgg:2x6x32"], "unknown model"),
    (["--model", "tiny_resnet_lstm:2x4x4"], "below the encoder's minimum"),
    (["--model", "tiny:3x6x32", "--num_devices", "2"], "not divisible by the 2 devices"),
    (["--num_devices", "4096"], "only"),
    (["--repeats", "0"], "--repeats must be >= 1"),
    (["--suite", "scaling", "--scaling_devices", "0,2"], "positive integers"),
    (["--suite", "input", "--input_model", "tiny:8x1x32"], "num_frames >= 2"),
    (["--suite", "magnify", "--magnify_sizes", "4x64x112"], "BxTxHxW"),
])
def test_bad_arguments_fail_before_any_compute(tmp_path, capsys, argv, message):
  out = tmp_path / "results.json"
  with pytest.raises(SystemExit) as error:
    run.main(argv + ["--out", str(out)])
  assert error.value.code == 2
  assert message in capsys.readouterr().err
  assert not out.exists()


def test_missing_gpu_is_an_argument_error(tmp_path, capsys):
  argv = ["--suite", "train", "--device", "gpu", "--out", str(tmp_path / "r.json")]
  if _gpu_visible():
    assert run.parse_args(argv).devices[0].platform == "gpu"
  else:
    with pytest.raises(SystemExit):
      run.parse_args(argv)
    assert "--device gpu: no GPU visible" in capsys.readouterr().err


def test_peak_table_and_utilisation():
  assert hardware.accelerator_peak("NVIDIA H100 80GB HBM3", "bfloat16")["peak_flops"] == 989e12
  assert hardware.accelerator_peak("NVIDIA H100 PCIe", "bfloat16")["peak_flops"] == 756e12
  assert hardware.accelerator_peak("NVIDIA H200", "bfloat16")["peak_flops"] == 989e12
  assert hardware.accelerator_peak("NVIDIA A100-SXM4-40GB", "bfloat16")["peak_flops"] == 312e12
  tpu_fp32 = hardware.accelerator_peak("TPU v4", "float32")
  assert tpu_fp32["peak_flops"] is None and "no dense float32 peak" in tpu_fp32["na_reason"]
  unknown = hardware.accelerator_peak("Imaginary X1", "bfloat16")
  assert unknown["peak_flops"] is None and "Imaginary X1" in unknown["na_reason"]
  with pytest.raises(ValueError, match="dtype"):
    hardware.accelerator_peak("NVIDIA H200", "float16")

  cpu = hardware.cpu_peak_flops(num_cores=2)
  assert _positive(cpu["peak_flops"]) or cpu["na_reason"]
  if cpu["peak_flops"]:
    assert cpu["peak_flops"] == pytest.approx(
        2 * cpu["clock_ghz"] * 1e9 * cpu["flops_per_cycle_per_core"])

  used = hardware.utilisation(4e9, 2.0, {"peak_flops": 10e9}, num_devices=2)
  assert used["achieved_flops_per_s"] == 2e9 and used["mfu"] == pytest.approx(0.1)
  assert hardware.utilisation(4e9, 2.0, {"peak_flops": None, "na_reason": "why"})[
      "mfu_na_reason"] == "why"
  with pytest.raises(ValueError, match="seconds"):
    hardware.utilisation(1.0, 0.0, {"peak_flops": 1.0})


def test_cost_analysis_counts_matmul_flops():
  x = jnp.ones((32, 48), jnp.float32)
  y = jnp.ones((48, 16), jnp.float32)
  compiled = jax.jit(jnp.dot).lower(x, y).compile()
  cost = hardware.cost_analysis(compiled)
  assert cost["flops"] == pytest.approx(2 * 32 * 48 * 16, rel=0.05)
  assert cost["bytes_accessed"] >= 4 * (32 * 48 + 48 * 16 + 32 * 16)


def test_torch_peer_mirrors_the_jax_model():
  config = train_bench.model_configs()["tiny_resnet_lstm"]
  shape = train_bench.DEFAULT_SHAPES["tiny_resnet_lstm"]
  model = create_model(config)
  frames = np.zeros((1, shape.num_frames, shape.image_size, shape.image_size, 3), np.uint8)
  # eval_shape: the parameter shapes without running (or compiling) init.
  variables = jax.eval_shape(lambda f, m: model.init(jax.random.key(0), f, m, train=False),
                             frames, np.ones((1, shape.num_frames), bool))
  jax_count = sum(x.size for x in jax.tree.leaves(variables["params"]))
  peer = torch_peer.from_model_config(config, schema.NUM_CLASSES)
  torch_count = sum(p.numel() for p in peer.parameters())
  # torch's LSTM has two bias vectors (input and hidden) where Flax has one.
  hidden = config.temporal_head_kwargs.hidden_size
  assert torch_count - 4 * hidden == jax_count
  logits = peer(torch.from_numpy(frames))
  assert tuple(logits.shape) == (1, schema.NUM_CLASSES)
  with pytest.raises(ValueError, match="encoder must be a ResNet"):
    torch_peer.from_model_config(train_bench.model_configs()["small"], schema.NUM_CLASSES)
  # The benchmark then reports the peer as unavailable, with the reason, and runs nothing.
  no_peer = train_bench.run_peer("small", train_bench.DEFAULT_SHAPES["small"], device="cpu",
                                 repeats=1, warmup=0, threads=1)
  assert not no_peer["available"] and "ResNet" in no_peer["reason"]


def test_a_suite_that_cannot_import_is_refused_by_name(tmp_path, capsys, monkeypatch):
  monkeypatch.setitem(run.SUITE_MODULES, "magnify", "benchmarks.no_such_suite")
  out = tmp_path / "results.json"
  with pytest.raises(SystemExit) as error:
    run.main(["--suite", "magnify", "--out", str(out)])
  assert error.value.code == 2
  message = capsys.readouterr().err
  assert "--suite magnify: benchmarks.no_such_suite cannot be imported here" in message
  assert "it needs 'benchmarks.no_such_suite'" in message and "leave 'magnify' out" in message
  assert not out.exists()


def test_unknown_xla_flags_are_an_argument_error(tmp_path):
  """XLA aborts a process on an unknown flag: the run refuses it first, naming XLA's reason."""
  import os  # pylint: disable=import-outside-toplevel
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  out = tmp_path / "results.json"
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--suite", "train",
                         "--xla_flags=--xla_no_such_flag=1", "--out", str(out)], cwd=root,
                        capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "--xla_flags '--xla_no_such_flag=1': XLA refused them" in proc.stderr
  assert "xla_no_such_flag" in proc.stderr.split("XLA refused them")[1]
  assert not out.exists()


def test_xla_flags_after_jax_started_are_refused(tmp_path, capsys):
  jax.devices()  # This process's backend is up: XLA has read its flags already.
  with pytest.raises(SystemExit):
    run.main(["--suite", "train", "--xla_flags=--xla_cpu_enable_fast_math=false",
              "--out", str(tmp_path / "r.json")])
  assert "JAX has already started in this process" in capsys.readouterr().err


@pytest.mark.slow
def test_torch_compare_alternates_rounds(tmp_path):
  """benchmarks.torch_compare: both sides timed in every round, ratios from the medians."""
  out = tmp_path / "compare.json"
  assert torch_compare.main(["--model", "tiny_resnet_lstm", "--rounds", "2",
                             "--steps_per_round", "1", "--warmup", "1", "--out", str(out)]) == 0
  data = json.loads(out.read_text())
  assert len(data["load_average_per_round"]) == 2
  for suite in ("train", "inference"):
    s = data["suites"][suite]
    assert len(s["times_s"]["mer_jax"]) == 2 and len(s["times_s"]["torch"]) == 2
    assert s["torch_over_mer_jax"] == pytest.approx(s["torch_ms"] / s["mer_jax_ms"])


def test_wait_for_quiet_polls_until_the_load_falls():
  loads = iter([2.5, 1.8, 1.2, 0.9, 0.5])
  now = [0.0]
  def sleep(seconds):
    now[0] += seconds
  quiet = hardware.wait_for_quiet(1.0, 60.0, poll_s=5.0, load=lambda: next(loads),
                                  sleep=sleep, clock=lambda: now[0])
  assert quiet == {"load_before": 0.9, "waited_s": 15.0, "quiet": True}


def test_wait_for_quiet_gives_up_after_the_timeout_and_says_so():
  now = [0.0]
  def sleep(seconds):
    now[0] += seconds
  quiet = hardware.wait_for_quiet(1.0, 12.0, poll_s=5.0, load=lambda: 3.0, sleep=sleep,
                                  clock=lambda: now[0])
  assert quiet == {"load_before": 3.0, "waited_s": 15.0, "quiet": False}


def test_wait_for_quiet_with_no_threshold_does_not_wait_and_claims_nothing():
  quiet = hardware.wait_for_quiet(0.0, 600.0, load=lambda: 0.1, sleep=pytest.fail,
                                  clock=lambda: 0.0)
  assert quiet == {"load_before": 0.1, "waited_s": 0.0, "quiet": False}
