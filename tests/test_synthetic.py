"""Tests of the synthetic micro-expression renderer (`mer_jax.synthetic`)."""

import dataclasses

import cv2
import numpy as np
import pytest
from scipy import stats
from sklearn import linear_model, model_selection, pipeline, preprocessing

from mer_jax import schema
from mer_jax import synthetic

DEFAULT = synthetic.PRESETS["default"]
TINY = synthetic.PRESETS["tiny"]
QUIET = dataclasses.replace(DEFAULT, nuisances=synthetic.Nuisances.off())


def _clips(config, num_subjects, per_class, salt=0):
  """Renders per_class clips of every class for num_subjects subjects."""
  subjects = synthetic.make_subjects(num_subjects, config.seed)
  for s_index, subject in enumerate(subjects):
    for c_index, class_name in enumerate(schema.CLASS_NAMES):
      for k in range(per_class):
        rng = np.random.default_rng([salt, s_index, c_index, k])
        yield s_index, synthetic.render_clip(subject, class_name, rng, config=config)


def test_same_seed_gives_identical_clips_and_other_seeds_differ():
  subject = synthetic.make_subjects(2, seed=3)[1]
  a = synthetic.render_clip(subject, "positive", np.random.default_rng(11), config=TINY)
  b = synthetic.render_clip(subject, "positive", np.random.default_rng(11), config=TINY)
  c = synthetic.render_clip(subject, "positive", np.random.default_rng(12), config=TINY)
  assert a["frames"].tobytes() == b["frames"].tobytes()
  assert a["apex_flow"].tobytes() == b["apex_flow"].tobytes()
  assert (a["onset"], a["apex"], a["offset"]) == (b["onset"], b["apex"], b["offset"])
  assert a["frames"].tobytes() != c["frames"].tobytes()
  # Dataset level: the whole generator is a function of the config.
  first = [(k, e["frames"].tobytes()) for k, e in synthetic.generate_dataset(TINY)]
  second = [(k, e["frames"].tobytes()) for k, e in synthetic.generate_dataset(TINY)]
  assert first == second
  reseeded = dict((k, e["frames"].tobytes())
                  for k, e in synthetic.generate_dataset(dataclasses.replace(TINY, seed=1)))
  assert all(reseeded[k] != frames for k, frames in first)
  # Subjects: same seed -> same people; another seed -> other people.
  assert synthetic.make_subjects(4, 0) == synthetic.make_subjects(4, 0)
  assert synthetic.make_subjects(4, 0)[:2] == synthetic.make_subjects(2, 0)
  assert all(p != q for p, q in zip(synthetic.make_subjects(4, 0), synthetic.make_subjects(4, 1)))


def test_clip_fields_shapes_and_timing():
  subject = synthetic.make_subjects(1)[0]
  for seed in range(6):
    clip = synthetic.render_clip(subject, schema.CLASS_NAMES[seed % 3],
                                 np.random.default_rng(seed), config=TINY)
    clip["clip_id"] = f"test{seed}"
    schema.validate_example(clip, where=f"seed {seed}")
    assert clip["frames"].shape == (TINY.num_frames, TINY.size, TINY.size, 3)
    assert clip["frames"].dtype == np.uint8
    assert clip["apex_flow"].shape == (TINY.size, TINY.size, 2)
    assert clip["apex_flow"].dtype == np.float32
    assert clip["motion_mask"].dtype == np.uint8
    assert set(np.unique(clip["motion_mask"])) == {0, 1}
    assert clip["onset"] < clip["apex"] < clip["offset"] < TINY.num_frames
    assert TINY.min_duration_frames <= clip["offset"] - clip["onset"] <= TINY.max_duration_frames
    assert clip["action_units"] == "+".join(synthetic.CLASS_ACTION_UNITS[clip["class_name"]])
    assert clip["apex_source"] == "ground_truth" and clip["dataset"] == "synthetic_me"
  profile = synthetic.temporal_profile(20, 3, 7, 15)
  assert profile[:4].tolist() == [0, 0, 0, 0] and profile[15:].tolist() == [0] * 5
  assert profile[7] == 1 and np.all(np.diff(profile[3:8]) > 0) and np.all(np.diff(profile[7:16]) < 0)


