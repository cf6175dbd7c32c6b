"""`specific_layer="auto"`: Grad-CAM layer selection on training subjects only."""

import json

import numpy as np
import pytest

from conftest import tiny_policy_config
from mer_jax import input_pipeline
from mer_jax import layer_selection
from mer_jax.models import resnet

TEST_SUBJECT = "synthetic_me/s00"
TRAIN_SUBJECTS = ("synthetic_me/s01", "synthetic_me/s02")


def auto_config(data_dir):
  """Policy II with l_s = "auto" on synthetic_me/tiny, a 2-stage width-4 ResNet at 32x32."""
  config = tiny_policy_config(data_dir, "II", "auto")
  config.input.num_frames = 3
  return config


@pytest.mark.slow
def test_selection_scores_candidates_on_training_subjects_only(data_dir, tmp_path):
  config = auto_config(data_dir)
  builder = input_pipeline.get_builder(config.dataset)
  index = input_pipeline.read_clip_index(builder)
  selection = layer_selection.select_layer(config, builder, TRAIN_SUBJECTS, num_clips=6)

  assert list(selection.scores) == ["layer1", "layer2"]
  assert selection.layer in selection.scores
  assert selection.scores[selection.layer] == max(selection.scores.values())
  assert all(0.0 <= s <= 1.0 for s in selection.scores.values())
  assert selection.mask_source == "motion_mask"
  assert 0.0 < selection.chance < 1.0
  # Every scored clip is a training subject's; the held-out subject's never are.
  assert len(selection.clip_ids) == 6 and set(selection.subjects) == set(TRAIN_SUBJECTS)
  held_out = set(index.clip_id[index.subject_key == TEST_SUBJECT].tolist())
  assert held_out and not held_out & set(selection.clip_ids)
  allowed = set(index.clip_id[np.isin(index.subject_key, TRAIN_SUBJECTS)].tolist())
  assert set(selection.clip_ids) <= allowed

  # A different region mask changes the scores (the mask really is what is scored).
  top_rows = np.zeros((8, 8), np.uint8)
  top_rows[:2] = 1
  np.save(tmp_path / "top.npy", top_rows)
  config.transfer.region_mask_path = str(tmp_path / "top.npy")
  by_file = layer_selection.select_layer(config, builder, TRAIN_SUBJECTS, num_clips=6)
  assert by_file.mask_source == f"file:{tmp_path / 'top.npy'}"
  assert by_file.chance == pytest.approx(0.25)
  assert by_file.scores != selection.scores


@pytest.mark.slow
def test_config_for_fold_records_and_reuses_the_choice(data_dir, tmp_path):
  config = auto_config(data_dir)
  builder = input_pipeline.get_builder(config.dataset)
  fold = input_pipeline.loso_folds(input_pipeline.read_clip_index(builder), folds=["s00"])[0]
  assert fold.test_subject == TEST_SUBJECT
  resolved = layer_selection.config_for_fold(config, builder, fold, 0, str(tmp_path))
  record = tmp_path / "folds" / fold.name / "layer_selection.json"
  saved = json.loads(record.read_text())
  assert resolved.transfer.specific_layer == saved["layer"] in ("layer1", "layer2")
  assert config.transfer.specific_layer == "auto"  # The caller's config is untouched.
  assert TEST_SUBJECT not in saved["subjects"]

  # On resume the recorded choice is used, not a fresh selection.
  saved["layer"] = "layer1_0"
  record.write_text(json.dumps(saved))
  again = layer_selection.config_for_fold(config, builder, fold, 0, str(tmp_path))
  assert again.transfer.specific_layer == "layer1_0"

  # Policy I and fixed layers pass through unchanged.
  config.transfer.specific_layer = "layer2"
  assert layer_selection.config_for_fold(config, builder, fold, 0, str(tmp_path)) is config


def test_choose_clips_interleaves_classes_within_subjects(data_dir):
  config = auto_config(data_dir)
  index = input_pipeline.read_clip_index(input_pipeline.get_builder(config.dataset))
  clips = layer_selection.choose_clips(index, TRAIN_SUBJECTS, 3, seed=1)
  rows = [int(np.flatnonzero(index.clip_id == c)[0]) for c in clips]
  assert sorted(index.label[rows].tolist()) == [0, 1, 2]
  assert set(index.subject_key[rows]) <= set(TRAIN_SUBJECTS)
  assert clips == layer_selection.choose_clips(index, TRAIN_SUBJECTS, 3, seed=1)
  with pytest.raises(ValueError, match="no clips"):
    layer_selection.choose_clips(index, ["synthetic_me/nobody"], 3)


def test_candidate_layers_follow_truncation():
  full = resnet.ResNet(stage_sizes=(2, 2, 2), block="basic", base_width=4)
  assert layer_selection.candidate_layers(full) == ("layer1", "layer2", "layer3")
  cut = full.clone(truncate_after="layer2_0")
  assert layer_selection.candidate_layers(cut) == ("layer1", "layer2_0")
  assert layer_selection.candidate_layers(cut, "block") == ("layer1_0", "layer1_1", "layer2_0")
  with pytest.raises(ValueError, match="granularity"):
    layer_selection.candidate_layers(full, "conv")
  with pytest.raises(ValueError, match="ResNet encoder"):
    layer_selection.candidate_layers(object())


def test_face_region_prior_covers_eyes_nose_mouth():
  prior = layer_selection.face_region_prior(64)
  assert prior.shape == (64, 64) and prior.dtype == np.uint8
  assert 0.15 < prior.mean() < 0.3
  np.testing.assert_array_equal(prior, prior[:, ::-1])  # Left-right symmetric.
  assert prior[int(0.34 * 64), int(0.32 * 64)] and prior[int(0.77 * 64), 32]  # Eye, mouth.
  assert not prior[2, 2] and not prior[32, 2]  # Hair corner, cheek edge.


def test_region_mask_file_errors_name_the_file(tmp_path):
  path = str(tmp_path / "m.npy")
  with pytest.raises(ValueError, match="no file"):
    layer_selection.load_region_mask(path, 8)
  np.save(path, np.ones((2, 4, 4), np.uint8))
  with pytest.raises(ValueError, match=r"m\.npy.*2-D"):
    layer_selection.load_region_mask(path, 8)
  np.save(path, np.full((4, 4), 3, np.uint8))
  with pytest.raises(ValueError, match=r"m\.npy.*0/1"):
    layer_selection.load_region_mask(path, 8)
  np.save(path, np.zeros((4, 4), bool))
  with pytest.raises(ValueError, match="all zero"):
    layer_selection.load_region_mask(path, 8)
  mask = np.zeros((4, 4), bool)
  mask[:, :2] = True
  np.save(path, mask)
  resized = layer_selection.load_region_mask(path, 8)
  assert resized.shape == (8, 8) and resized[:, :4].all() and not resized[:, 4:].any()
