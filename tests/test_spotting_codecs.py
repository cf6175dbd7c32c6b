"""Lossy codec copies of videos (mer_jax.spotting.codecs) and their place in the feature cache."""

import dataclasses

import numpy as np
import pytest

from mer_jax import synthetic_long
from mer_jax.spotting import codecs
from mer_jax.spotting import data as data_lib


def _moving_square(num_frames=24, size=64):
  """uint8 RGB frames of a textured square moving one pixel per frame on a grey ramp."""
  frames = np.empty((num_frames, size, size, 3), np.uint8)
  ramp = np.linspace(60, 180, size, dtype=np.float32)[None, :]
  rng = np.random.default_rng(0)
  texture = rng.integers(0, 60, (16, 16)).astype(np.float32)
  for t in range(num_frames):
    image = np.repeat(ramp, size, axis=0).copy()
    image[20:36, 10 + t:26 + t] += texture
    frames[t] = np.clip(image, 0, 255).astype(np.uint8)[..., None]
  return frames


@pytest.mark.parametrize("codec", sorted(codecs.CODECS))
def test_a_roundtrip_returns_every_frame_changed_but_close(codec):
  frames = _moving_square()
  back = codecs.roundtrip(frames, 30.0, codec)
  assert back.shape == frames.shape and back.dtype == np.uint8
  error = np.abs(back.astype(np.float32) - frames.astype(np.float32))
  # Lossy: the frames change; close: the image is still the image (grey levels of 255).
  assert error.mean() > 0.05
  assert error.mean() < 12.0, f"{codec}: mean error {error.mean():.2f}"


def test_bad_codec_names_and_frames_are_refused_with_the_field_named():
  assert codecs.parse(" mp4v, vp09 ", "config.eval_codecs") == ("mp4v", "vp09")
  assert codecs.parse("", "config.eval_codecs") == ()
  with pytest.raises(ValueError, match=r"config\.eval_codecs='h265'.*unknown: \['h265'\]"):
    codecs.parse("h265", "config.eval_codecs")
  with pytest.raises(ValueError, match="each at most once"):
    codecs.parse("mp4v,mp4v", "config.dataset.train_codecs")
  with pytest.raises(ValueError, match="unknown codec 'h265'"):
    codecs.roundtrip(_moving_square(), 30.0, "h265")
  with pytest.raises(ValueError, match=r"uint8 RGB frames \(T, H, W, 3\), got float32"):
    codecs.roundtrip(_moving_square().astype(np.float32), 30.0, "mp4v")
  assert codecs.copy_id("s03/v01", "mp4v") == "s03/v01@mp4v"
  assert codecs.codec_of("s03/v01@mp4v") == "mp4v" and codecs.codec_of("s03/v01") == ""


def test_a_codec_copy_is_cached_apart_and_originals_keep_their_fingerprint():
  generator = dataclasses.asdict(synthetic_long.PRESETS["tiny"])
  original = data_lib._cache_key(generator, data_lib.FeatureSettings())
  copy = data_lib._cache_key(generator, data_lib.FeatureSettings(codec="mp4v"))
  # The originals' key is the one from before codecs existed (no "codec" anywhere), so
  # finished runs and caches keep their fingerprints.
  assert "codec" not in original and "codec" not in original["settings"]
  assert copy["codec"]["name"] == "mp4v" and "opencv" in copy["codec"]
  assert data_lib.dataset_fingerprint("tiny", data_lib.FeatureSettings()) != (
      data_lib.dataset_fingerprint("tiny", data_lib.FeatureSettings(codec="mp4v")))