def test_frames_are_warps_of_the_neutral_face_with_the_configured_amplitude():
  """Nuisances off: the motion is where and as large as the ground truth says."""
  fractions, scales = [], []
  for _, clip in _clips(QUIET, num_subjects=2, per_class=1):
    flow = clip["apex_flow"]
    magnitude = np.hypot(flow[..., 0], flow[..., 1])
    np.testing.assert_allclose(magnitude.max(), QUIET.amplitude_px, rtol=1e-5)
    frames = clip["frames"].astype(np.float32)
    onset, apex, offset = clip["onset"], clip["apex"], clip["offset"]
    # Outside [onset, offset] the face is exactly neutral.
    assert np.array_equal(frames[onset], frames[0]) and np.array_equal(frames[offset], frames[-1])
    assert np.array_equal(frames[0], frames[-1])
    # Frame-difference energy at the apex lies inside the motion mask.
    energy = ((frames[apex] - frames[onset]) ** 2).sum(-1)
    fractions.append(energy[clip["motion_mask"] > 0].sum() / energy.sum())
    # Displacement actually present in the pixels: least-squares fit of
    # apex - onset ~ scale * (grad(neutral) . flow) on slightly blurred frames
    # (the blur makes the first-order model hold on sharp edges). A wrong
    # amplitude scales the fit; a wrong sign convention flips it to -1.
    neutral, moved = (cv2.GaussianBlur(frames[t], (0, 0), 2.0) for t in (onset, apex))
    grad_y, grad_x = np.gradient(neutral, axis=(0, 1))
    predicted = grad_x * flow[..., :1] + grad_y * flow[..., 1:]
    inside = clip["motion_mask"][..., None] > 0
    scales.append(((moved - neutral) * predicted * inside).sum() / ((predicted**2) * inside).sum())
  assert min(fractions) > 0.9, fractions
  assert 0.85 < np.median(scales) < 1.15, scales


def test_nuisances_carry_motion_outside_the_mask_but_expression_dominates():
  fractions, mask_areas = [], []
  for _, clip in _clips(DEFAULT, num_subjects=2, per_class=1):
    frames = clip["frames"].astype(np.float32)
    energy = ((frames[clip["apex"]] - frames[clip["onset"]]) ** 2).sum(-1)
    fractions.append(energy[clip["motion_mask"] > 0].sum() / energy.sum())
    mask_areas.append(clip["motion_mask"].mean())
  print(f"apex-onset energy inside motion_mask with nuisances: mean {np.mean(fractions):.3f} "
        f"(mask covers {np.mean(mask_areas):.3f} of the frame)")
  assert np.mean(fractions) < 0.95  # nuisances do move pixels elsewhere ...
  assert np.mean(fractions) > 2 * np.mean(mask_areas)  # ... but the expression dominates


def test_each_nuisance_changes_frames_and_none_depends_on_the_class():
  subject = synthetic.make_subjects(1)[0]
  off = synthetic.Nuisances.off()
  base = synthetic.render_clip(subject, "negative", np.random.default_rng(0), config=TINY,
                               amplitude_px=0.0, nuisances=off)
  assert not base["apex_flow"].any() and not base["motion_mask"].any()
  assert np.array_equal(base["frames"][0], base["frames"][-1])  # a still face
  for name, value in (("head_translation_px", 0.5), ("head_rotation_deg", 0.5), ("noise_std", 2.0),
                      ("flicker", 0.02), ("blink_prob", 1.0)):
    nuisances = dataclasses.replace(off, **{name: value})
    clip = synthetic.render_clip(subject, "negative", np.random.default_rng(0), config=TINY,
                                 amplitude_px=0.0, nuisances=nuisances)
    assert not np.array_equal(clip["frames"], base["frames"]), name
  # Nuisance streams are separate from the class's: at zero amplitude the
  # classes are pixel-identical given the same random state.
  renders = [synthetic.render_clip(subject, c, np.random.default_rng(7), config=TINY,
                                   amplitude_px=0.0, nuisances=synthetic.Nuisances(distractor_prob=1.0))
             for c in schema.CLASS_NAMES]
  assert renders[0]["distractor_action_units"] in synthetic.DISTRACTOR_ACTION_UNITS
  assert all(np.array_equal(r["frames"], renders[0]["frames"]) for r in renders[1:])


