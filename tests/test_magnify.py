"""Tests of `mer_jax.magnify`: the checks of docs/magnification.md, errors, module, CLI, bench."""

import functools
import json
import os
import subprocess
import sys

import cv2
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import magnify_bench
from benchmarks import magnify_peer
from mer_jax import magnify
from mer_jax.magnify import __main__ as magnify_cli
from mer_jax.magnify import temporal

FPS = 30.0
T, H, W = 16, 24, 20  # bins 1.875 Hz apart
BAND = dict(fps=FPS, low_hz=3.0, high_hz=8.0)
VARIANTS = [(method, tf) for method in magnify.METHODS for tf in magnify.TEMPORAL_FILTERS]


def _sinusoid(freq_hz, amplitude=0.02, num_frames=T):
  return amplitude * np.sin(2 * np.pi * freq_hz * np.arange(num_frames) / FPS)


def _random_frames(shape, seed=0, low=0.3, high=0.7):
  return np.random.default_rng(seed).uniform(low, high, shape).astype(np.float32)


@functools.lru_cache(maxsize=None)
def _compiled(**static_kwargs):
  # One jitted program per configuration (alpha traced, so tests share it):
  # compiling once is much faster than dispatching the ops eagerly.
  return jax.jit(lambda frames, alpha: magnify.eulerian_magnify(frames, alpha=alpha,
                                                                **static_kwargs))


def _magnify(frames, alpha=4.0, **kwargs):
  fn = _compiled(**{**BAND, **kwargs})
  return np.asarray(fn(jnp.asarray(frames), jnp.float32(alpha)))


# Check 1: in-band gain.
@pytest.mark.parametrize("reference_compat, gain", [(False, 1 + 6.0), (True, 1 + 6.0 / 2)])
def test_in_band_sinusoid_gains_one_plus_alpha(reference_compat, gain):
  # A grey, spatially uniform clip: all of it is luma and survives the Gaussian stack.
  signal = _sinusoid(3.75) + _sinusoid(5.625, 0.01)  # exact FFT bins inside (3, 8) Hz
  frames = np.broadcast_to((0.5 + signal)[:, None, None, None], (T, H, W, 3))
  out = _magnify(frames, alpha=6.0, reference_compat=reference_compat)
  np.testing.assert_allclose(out - 0.5, gain * (frames - 0.5), atol=2e-6)


def test_laplacian_in_band_response_has_the_input_time_course():
  # Spatial pattern times an in-band sinusoid: the added band is pattern' * s(t).
  pattern = _random_frames((H, W, 3), seed=1, low=-1, high=1)
  signal = _sinusoid(5.625, 0.01)
  frames = 0.5 + signal[:, None, None, None] * pattern
  delta = _magnify(frames, method="laplacian", alpha=3.0, clip=False) - frames
  spatial_response = delta[4] / signal[4]
  np.testing.assert_allclose(delta, signal[:, None, None, None] * spatial_response, atol=2e-6)
  assert np.abs(spatial_response).max() > 0.01  # something was amplified


# Check 2: out-of-band sinusoids and DC pass unchanged.
@pytest.mark.parametrize("method", magnify.METHODS)
def test_out_of_band_and_dc_unchanged_ideal(method):
  pattern = _random_frames((H, W, 3), seed=2, low=-1, high=1)
  signal = _sinusoid(1.875) + _sinusoid(11.25)  # bins below and above [3, 8] Hz
  frames = 0.5 + signal[:, None, None, None] * pattern
  np.testing.assert_allclose(_magnify(frames, method=method, alpha=20.0), frames, atol=2e-6)


@pytest.mark.parametrize("method, temporal_filter", VARIANTS)
def test_static_video_unchanged(method, temporal_filter):
  frames = np.broadcast_to(_random_frames((1, H, W, 3), seed=3), (T, H, W, 3))
  out = _magnify(frames, method=method, temporal_filter=temporal_filter, alpha=20.0)
  np.testing.assert_allclose(out, frames, atol=2e-6)


# Check 3: alpha = 0 is the identity.
@pytest.mark.parametrize("method, temporal_filter", VARIANTS)
def test_alpha_zero_identity(method, temporal_filter):
  frames = _random_frames((T, H, W, 3), seed=4, low=0.0, high=1.0)
  out = _magnify(frames, method=method, temporal_filter=temporal_filter, alpha=0.0)
  np.testing.assert_allclose(out, frames, atol=1e-6)


