"""`python -m mer_jax.gradcam_report`: before/after Grad-CAM pictures of a trained workdir."""

import json
import os

import matplotlib.image
import numpy as np
import pytest
import tensorflow as tf

from mer_jax import gradcam_report

FOLD = "synthetic_me__s00"
# One xdist worker runs every test that shares the `policy_run` trainings (--dist loadgroup).
# Trains tiny models end to end: the slow lane.
pytestmark = [pytest.mark.xdist_group("policy_runs"), pytest.mark.slow]


@pytest.fixture(scope="module")
def workdir(policy_run):
  """The shared tiny policy-II run (l_s = layer2, 2 stages) trained for two steps on one fold."""
  return policy_run("II")[1]


def test_report_writes_pictures_summary_and_tensorboard_images(workdir):
  summary = gradcam_report.render_report(workdir, num_clips=2)
  out = os.path.join(workdir, "gradcam")

  # Default layers: every stage of the (untruncated, policy II) encoder.
  fold = summary[FOLD]
  assert list(fold["layers"]) == ["layer1", "layer2"]
  assert fold["test_subject"] == "synthetic_me/s00" and fold["step"] == 2
  assert fold["mask_source"] == "motion_mask" and 0 < fold["chance"] < 1
  assert len(fold["clip_ids"]) == 2 and all(c.startswith("s00") for c in fold["clip_ids"])
  for values in fold["layers"].values():
    assert set(values) == {"before", "after"}
    assert all(0.0 <= v <= 1.0 for v in values.values())
  # layer2 (l_s) trains under policy II, so its heat maps move; layer1 is frozen but its
  # maps are gradients of the (trained) classifier's score, so both may move.
  assert fold["layers"]["layer2"]["before"] != fold["layers"]["layer2"]["after"]
  with open(os.path.join(out, "summary.json")) as f:
    assert json.load(f) == summary

  for layer in ("layer1", "layer2"):
    image = matplotlib.image.imread(os.path.join(out, f"{FOLD}_{layer}_before_after.png"))
    # Rows before/after/mask by 2 clip columns at 1.6 in x 100 dpi per cell.
    assert image.shape[:2] == (480, 320)
    assert np.ptp(image[..., :3]) > 0.5

  tags = set()
  for name in os.listdir(out):
    if name.startswith("events.out.tfevents"):
      for event in tf.compat.v1.train.summary_iterator(os.path.join(out, name)):
        tags |= {v.tag for v in event.summary.value}
  assert {f"gradcam/{FOLD}/layer1", f"gradcam/{FOLD}/layer2"} <= tags


def test_report_names_unknown_folds_and_missing_workdirs(workdir, tmp_path):
  with pytest.raises(ValueError, match="--fold='s09'.*trained folds"):
    gradcam_report.render_report(workdir, folds=["s09"], layers=["layer1"])
  with pytest.raises(ValueError, match="no config.json"):
    gradcam_report.render_report(str(tmp_path))
