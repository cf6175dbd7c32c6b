"""The spotting network's shapes, windowed scoring, and the per-frame features and targets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mer_jax.spotting import features
from mer_jax.spotting import model


def test_frame_spotter_shapes_and_receptive_radius():
  spotter = model.FrameSpotter(features=8, dilations=(1, 2, 4))
  maps = jnp.zeros((2, 40, 8, 8, 3))
  params = spotter.init(jax.random.PRNGKey(0), maps)["params"]
  assert spotter.apply({"params": params}, maps).shape == (2, 40, 3)
  assert spotter.receptive_radius == 7
  recogniser = model.IntervalRecogniser(num_classes=3, features=8)
  rec_params = recogniser.init(jax.random.PRNGKey(1), jnp.zeros((1, 16, 16, 3)))["params"]
  assert recogniser.apply({"params": rec_params}, jnp.zeros((5, 16, 16, 3))).shape == (5, 3)


def test_windowed_scoring_equals_scoring_the_whole_video():
  spotter = model.FrameSpotter(features=8, dilations=(1, 2, 4))
  rng = np.random.default_rng(0)
  maps = rng.normal(size=(101, 6, 6, 3)).astype(np.float32)
  params = spotter.init(jax.random.PRNGKey(0), jnp.asarray(maps[None]))["params"]
  apply = jax.jit(lambda x: spotter.apply({"params": params}, x))
  # The whole video with zero maps beyond both ends (what the windows see there).
  r = spotter.receptive_radius
  padded = np.pad(maps, [(r, r), (0, 0), (0, 0), (0, 0)])
  whole = np.asarray(apply(jnp.asarray(padded[None])))[0, r:-r]
  windowed = model.windowed_logits(apply, maps, window=16, context=spotter.receptive_radius,
                                   batch_size=3)
  np.testing.assert_allclose(windowed, whole, atol=1e-5)
  # Too little context changes frames near the window edges: the check can fail.
  short = model.windowed_logits(apply, maps, window=16, context=1, batch_size=3)
  assert np.abs(short - whole).max() > 1e-3


def test_frame_offset_follows_fps():
  assert features.frame_offset(30.0, 0.35) == 5
  assert features.frame_offset(200.0, 0.35) == 35
  assert features.frame_offset(5.0, 0.1) == 1
  with pytest.raises(ValueError, match="fps"):
    features.frame_offset(0.0, 0.35)


def test_pairs_are_centred_and_clamped():
  first, second = features.pair_indices(10, 4)
  assert first.tolist() == [0, 0, 0, 1, 2, 3, 4, 5, 6, 7]
  assert second.tolist() == [2, 3, 4, 5, 6, 7, 8, 9, 9, 9]


def test_frame_labels():
  labels = features.frame_labels(12, [(2, 4, "micro"), (7, 10, "macro")])
  assert labels.tolist() == [0, 0, 1, 1, 1, 0, 0, 2, 2, 2, 2, 0]


def test_apex_candidates_lie_in_the_interval():
  c = features.apex_candidates(10, 40, count=6)
  assert c[0] == 11 and c[-1] == 40 and len(c) == 6
  assert features.apex_candidates(5, 7, count=6).tolist() == [6, 7]