# Check 4: chrom_attenuation = 0 leaves I and Q unchanged.
@pytest.mark.parametrize("method", magnify.METHODS)
def test_zero_chrom_attenuation_keeps_chroma(method):
  frames = _random_frames((T, H, W, 3), seed=5)
  out = _magnify(frames, method=method, chrom_attenuation=0.0, clip=False)
  yiq_in, yiq_out = np.asarray(magnify.rgb_to_yiq(frames)), np.asarray(magnify.rgb_to_yiq(out))
  np.testing.assert_allclose(yiq_out[..., 1:], yiq_in[..., 1:], atol=2e-6)
  assert np.abs(yiq_out[..., 0] - yiq_in[..., 0]).max() > 1e-3


def test_yiq_round_trip():
  rgb = _random_frames((5, 3), seed=6, low=0, high=1)
  np.testing.assert_allclose(magnify.yiq_to_rgb(magnify.rgb_to_yiq(rgb)), rgb, atol=1e-6)
  # Grey has no chroma.
  np.testing.assert_allclose(magnify.rgb_to_yiq(np.full((3,), 0.4, np.float32))[1:], 0, atol=1e-6)


# Check 5: linearity before clipping.
@pytest.mark.parametrize("method, temporal_filter", VARIANTS)
def test_linear_before_clipping(method, temporal_filter):
  x, y = _random_frames((T, H, W, 3), seed=7), _random_frames((T, H, W, 3), seed=8)
  a, b = 0.7, -1.3

  def change(frames):
    return _magnify(frames, method=method, temporal_filter=temporal_filter, clip=False) - frames

  np.testing.assert_allclose(change(a * x + b * y), a * change(x) + b * change(y), atol=2e-5)


# Check 6: batch independence (any leading dims, chunked or not).
@pytest.mark.parametrize("method", magnify.METHODS)
def test_batch_independence_and_chunking(method):
  clips = _random_frames((2, 2, T, H, W, 3), seed=9, low=0, high=1)
  batched = _magnify(clips, method=method)
  chunked = _magnify(clips, method=method, batch_chunk_size=3)
  for index in np.ndindex(2, 2):
    np.testing.assert_allclose(batched[index], _magnify(clips[index], method=method), atol=1e-6)
  np.testing.assert_allclose(chunked, batched, atol=1e-6)
  assert batched.shape == clips.shape and batched.dtype == np.float32
  assert batched.min() >= 0.0 and batched.max() <= 1.0
  assert np.abs(batched - clips).max() > 1e-2


# Check 7: agreement with the independent NumPy/OpenCV implementation.
@pytest.mark.slow
@pytest.mark.parametrize("method, temporal_filter, reference_compat", [
    (method, tf, compat) for method, tf in VARIANTS for compat in (False, True)
    if not (compat and tf == "iir")])  # reference_compat does not change "iir"
def test_agrees_with_numpy_opencv_peer(method, temporal_filter, reference_compat):
  frames = _random_frames((2, T, 21, 26, 3), seed=10)  # odd and even sizes
  levels = magnify.resolve_levels(method, None, 21, 26)
  kwargs = dict(BAND, alpha=8.0, method=method, temporal_filter=temporal_filter, levels=levels,
                reference_compat=reference_compat, clip=False)
  ours = _magnify(frames, **kwargs)
  peer = magnify_peer.eulerian_magnify_numpy(frames, **kwargs)
  assert np.abs(peer - frames).max() > 1e-2
  np.testing.assert_allclose(ours, peer, atol=5e-6)


def test_laplacian_gains_match_reference_loop():
  for alpha in (2.0, 10.0, 50.0):
    ours = magnify.laplacian_level_gains(alpha, num_levels=6, height=112, width=96,
                                         lambda_c=16.0)
    np.testing.assert_allclose(ours, magnify_peer.reference_gains(alpha, 16.0, 6, 112, 96),
                               rtol=1e-6)


@pytest.mark.parametrize("reference_compat", [False, True])
def test_butterworth_coefficients_match_scipy(reference_compat):
  import scipy.signal  # Test dependency (via scikit-learn); imported here only.
  for cutoff in (1.0, 7.5, 14.0):
    ours = temporal.butterworth_lowpass_coefficients(cutoff, FPS, reference_compat=reference_compat)
    b, a = scipy.signal.butter(1, cutoff / FPS * (1 if reference_compat else 2), "low")
    np.testing.assert_allclose([ours.b0, ours.b1, 1.0, ours.a1], [*b, *a], rtol=1e-10, atol=1e-12)


