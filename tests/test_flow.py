"""Tests of `mer_jax.flow`: TV-L1 checks of docs/optical_flow.md, OpenCV parity, strain, CLI, cache."""

import dataclasses
import functools
import json
import os
import subprocess
import sys

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mer_jax import flow as flow_lib
from mer_jax import schema
from mer_jax import synthetic
from mer_jax.flow import __main__ as flow_cli
from mer_jax.flow import cache as flow_cache
from mer_jax.flow import tvl1

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Small configurations so that each compiles in seconds; OpenCV's defaults are
# used (and compiled once) by the slow accuracy tests.
SMALL = dict(num_scales=2, num_warps=3, outer_iterations=3, inner_iterations=20,
             median_filtering=5, epsilon=0.01)
TINY = dict(num_scales=1, num_warps=2, outer_iterations=2, inner_iterations=5,
            median_filtering=3, epsilon=0.01)
DIFFERENTIABLE = dict(num_scales=1, num_warps=1, outer_iterations=1, inner_iterations=4,
                      median_filtering=0, epsilon=0.0)


@functools.lru_cache(maxsize=None)
def _jitted(**params):
  return jax.jit(functools.partial(flow_lib.tvl1_flow, **params))


def _texture(rng, size, sigmas=((1.0, 0.4), (2.5, 0.6), (6.0, 0.8))):
  """Smooth random texture in [0.1, 0.9], float32 (size, size)."""
  image = np.zeros((size, size), np.float32)
  for sigma, weight in sigmas:
    noise = cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0), sigma)
    image += weight * noise / noise.std()
  image = (image - image.min()) / (image.max() - image.min())
  return (0.1 + 0.8 * image).astype(np.float32)


def _smooth_field(rng, size, amplitude):
  """(size, size, 2) smooth displacement with max |component| = amplitude pixels."""
  field = cv2.GaussianBlur(rng.standard_normal((size, size, 2)).astype(np.float32), (0, 0),
                           size / 6)
  return (field * (amplitude / np.abs(field).max())).astype(np.float32)


def _grid(size):
  return np.meshgrid(np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32))


