"""Parameter-free pools: grid cells are the quadrant means, max, flatten, masked mean."""

import jax.numpy as jnp
import numpy as np
import pytest

from mer_jax.models import build_part
from mer_jax.models import sequence


def _apply(name, x, **kwargs):
  part = build_part("spatial_pool", name, kwargs)
  return part.apply({}, x, train=False)


def test_grid_pool_cells_are_region_means():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 6, 3)), jnp.float32)
  out = np.asarray(_apply("grid", x, grid_size=2))
  assert out.shape == (2, 4 * 3)
  cells = [x[:, :2, :3], x[:, :2, 3:], x[:, 2:, :3], x[:, 2:, 3:]]
  expected = np.concatenate([np.asarray(c.mean(axis=(1, 2))) for c in cells], axis=-1)
  np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_grid_pool_uneven_cells_cover_the_map():
  # 5 rows into 2 cells: rows 0-2 and 2-4 (adaptive pooling overlaps by one row).
  x = jnp.broadcast_to(jnp.arange(5.0).reshape(1, 5, 1, 1), (1, 5, 2, 1))
  out = np.asarray(_apply("grid", x, grid_size=2)).reshape(-1)  # Cells in row-major order.
  np.testing.assert_allclose(out[:2], [1.0, 1.0])  # Top cells: mean of rows 0, 1, 2.
  np.testing.assert_allclose(out[2:], [3.0, 3.0])  # Bottom cells: mean of rows 2, 3, 4.


def test_grid_pool_rejects_too_fine_a_grid():
  with pytest.raises(ValueError, match="grid_size=5"):
    _apply("grid", jnp.zeros((1, 4, 4, 2)), grid_size=5)


def test_max_and_flatten_pools():
  x = jnp.asarray(np.random.default_rng(1).normal(size=(3, 2, 2, 4)), jnp.float32)
  np.testing.assert_allclose(_apply("max", x), np.asarray(x).max(axis=(1, 2)))
  np.testing.assert_allclose(_apply("flatten", x), np.asarray(x).reshape(3, -1))


def test_masked_mean_ignores_padding():
  x = jnp.asarray([[[1.0], [3.0], [100.0]]])
  mask = jnp.asarray([[True, True, False]])
  np.testing.assert_allclose(sequence.masked_mean(x, mask), [[2.0]])
  np.testing.assert_allclose(sequence.masked_mean(x, jnp.zeros_like(mask)), [[0.0]])


def test_unknown_part_arguments_are_named():
  with pytest.raises(ValueError, match=r"spatial_pool 'mean' has no argument\(s\) \['grid_size'\]"):
    build_part("spatial_pool", "mean", {"grid_size": 4})