def _motion_features(clip):
  """Apex-onset difference as a pooled one-step Lucas-Kanade motion estimate.

  Per 16x16 cell: -sum(diff * grad) / (sum(|grad|^2) + eps), i.e. the
  displacement that best explains the grey-level difference. Raw differences
  pooled over a cell cancel (a shifted edge gives a +/- pair), and their
  magnitude cannot tell a raised brow from a lowered one.
  """
  frames = clip["frames"].astype(np.float32).mean(-1)
  onset, apex = (cv2.GaussianBlur(frames[t], (0, 0), 1.0) for t in (clip["onset"], clip["apex"]))
  grad_y, grad_x = np.gradient(onset)
  diff = apex - onset
  pool = lambda image: cv2.resize(image, (16, 16), interpolation=cv2.INTER_AREA)
  norm = pool(grad_x**2 + grad_y**2) + 4.0
  return np.concatenate([(pool(-diff * grad_x) / norm).ravel(), (pool(-diff * grad_y) / norm).ravel()])


def _loso_accuracy(config):
  """Leave-one-subject-out accuracy of logistic regression on `_motion_features`."""
  features, labels, groups = [], [], []
  for subject_index, clip in _clips(config, num_subjects=6, per_class=2, salt=1):
    features.append(_motion_features(clip))
    labels.append(clip["label"])
    groups.append(subject_index)
  classifier = pipeline.make_pipeline(preprocessing.StandardScaler(),
                                      linear_model.LogisticRegression(C=0.1, max_iter=2000))
  predicted = model_selection.cross_val_predict(
      classifier, np.array(features), np.array(labels), groups=np.array(groups),
      cv=model_selection.LeaveOneGroupOut())
  return float(np.mean(predicted == np.array(labels))), len(labels)


def test_no_label_leakage_at_zero_amplitude_and_learnable_at_default():
  """Chance without the expression, above chance with it (one-sided binomial bound)."""
  # The default amplitude, size and nuisances; a shorter clip at 100 fps keeps
  # the test fast (timing does not change the apex - onset difference).
  config = dataclasses.replace(DEFAULT, fps=100.0, num_frames=24)
  null_accuracy, n = _loso_accuracy(dataclasses.replace(config, amplitude_px=0.0))
  accuracy, _ = _loso_accuracy(config)
  # Smallest accuracy that chance (p = 1/3) reaches with probability <= 0.1%.
  bound = (stats.binom.isf(0.001, n, 1 / 3) + 1) / n
  print(f"LOSO logistic regression on {n} clips: amplitude 0 -> {null_accuracy:.3f}, "
        f"amplitude {DEFAULT.amplitude_px} px -> {accuracy:.3f} (chance bound {bound:.3f})")
  assert null_accuracy < bound
  assert accuracy >= bound