# jit / vmap / grad.
@pytest.mark.slow
def test_jit_vmap_match_eager():
  clips = _random_frames((3, T, H, W, 3), seed=11)
  fn = lambda x: magnify.eulerian_magnify(x, **BAND, alpha=5.0, method="laplacian",
                                          temporal_filter="iir")
  batched = np.asarray(jax.jit(fn)(clips))
  np.testing.assert_allclose(jax.jit(jax.vmap(fn))(clips), batched, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("method, temporal_filter", [("gaussian", "ideal"),
                                                     ("laplacian", "butterworth")])
def test_gradients_match_finite_differences(method, temporal_filter):
  # 32x32: on smaller frames the Laplacian schedule amplifies no level.
  shape = (T, 32, 32, 3)
  frames = jnp.asarray(_random_frames(shape, seed=12, low=0.45, high=0.55))
  weights = jnp.asarray(_random_frames(shape, seed=13, low=-1, high=1))
  direction = jnp.asarray(_random_frames(shape, seed=14, low=-1, high=1))

  def loss(x, alpha):
    out = magnify.eulerian_magnify(x, **BAND, alpha=alpha, method=method,
                                   temporal_filter=temporal_filter)
    return jnp.sum(out * weights)

  alpha = 2.0
  loss = jax.jit(loss)
  grad_x, grad_alpha = jax.jit(jax.grad(loss, argnums=(0, 1)))(frames, alpha)
  assert np.isfinite(np.asarray(grad_x)).all() and np.isfinite(float(grad_alpha))
  # No pixel is clipped, so the loss is linear in x (and, away from the gain
  # schedule's kinks, in alpha): large steps keep float32 cancellation small.
  eps = 0.02
  fd_x = (loss(frames + eps * direction, alpha) - loss(frames - eps * direction, alpha)) / (2 * eps)
  np.testing.assert_allclose(jnp.vdot(grad_x, direction), fd_x, rtol=2e-3)
  eps = 0.25
  fd_alpha = (loss(frames, alpha + eps) - loss(frames, alpha - eps)) / (2 * eps)
  np.testing.assert_allclose(grad_alpha, fd_alpha, rtol=2e-3)
  assert abs(float(grad_alpha)) > 1e-3


def test_bfloat16_frames_keep_dtype():
  frames = _random_frames((T, H, W, 3), seed=15)
  out = jax.jit(lambda x: magnify.eulerian_magnify(x, **BAND, alpha=5.0))(
      jnp.asarray(frames, jnp.bfloat16))
  assert out.dtype == jnp.bfloat16 and out.shape == frames.shape
  np.testing.assert_allclose(np.asarray(out, np.float32), _magnify(frames, alpha=5.0), atol=1e-2)


# Bad input.
@pytest.mark.parametrize("shape, dtype, kwargs, message", [
    ((H, W, 3), np.float32, {}, "shaped"),
    ((T, H, W, 4), np.float32, {}, "4 channels"),
    ((T, H, W, 3), np.uint8, {}, "floating point"),
    ((T, H, W, 3), np.float32, {"low_hz": 8.0, "high_hz": 3.0}, "low_hz"),
    ((T, H, W, 3), np.float32, {"high_hz": 16.0}, "Nyquist"),
    ((3, H, W, 3), np.float32, {}, "T=3"),
    ((T, H, W, 3), np.float32, {"method": "steerable"}, "method"),
    ((T, H, W, 3), np.float32, {"temporal_filter": "fir"}, "temporal_filter"),
    ((T, H, W, 3), np.float32, {"levels": 9}, "levels=9"),
    ((T, 4, 4, 3), np.float32, {}, "too small"),
    ((T, H, W, 3), np.float32, {"fps": -1.0}, "fps"),
    ((T, H, W, 3), np.float32, {"alpha": float("nan")}, "alpha"),
    ((T, H, W, 3), np.float32, {"batch_chunk_size": 0}, "batch_chunk_size"),
])
def test_bad_input_raises_naming_the_argument(shape, dtype, kwargs, message):
  with pytest.raises(ValueError, match=message):
    magnify.eulerian_magnify(np.zeros(shape, dtype), **{**BAND, "alpha": 2.0, **kwargs})


# Flax module.
def test_module_learnable_alpha_trains():
  frames = jnp.asarray(_random_frames((2, T, H, W, 3), seed=16, low=0.45, high=0.55))
  module = magnify.EulerianMagnification(**BAND, alpha=3.0, method="laplacian",
                                         learnable_alpha=True)
  params = jax.jit(module.init)(jax.random.PRNGKey(0), frames)
  assert float(params["params"]["alpha"]) == 3.0
  out = jax.jit(module.apply)(params, frames)
  np.testing.assert_allclose(out, _magnify(frames, alpha=3.0, method="laplacian"), atol=1e-6)
  grads = jax.jit(jax.grad(lambda p: jnp.sum(module.apply(p, frames) ** 2)))(params)
  assert abs(float(grads["params"]["alpha"])) > 0

  fixed = magnify.EulerianMagnification(**BAND, alpha=3.0)
  assert not jax.jit(fixed.init)(jax.random.PRNGKey(0), frames)  # no parameters
  with pytest.raises(ValueError, match=r"\(B, N, H, W, 3\)"):
    fixed.init(jax.random.PRNGKey(0), frames[0])
  with pytest.raises(ValueError, match="high_hz"):
    magnify.EulerianMagnification(fps=FPS, low_hz=1.0, high_hz=40.0, alpha=1.0).init(
        jax.random.PRNGKey(0), frames)
  assert isinstance(module, nn.Module)


# Command line.
def _write_image_folder(folder, frames):
  os.makedirs(folder)
  for index, frame in enumerate(frames):
    cv2.imwrite(os.path.join(folder, f"{index:03d}.png"), frame[..., ::-1])


def test_cli_image_folder_matches_function(tmp_path, capsys):
  rng = np.random.default_rng(17)
  frames_uint8 = rng.integers(60, 200, (T, H, W, 3), dtype=np.uint8)
  _write_image_folder(tmp_path / "in", frames_uint8)
  out_dir = str(tmp_path / "out")
  code = magnify_cli.main([str(tmp_path / "in"), out_dir, "--fps", str(FPS), "--alpha", "5",
                           "--low-hz", "3", "--high-hz", "8", "--method", "laplacian"])
  assert code == 0, capsys.readouterr().err
  written = np.stack([cv2.imread(os.path.join(out_dir, name))[..., ::-1]
                      for name in sorted(os.listdir(out_dir))])
  expected = _magnify(frames_uint8.astype(np.float32) / 255, alpha=5.0, method="laplacian")
  np.testing.assert_allclose(written / 255.0, expected, atol=0.5 / 255 + 1e-6)
  side = sorted(os.listdir(out_dir + "_side_by_side"))
  assert len(side) == T
  pair = cv2.imread(os.path.join(out_dir + "_side_by_side", side[0]))[..., ::-1]
  np.testing.assert_array_equal(pair[:, :W], frames_uint8[0])
  np.testing.assert_array_equal(pair[:, W:], written[0])


@pytest.mark.slow
def test_cli_video_file(tmp_path, capsys):
  source = str(tmp_path / "in.avi")
  writer = cv2.VideoWriter(source, cv2.VideoWriter_fourcc(*"MJPG"), FPS, (W * 2, H * 2))
  for frame in np.random.default_rng(18).integers(60, 200, (T, H * 2, W * 2, 3), dtype=np.uint8):
    writer.write(frame)
  writer.release()
  output = str(tmp_path / "out.mp4")
  assert magnify_cli.main([source, output, "--alpha", "10", "--low-hz", "3",
                           "--high-hz", "8"]) == 0
  for path, width in ((output, W * 2), (str(tmp_path / "out_side_by_side.mp4"), W * 4)):
    capture = cv2.VideoCapture(path)
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == T
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(FPS)
    ok, frame = capture.read()
    capture.release()
    assert ok and frame.shape == (H * 2, width, 3)
  assert "wrote" in capsys.readouterr().out


def test_cli_bad_inputs(tmp_path, capsys):
  missing = str(tmp_path / "missing.mp4")
  assert magnify_cli.main([missing, str(tmp_path / "o.mp4"), "--alpha", "1", "--low-hz", "1",
                           "--high-hz", "5"]) == 2
  assert "missing.mp4" in capsys.readouterr().err
  garbage = tmp_path / "garbage.mp4"
  garbage.write_text("not a video")
  assert magnify_cli.main([str(garbage), str(tmp_path / "o.mp4"), "--alpha", "1", "--low-hz",
                           "1", "--high-hz", "5"]) == 2
  assert "cannot read any frame" in capsys.readouterr().err
  _write_image_folder(tmp_path / "frames", np.zeros((T, H, W, 3), np.uint8))
  assert magnify_cli.main([str(tmp_path / "frames"), str(tmp_path / "o"), "--alpha", "1",
                           "--low-hz", "1", "--high-hz", "5"]) == 2
  assert "--fps" in capsys.readouterr().err


def test_python_dash_m_entry_point(tmp_path):
  result = subprocess.run([sys.executable, "-m", "mer_jax.magnify", str(tmp_path / "no.mp4"),
                           str(tmp_path / "o.mp4"), "--alpha", "1", "--low-hz", "1",
                           "--high-hz", "5"], capture_output=True, text=True, timeout=120)
  assert result.returncode == 2 and "does not exist" in result.stderr


# Benchmark smoke test.
def test_benchmark_tiny(tmp_path):
  result = magnify_bench.run(tiny=True, variants=(("gaussian", "ideal"),))
  json.dumps(result)  # serialisable
  (row,) = result["results"]
  assert row["shape"] == [1, 16, 32, 32, 3]
  assert row["max_abs_diff_vs_peer"] < 1e-5
  assert row["jax_s"] > 0 and row["peer_s"] > 0 and row["copy_s"] > 0
  assert result["machine"]["jax"] == jax.__version__
  assert "gaussian+ideal" in magnify_bench.format_table(result)