def _warp_forward(image, field, iterations=40):
  """frame1 with frame0(p) = frame1(p + d(p)), by exact inversion of q = p + d(p).

  For each output pixel q, p solves p = q - d(p) (fixed point; converges since
  |grad d| < 1), then frame1(q) = frame0(p) (bicubic).
  """
  gx, gy = _grid(image.shape[0])
  px, py = gx.copy(), gy.copy()
  for _ in range(iterations):
    dx = cv2.remap(field[..., 0], px, py, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    dy = cv2.remap(field[..., 1], px, py, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    px, py = gx - dx, gy - dy
  return cv2.remap(image, px, py, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)


def _opencv_flow(frame0, frame1, params):
  """OpenCV's TV-L1 on the 0..255 uint8 versions of [0, 1] grey frames."""
  solver = cv2.optflow.DualTVL1OpticalFlow_create(
      tau=params["tau"], lambda_=params["lambda_"], theta=params["theta"],
      nscales=params["num_scales"], warps=params["num_warps"], epsilon=params["epsilon"],
      innnerIterations=params["inner_iterations"], outerIterations=params["outer_iterations"],
      scaleStep=params["scale_step"], gamma=params["gamma"],
      medianFiltering=params["median_filtering"])
  to_u8 = lambda x: np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)
  return np.stack([solver.calc(to_u8(a), to_u8(b), None) for a, b in zip(frame0, frame1)])


def _epe(flow, truth, margin):
  error = np.linalg.norm(flow - truth, axis=-1)
  return error[..., margin:-margin, margin:-margin].mean()


def _shift(image, dx, dy):
  """frame1 with frame0(y, x) = frame1(y + dy, x + dx): content moved by (dx, dy)."""
  return np.roll(image, (dy, dx), axis=(0, 1))


# ----------------------------------------------------------------------------
# Behaviour on simple motions.


def test_zero_translation_and_reverse_flow():
  rng = np.random.default_rng(0)
  size = 32
  image = _texture(rng, size)
  field = _smooth_field(rng, size, 0.8)
  moved = _warp_forward(image, field)
  frame0 = np.stack([image, image, _shift(image, 1, 2), image, moved])
  frame1 = np.stack([image, _shift(image, 1, 2), image, moved, image])
  flows = np.asarray(_jitted(**SMALL)(frame0, frame1))
  assert flows.shape == (5, size, size, 2) and flows.dtype == np.float32
  # Zero motion: zero flow.
  assert np.abs(flows[0]).max() < 1e-3
  # Integer translation (1, 2) recovered away from the wrapped border.
  inner = (slice(6, -6), slice(6, -6))
  np.testing.assert_allclose(flows[1][inner], np.broadcast_to([1.0, 2.0], (20, 20, 2)), atol=0.05)
  np.testing.assert_allclose(flows[2][inner], np.broadcast_to([-1.0, -2.0], (20, 20, 2)),
                             atol=0.05)
  # flow(I0, I1) ~ -flow(I1, I0) for a smooth sub-pixel field (to first order: the
  # backward flow lives at the displaced positions, and |d| < 1 px).
  np.testing.assert_allclose(flows[3][inner], -flows[4][inner], atol=0.12)
  assert np.abs(flows[3][inner] + flows[4][inner]).mean() < 0.03


def test_rgb_to_grey_uses_opencv_weights():
  rgb = np.random.default_rng(1).uniform(0, 1, (2, 16, 16, 3)).astype(np.float32)
  grey = np.asarray(flow_lib.to_grey(rgb))
  np.testing.assert_allclose(grey[1], cv2.cvtColor(rgb[1], cv2.COLOR_RGB2GRAY), atol=1e-6)


@pytest.mark.slow
def test_rgb_and_leading_dims():
  rng = np.random.default_rng(1)
  rgb0 = rng.uniform(0.1, 0.9, (3, 1, 16, 16, 3)).astype(np.float32)
  rgb1 = np.roll(rgb0, 1, axis=-2)
  fn = _jitted(**TINY)
  from_rgb = np.asarray(fn(rgb0, rgb1))
  grey = lambda x: np.asarray(flow_lib.to_grey(x))[:, 0]
  from_grey = np.asarray(fn(grey(rgb0), grey(rgb1)))  # (3, 16, 16): shared with the test below.
  assert from_rgb.shape == (3, 1, 16, 16, 2)
  np.testing.assert_allclose(from_rgb[:, 0], from_grey, atol=1e-5)


@pytest.mark.slow
def test_jit_vmap_loop_and_chunking_agree():
  rng = np.random.default_rng(2)
  frame0 = np.stack([_texture(rng, 16) for _ in range(3)])
  frame1 = np.stack([_warp_forward(f, _smooth_field(rng, 16, 1.0)) for f in frame0])
  batched = np.asarray(_jitted(**TINY)(frame0, frame1))
  single = _jitted(**TINY)
  looped = np.stack([np.asarray(single(a, b)) for a, b in zip(frame0, frame1)])
  vmapped = np.asarray(jax.jit(jax.vmap(functools.partial(flow_lib.tvl1_flow, **TINY)))(
      frame0, frame1))
  chunked = np.asarray(_jitted(chunk_size=2, **TINY)(frame0, frame1))
  eager = np.asarray(flow_lib.tvl1_flow(frame0, frame1, **TINY))
  assert np.abs(batched).max() > 0.1  # Something moved.
  # A pair's result does not depend on the others in its batch (early stopping
  # is per pair), nor on chunking; float reassociation only.
  for other in (looped, vmapped, chunked, eager):
    np.testing.assert_allclose(other, batched, atol=2e-4)


def test_median_filter_matches_opencv():
  rng = np.random.default_rng(3)
  u = rng.uniform(-3, 3, (2, 19, 23)).astype(np.float32)
  for size in (3, 5):
    ours = np.asarray(flow_lib.median_filter(jnp.asarray(u), size))
    for k in range(2):
      np.testing.assert_array_equal(ours[k], cv2.medianBlur(u[k], size))


def test_pyramid_and_warp_match_opencv():
  rng = np.random.default_rng(4)
  image = rng.uniform(0, 255, (37, 41)).astype(np.float32)
  shapes = flow_lib.pyramid_shapes(37, 41, 2, 0.8)
  down = cv2.resize(image, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_LINEAR)
  assert shapes[1] == down.shape
  ours = np.asarray(tvl1._resize(jnp.asarray(image[None]), shapes[1], 0.8))[0]
  np.testing.assert_allclose(ours, down, atol=1e-3)
  up = cv2.resize(down, (41, 37), interpolation=cv2.INTER_LINEAR)
  np.testing.assert_allclose(np.asarray(tvl1._resize(jnp.asarray(down[None]), (37, 41), None))[0],
                             up, atol=1e-3)
  gx, gy = _grid(41)
  gx, gy = gx[:37], gy[:37]
  map_x = gx + rng.uniform(-4, 4, gx.shape).astype(np.float32)
  map_y = gy + rng.uniform(-4, 4, gy.shape).astype(np.float32)
  reference = cv2.remap(image, map_x, map_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
  ours = np.asarray(tvl1._warp_bicubic(jnp.asarray(image[None, ..., None]),
                                       jnp.asarray((map_x - gx)[None]),
                                       jnp.asarray((map_y - gy)[None])))[0, ..., 0]
  # cv2.remap rounds sample positions to 1/32 pixel; ours are exact.
  assert np.abs(ours - reference).mean() < 0.01 and np.abs(ours - reference).max() < 0.1


@pytest.mark.slow
def test_gradients_match_finite_differences():
  rng = np.random.default_rng(5)
  frame0 = jnp.asarray(_texture(rng, 16))
  frame1 = jnp.asarray(_warp_forward(np.asarray(frame0), _smooth_field(rng, 16, 0.7)))
  weights = jnp.asarray(rng.standard_normal((16, 16, 2)), jnp.float32)

  def loss(a, b):
    return jnp.sum(flow_lib.tvl1_flow(a, b, **DIFFERENTIABLE) * weights)

  grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(frame0, frame1)
  for g in grads:
    assert np.all(np.isfinite(np.asarray(g))) and np.abs(np.asarray(g)).max() > 0
  loss_jit = jax.jit(loss)
  # The solver is piecewise smooth (the thresholding step switches branches per
  # pixel), so the central difference uses a step small enough to stay on one
  # piece (3e-5 of the [0, 1] range; float32 rounding is ~1e-7 of the loss).
  step = 3e-5
  for argnum, grad in enumerate(grads):
    for seed in range(2):
      direction = jnp.asarray(_smooth_field(np.random.default_rng(10 + seed), 16, 1.0)[..., 0])
      plus, minus = [frame0, frame1], [frame0, frame1]
      plus[argnum] = plus[argnum] + step * direction
      minus[argnum] = minus[argnum] - step * direction
      numeric = (float(loss_jit(*plus)) - float(loss_jit(*minus))) / (2 * step)
      analytic = float(jnp.sum(grad * direction))
      assert abs(numeric) > 1.0
      assert analytic == pytest.approx(numeric, rel=0.03, abs=0.3)


# ----------------------------------------------------------------------------
# Bad input.


@pytest.mark.parametrize("frame0,frame1,kwargs,match", [
    (np.zeros((32, 32), np.float32), np.zeros((32, 30), np.float32), {}, "frame1"),
    (np.zeros((32, 32), np.uint8), np.zeros((32, 32), np.uint8), {}, "frame0 must be floating"),
    (np.full((32, 32), 1.5, np.float32), np.zeros((32, 32), np.float32), {}, r"frame0 values"),
    (np.zeros((32, 32), np.float32), np.full((32, 32), -0.1, np.float32), {}, r"frame1 values"),
    (np.zeros((32, 32), np.float32), np.zeros((32, 32), np.float32), {},
     r"num_scales=5.*num_scales <= 4 or frames of at least 39x39"),
    (np.zeros((48, 48), np.float32),) * 2 + ({"tau": 0.0}, "tau"),
    (np.zeros((48, 48), np.float32),) * 2 + ({"lambda_": -1.0}, "lambda_"),
    (np.zeros((48, 48), np.float32),) * 2 + ({"theta": 0}, "theta"),
    (np.zeros((48, 48), np.float32),) * 2 + ({"num_warps": 0}, "num_warps"),
    (np.zeros((48, 48), np.float32),) * 2 + ({"inner_iterations": 0}, "inner_iterations"),
    (np.zeros((48, 48), np.float32),) * 2 + ({"scale_step": 1.2}, "scale_step"),
    (np.zeros((48, 48), np.float32),) * 2 + ({"epsilon": -0.1}, "epsilon"),
    (np.zeros((48, 48), np.float32),) * 2 + ({"median_filtering": 4}, "median_filtering"),
    (np.zeros((48, 48), np.float32),) * 2 + ({"num_scales": 2.0}, "num_scales"),
    (np.zeros((48, 48), np.float32),) * 2 + ({"chunk_size": 0}, "chunk_size"),
])
def test_bad_input_raises_naming_the_argument(frame0, frame1, kwargs, match):
  with pytest.raises(ValueError, match=match):
    flow_lib.tvl1_flow(frame0, frame1, **kwargs)


def test_too_small_message_states_what_fits():
  assert flow_lib.max_num_scales(32, 32) == 4 and flow_lib.max_num_scales(39, 39) == 5
  assert flow_lib.max_num_scales(38, 38) == 4
  with pytest.raises(ValueError, match=r"32x32 .* coarsest pyramid level would be 14x14"):
    flow_lib.tvl1_flow(np.zeros((32, 32), np.float32), np.zeros((32, 32), np.float32))
  with pytest.raises(ValueError, match="no num_scales fits"):
    flow_lib.tvl1_flow(np.zeros((12, 40), np.float32), np.zeros((12, 40), np.float32),
                       num_scales=1)


# ----------------------------------------------------------------------------
# Strain, normalisation, colour wheel.


@pytest.mark.parametrize("variant,shear_factor", [
    ("softnet", np.sqrt(2.0)), ("ststnet", 1.0), ("meb", 1.0)])
def test_strain_of_analytic_fields(variant, shear_factor):
  gx, gy = _grid(20)
  a, b = 0.03, -0.05
  stretch = np.stack([a * gx, np.zeros_like(gx)], -1)
  shear = np.stack([b * gy, b * gx], -1)
  translation = np.stack([np.full_like(gx, 1.3), np.full_like(gx, -0.4)], -1)
  inner = (slice(1, -1), slice(1, -1))  # Sobel's replicated border differs at the edge.
  strains = np.asarray(flow_lib.optical_strain(np.stack([stretch, shear, translation]), variant))
  assert strains.shape == (3, 20, 20)
  np.testing.assert_allclose(strains[0][inner], abs(a), rtol=1e-5)
  np.testing.assert_allclose(strains[1][inner], abs(b) * shear_factor, rtol=1e-5)
  np.testing.assert_allclose(strains[2], 0.0, atol=1e-6)
  if variant != "meb":  # Forward / np.gradient differences are exact on linear fields.
    np.testing.assert_allclose(strains[0], abs(a), rtol=1e-5)
  if variant == "ststnet":  # Same derivatives as np.gradient.
    u = np.random.default_rng(0).standard_normal((9, 11))
    v = np.random.default_rng(1).standard_normal((9, 11))
    (u_y, u_x), (v_y, v_x) = np.gradient(u), np.gradient(v)
    expected = np.sqrt(u_x ** 2 + v_y ** 2 + 0.25 * (u_y + v_x) ** 2)
    np.testing.assert_allclose(np.asarray(flow_lib.optical_strain(np.stack([u, v], -1), variant)),
                               expected, rtol=1e-5)


def test_strain_bad_input():
  with pytest.raises(ValueError, match="variant"):
    flow_lib.optical_strain(np.zeros((8, 8, 2)), "other")
  with pytest.raises(ValueError, match=r"\(\.\.\., H, W, 2\)"):
    flow_lib.optical_strain(np.zeros((8, 8, 3)))


def test_normalisations():
  rng = np.random.default_rng(6)
  features = rng.normal(0, 2, (2, 8, 8, 3)).astype(np.float32)
  features[..., 2] = np.abs(features[..., 2])
  features[1, ..., 0] = 0.7  # A constant channel maps to 0.
  scaled = np.asarray(flow_lib.minmax_normalize(features))
  assert scaled[0].min(axis=(0, 1)) == pytest.approx([0, 0, 0])
  assert scaled[0].max(axis=(0, 1)) == pytest.approx([1, 1, 1])
  assert np.all(scaled[1, ..., 0] == 0)
  unit = np.asarray(flow_lib.fixed_range_normalize(features, max_flow=2.0, max_strain=1.0))
  assert unit.min() >= 0 and unit.max() <= 1
  inside = np.abs(features[..., :2]) <= 2.0
  np.testing.assert_allclose(unit[..., :2][inside], (features[..., :2][inside] / 2 + 1) / 2,
                             rtol=1e-6)
  symmetric = np.asarray(flow_lib.fixed_range_normalize(features[..., :2], max_flow=2.0,
                                                        output="symmetric"))
  np.testing.assert_allclose(symmetric, np.clip(features[..., :2] / 2.0, -1, 1), rtol=1e-6)
  # Scale preserved: half the motion gives half the output (inside the clip range).
  half = np.asarray(flow_lib.fixed_range_normalize(0.5 * features[..., :2], max_flow=2.0,
                                                   output="symmetric"))
  np.testing.assert_allclose(half[inside], 0.5 * symmetric[inside], rtol=1e-6)
  with pytest.raises(ValueError, match="max_flow"):
    flow_lib.fixed_range_normalize(features, max_flow=0.0)


def test_colour_wheel():
  wheel = flow_lib.colour_wheel()
  assert wheel.shape == (55, 3)
  np.testing.assert_array_equal(wheel[0], [255, 0, 0])
  np.testing.assert_array_equal(wheel[15], [255, 255, 0])
  np.testing.assert_array_equal(wheel[21], [0, 255, 0])
  flow = np.zeros((3, 4, 2), np.float32)
  flow[0, 0] = (-1.0, 0.0)  # Left: atan2(-v, -u) = 0, the middle of the wheel (cyan-blue).
  flow[0, 1] = (-0.5, 0.0)  # Half the largest magnitude: half-way to white.
  flow[0, 2] = (0.0, np.nan)
  flow[0, 3] = (1.0, 0.0)   # Right: the red end of the wheel.
  rgb = flow_lib.flow_to_rgb(flow)
  np.testing.assert_array_equal(rgb[0, 0], np.round(wheel[27]))
  np.testing.assert_array_equal(rgb[0, 0], [0, 209, 255])
  np.testing.assert_array_equal(rgb[0, 1], np.round(255 * (1 - 0.5 * (1 - wheel[27] / 255))))
  np.testing.assert_array_equal(rgb[0, 2], [0, 0, 0])  # Not finite: black.
  np.testing.assert_array_equal(rgb[0, 3], [255, 0, 0])
  np.testing.assert_array_equal(rgb[1, 1], [255, 255, 255])  # No motion: white.
  beyond = flow_lib.flow_to_rgb(2 * flow, max_flow=1.0)[0, 0]  # Beyond max_flow: darkened.
  np.testing.assert_array_equal(beyond, np.round(0.75 * wheel[27]))


# ----------------------------------------------------------------------------
# Command line and cache.


def _write_pair(tmp_path, size=32):
  rng = np.random.default_rng(7)
  image = _texture(rng, size)
  moved = _shift(image, 1, 0)
  paths = []
  for name, grey in (("a.png", image), ("b.png", moved)):
    path = str(tmp_path / name)
    cv2.imwrite(path, np.round(np.repeat(grey[..., None], 3, -1) * 255).astype(np.uint8))
    paths.append(path)
  return paths


SMALL_CLI = ["--num-scales", "2", "--num-warps", "3", "--outer-iterations", "3",
             "--inner-iterations", "20"]


def test_cli_writes_png_and_refuses_to_overwrite(tmp_path, capsys):
  a, b = _write_pair(tmp_path)
  out = str(tmp_path / "flow.png")
  raw = str(tmp_path / "flow.npy")
  assert flow_cli.main([a, b, "--out", out, "--save-flow", raw] + SMALL_CLI) == 0
  image = cv2.imread(out)
  assert image.shape == (32, 32, 3)
  flow = np.load(raw)
  assert flow.shape == (32, 32, 2)
  assert np.median(flow[8:-8, 8:-8, 0]) == pytest.approx(1.0, abs=0.05)
  # Existing output without --overwrite, output equal to an input, non-PNG.
  assert flow_cli.main([a, b, "--out", out] + SMALL_CLI) == 2
  assert "--overwrite" in capsys.readouterr().err
  before = open(a, "rb").read()
  assert flow_cli.main([a, b, "--out", a, "--overwrite"] + SMALL_CLI) == 2
  assert "is the input" in capsys.readouterr().err
  assert open(a, "rb").read() == before
  assert flow_cli.main([a, b, "--out", str(tmp_path / "x.jpg")]) == 2
  assert flow_cli.main([a, str(tmp_path / "missing.png"), "--out",
                        str(tmp_path / "y.png")]) == 2
  assert "does not exist" in capsys.readouterr().err
  assert flow_cli.main([a, b, "--out", out, "--overwrite"] + SMALL_CLI) == 0


def test_light_core_import():
  code = ("import sys, mer_jax.flow, mer_jax.flow.cache, mer_jax.flow.__main__; "
          "heavy = [m for m in ('tensorflow', 'tensorflow_datasets', 'clu', 'ml_collections', "
          "'cv2') if m in sys.modules]; print(heavy); assert not heavy, heavy")
  subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=120)


@pytest.mark.slow
def test_dataset_cli_caches_and_recomputes(data_dir, tmp_path, capsys):
  out = str(tmp_path / "cache")
  args = ["dataset", "synthetic_me/tiny", "--out", out, "--data_dir", data_dir, "--size", "32",
          "--batch-size", "4", "--num-scales", "2", "--num-warps", "2", "--outer-iterations",
          "2", "--inner-iterations", "10"]
  assert flow_cli.main(args) == 0
  assert "computed" in capsys.readouterr().out
  folders = [root for root, _, files in os.walk(out) if "manifest.json" in files]
  assert len(folders) == 1
  folder = folders[0]
  parts = os.path.relpath(folder, out).split(os.sep)
  assert parts[:2] == ["synthetic_me", "tiny"] and len(parts) == 4
  with open(os.path.join(folder, "manifest.json")) as f:
    manifest = json.load(f)
  assert manifest["num_clips"] == 9 and manifest["key"]["tvl1"]["num_warps"] == 2
  assert "apex" in manifest["apex_rule"] and len(manifest["clip_ids"]) == 9
  loaded = flow_cache.load(folder)
  assert loaded.onset_apex.shape == (9, 32, 32, 3) and loaded.apex_offset.shape == (9, 32, 32, 3)
  assert np.all(loaded.onset_apex[..., 2] >= 0) and np.abs(loaded.onset_apex[..., :2]).max() > 0
  mtime = os.path.getmtime(os.path.join(folder, "flow.npz"))
  # Same parameters: reused, not recomputed.
  assert flow_cli.main(args) == 0
  assert "reused" in capsys.readouterr().out
  assert os.path.getmtime(os.path.join(folder, "flow.npz")) == mtime
  reused = flow_cache.compute_or_load(
      "synthetic_me/tiny", out, data_dir=data_dir, size=32, progress=False,
      params=flow_lib.TVL1Params(num_scales=2, num_warps=2, outer_iterations=2,
                                 inner_iterations=10))
  assert not reused.computed and reused.path == folder
  np.testing.assert_array_equal(reused.features(loaded.clip_id[3]), loaded.onset_apex[3])
  # A changed parameter: another folder, recomputed.
  assert flow_cli.main(args[:-1] + ["11"]) == 0
  assert "computed" in capsys.readouterr().out
  assert len([r for r, _, files in os.walk(out) if "manifest.json" in files]) == 2
  # An unknown dataset / unbuilt config is a clear error.
  assert flow_cli.main(["dataset", "nope/x", "--out", out]) == 2
  assert "unknown dataset" in capsys.readouterr().err


# ----------------------------------------------------------------------------
# Accuracy against ground truth, OpenCV's TV-L1 as the peer (same parameters).


OPENCV_DEFAULTS = tvl1.TVL1Params().as_dict()


@pytest.mark.slow
def test_accuracy_on_warped_textures_vs_opencv():
  rng = np.random.default_rng(8)
  size, amplitudes = 64, (0.1, 0.3, 1.0, 3.0)
  frame0, frame1, truth = [], [], []
  for amplitude in amplitudes:
    image = _texture(rng, size)
    field = _smooth_field(rng, size, amplitude)
    frame0.append(image)
    frame1.append(np.clip(_warp_forward(image, field), 0, 1))
    truth.append(field)
  # Both solvers see the same 8-bit-quantised frames.
  quantise = lambda x: np.round(np.stack(x) * 255) / 255
  frame0, frame1, truth = quantise(frame0).astype(np.float32), quantise(frame1).astype(
      np.float32), np.stack(truth)
  ours = np.asarray(_jitted(**OPENCV_DEFAULTS)(frame0, frame1))
  theirs = _opencv_flow(frame0, frame1, OPENCV_DEFAULTS)
  # Border excluded: OpenCV fills samples outside the frame with black, we
  # replicate the edge; the comparison is about the solver, not that choice.
  margin = 6
  ours_epe = [_epe(o, t, margin) for o, t in zip(ours, truth)]
  theirs_epe = [_epe(o, t, margin) for o, t in zip(theirs, truth)]
  print("EPE ours", np.round(ours_epe, 4), "OpenCV", np.round(theirs_epe, 4))
  assert np.mean(ours_epe) <= np.mean(theirs_epe)
  for amplitude, epe in zip(amplitudes, ours_epe):
    assert epe < 0.05 + 0.05 * amplitude  # Sub-pixel accurate at every amplitude.


@pytest.mark.slow
def test_accuracy_on_synthetic_faces_vs_opencv():
  config = dataclasses.replace(synthetic.PRESETS["tiny"], nuisances=synthetic.Nuisances.off())
  subjects = synthetic.make_subjects(2, seed=0)
  frame0, frame1, truth, masks = [], [], [], []
  gx, gy = _grid(config.size)
  for index in range(4):
    clip = synthetic.render_clip(subjects[index % 2], schema.CLASS_NAMES[index % 3],
                                 np.random.default_rng([9, index]), config=config)
    grey = lambda f: np.asarray(flow_lib.to_grey(f.astype(np.float32) / 255.0))
    frame0.append(grey(clip["frames"][clip["onset"]]))
    frame1.append(grey(clip["frames"][clip["apex"]]))
    # apex_flow d is a backward map (apex(q) = neutral(q + d(q))); the forward
    # flow f from onset to apex solves f(p) = -d(p + f(p)).
    d = clip["apex_flow"]
    f = -d.copy()
    for _ in range(20):
      f = -np.stack([cv2.remap(d[..., k], gx + f[..., 0], gy + f[..., 1], cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE) for k in range(2)], -1)
    truth.append(f)
    masks.append(clip["motion_mask"] > 0)
  frame0, frame1 = np.stack(frame0), np.stack(frame1)
  ours = np.asarray(_jitted(**OPENCV_DEFAULTS)(frame0, frame1))
  theirs = _opencv_flow(frame0, frame1, OPENCV_DEFAULTS)
  masks, truth = np.stack(masks), np.stack(truth)
  ours_epe = np.linalg.norm(ours - truth, axis=-1)[masks].mean()
  theirs_epe = np.linalg.norm(theirs - truth, axis=-1)[masks].mean()
  print(f"synthetic_me EPE inside motion_mask: ours {ours_epe:.4f}, OpenCV {theirs_epe:.4f}, "
        f"mean |truth| {np.linalg.norm(truth, axis=-1)[masks].mean():.3f}")
  assert ours_epe <= theirs_epe