def test_classes_balanced_per_subject_and_subjects_distinct():
  config = dataclasses.replace(TINY, clips_per_class_per_subject=2, num_frames=12, fps=50.0)
  counts = {}
  clip_ids = set()
  for clip_id, example in synthetic.generate_dataset(config):
    key = (example["subject"], example["label"])
    counts[key] = counts.get(key, 0) + 1
    clip_ids.add(clip_id)
    assert example["class_name"] not in clip_id  # ids carry no label
  subjects = [f"s{i:02d}" for i in range(config.num_subjects)]
  assert counts == {(s, c): 2 for s in subjects for c in range(schema.NUM_CLASSES)}
  assert len(clip_ids) == config.num_clips
  people = synthetic.make_subjects(16, seed=0)
  assert [p.subject_id for p in people] == [f"s{i:02d}" for i in range(16)]
  vectors = np.stack([p.vector() for p in people])
  spread = vectors.std(0) + 1e-12
  z = vectors / spread
  distances = np.sqrt(((z[:, None] - z[None]) ** 2).sum(-1))[np.triu_indices(16, 1)]
  assert distances.min() > 1.0  # every pair differs by > 1 std over all parameters
  faces = [synthetic.render_neutral(p, 64).composite() for p in people]
  gaps = [np.abs(faces[i] - faces[j]).mean() for i in range(16) for j in range(i + 1, 16)]
  assert min(gaps) > 5.0  # grey levels: different people look different


@pytest.mark.parametrize("kwargs, parameter", [
    ({"amplitude_px": -0.1}, "amplitude_px"),
    ({"max_duration_s": 0.5}, "max_duration_s"),  # 100 frames at 200 fps > 48-frame clip
    ({"min_duration_s": 0.3, "max_duration_s": 0.2}, "min_duration_s"),
    ({"fps": 0.0}, "fps"),
    ({"size": 16}, "size"),
    ({"num_subjects": 0}, "num_subjects"),
    ({"seed": -1}, "seed"),
    ({"amplitude_px": float("nan")}, "amplitude_px"),
])
def test_bad_config_raises_naming_the_parameter(kwargs, parameter):
  with pytest.raises(ValueError, match=parameter):
    synthetic.SyntheticConfig(**kwargs)


def test_bad_render_arguments_raise_clear_errors():
  subject = synthetic.make_subjects(1)[0]
  rng = np.random.default_rng(0)
  with pytest.raises(ValueError, match="class_name 'anger'"):
    synthetic.render_clip(subject, "anger", rng, config=TINY)
  with pytest.raises(ValueError, match="amplitude_px"):
    synthetic.render_clip(subject, "negative", rng, config=TINY, amplitude_px=-1.0)
  with pytest.raises(ValueError, match="max_duration_s"):
    synthetic.render_clip(subject, "negative", rng, config=TINY, num_frames=10)
  with pytest.raises(ValueError, match="unknown parameter"):
    synthetic.render_clip(subject, "negative", rng, config=TINY, amplitude=1.0)
  with pytest.raises(ValueError, match="Nuisances.noise_std"):
    synthetic.Nuisances(noise_std=-1.0)
  with pytest.raises(ValueError, match="blink_prob"):
    synthetic.Nuisances(blink_prob=1.5)
  with pytest.raises(ValueError, match="num"):
    synthetic.make_subjects(0)


def test_strip_command_writes_a_small_png(tmp_path):
  out = tmp_path / "strip.png"
  synthetic.main(["strip", "--config", "tiny", "--out", str(out)])
  image = cv2.imread(str(out))
  assert image is not None and image.shape[0] > 100 and image.shape[1] > 300
  assert out.stat().st_size < 300_000


def test_each_test_tier_has_a_dev_twin_that_differs_only_in_seed():
  # Choices are made on the twin: same recipe, other subjects and clips.
  for tier, twin in (("default", "dev"), ("low_amplitude", "low_amplitude_dev")):
    test, dev = synthetic.PRESETS[tier], synthetic.PRESETS[twin]
    assert test.seed != dev.seed
    assert dataclasses.replace(dev, seed=test.seed) == test
  test_subjects = synthetic.make_subjects(2, seed=synthetic.PRESETS["low_amplitude"].seed)
  dev_subjects = synthetic.make_subjects(2, seed=synthetic.PRESETS["low_amplitude_dev"].seed)
  assert test_subjects[0].vector().tolist() != dev_subjects[0].vector().tolist()
