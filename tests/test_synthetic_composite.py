"""Tests of the composite-shaped tier of `synthetic_me` (`synthetic.COMPOSITE_PRESETS`).

Counts and determinism are checked on the clip *plan* (no pixels); a handful
of clips is rendered for shapes, frame rates and sizes; the leakage check
renders a class-balanced subset.
"""

import collections
import dataclasses
import hashlib

import numpy as np
import pytest
from scipy import stats
from sklearn import linear_model, model_selection, pipeline, preprocessing

import data_builders.synthetic_me as synthetic_me
import fake_trees
from benchmarks import classical_baseline
from mer_jax import schema
from mer_jax import synthetic

COMPOSITE = synthetic.COMPOSITE_PRESETS["composite"]
DEV = synthetic.COMPOSITE_PRESETS["composite_dev"]
SETUPS = {  # name: (subjects, clips, fps, frame size, negative/positive/surprise)
    "synthetic_smic_hs": (16, 164, 100.0, 64, (70, 51, 43)),
    "synthetic_casme2": (24, 145, 200.0, 80, (88, 32, 25)),
    "synthetic_samm": (28, 133, 200.0, 96, (92, 26, 15)),
}

# sha256 of every clip of `synthetic_me/tiny` as rendered by
# `synthetic.generate_dataset(PRESETS["tiny"])` (see `_tiny_digest`), computed
# on 2026-11-29 from the code at commit 5c114a2 *before* the composite knobs
# (brightness, grayscale, action_units, timing) were added to the renderer.
# The knobs' defaults must keep the existing tiers' records bit-identical.
TINY_DIGEST_BEFORE_COMPOSITE = "a08e8d581ef16f5140b6679d5963f02eb1ed53ac06e1ca4e84f9a49933059769"


def _tiny_digest() -> str:
  digest = hashlib.sha256()
  for clip_id, ex in synthetic.generate_dataset(synthetic.PRESETS["tiny"]):
    digest.update(clip_id.encode())
    for key in ("frames", "apex_flow", "motion_mask"):
      digest.update(np.ascontiguousarray(ex[key]).tobytes())
    for key in ("label", "subject", "dataset", "fps", "onset", "apex", "offset", "action_units",
                "emotion", "apex_source", "distractor_action_units", "blink"):
      digest.update(repr(ex[key]).encode())
  return digest.hexdigest()


def test_existing_tiers_render_exactly_as_before_the_composite_knobs():
  assert _tiny_digest() == TINY_DIGEST_BEFORE_COMPOSITE
  # Their builder configs keep the builder's version; the composite configs
  # carry their own. (Both moved to 2.0.0 together for ArrayRecord, issue 12.)
  configs = {c.name: c for c in synthetic_me.Builder.BUILDER_CONFIGS}
  assert str(synthetic_me.Builder.VERSION) == "2.0.0"
  for name in synthetic.PRESETS:
    assert configs[name].version is None, name
  for name in synthetic.COMPOSITE_PRESETS:
    assert configs[name].params is synthetic.COMPOSITE_PRESETS[name]
    assert str(configs[name].version) == "2.0.0" and "442 clips" in configs[name].description


@pytest.mark.parametrize("config", [COMPOSITE, DEV], ids=["composite", "composite_dev"])
def test_plan_has_the_megc2019_composite_counts(config):
  plans = synthetic.plan_composite(config)
  assert len(plans) == config.num_clips == 442
  assert collections.Counter(p.class_name for p in plans) == {
      "negative": 250, "positive": 109, "surprise": 83}
  keys = {f"{p.dataset}/{p.subject}" for p in plans}
  assert len(keys) == config.num_subjects == 68
  assert len({p.clip_id for p in plans}) == 442  # unique over the whole composite
  # Subject ids repeat across setups: only `dataset/subject` tells people apart.
  assert len({p.subject for p in plans}) == 28
  for name, (subjects, clips, fps, size, per_class) in SETUPS.items():
    mine = [p for p in plans if p.dataset == name]
    assert len(mine) == clips and len({p.subject for p in mine}) == subjects, name
    counts = collections.Counter(p.class_name for p in mine)
    assert tuple(counts[c] for c in schema.CLASS_NAMES) == per_class, name
    assert {p.fps for p in mine} == {fps} and {p.size for p in mine} == {size}, name
    per_subject = collections.Counter(p.subject for p in mine)
    assert max(per_subject.values()) >= 5 * min(per_subject.values()), name  # uneven
  for p in plans:
    assert p.clip_id.startswith(f"{p.dataset}/{p.subject}/")
    assert p.class_name not in p.clip_id
    assert 0 <= p.onset < p.apex < p.offset < p.num_frames
    assert 0 <= p.annotated_onset < p.annotated_apex < p.annotated_offset < p.num_frames
    assert p.action_units in synthetic.CLASS_ACTION_UNIT_VARIANTS[p.class_name]
    assert 0 < p.amplitude_px <= 0.1 * p.size
    # Real micro-expression durations (0.1-0.25 s here) at the setup's rate.
    assert 0.1 * p.fps - 1 <= p.offset - p.onset <= 0.25 * p.fps + 1
    if p.dataset == "synthetic_smic_hs":  # no apex annotation: the midpoint rule
      assert p.apex_source == "midpoint"
      assert p.annotated_apex == (p.annotated_onset + p.annotated_offset) // 2
    else:
      assert p.apex_source == "annotated"
  # Annotators err: the recorded onsets and apexes are often not the true ones.
  annotated = [p for p in plans if p.apex_source == "annotated"]
  assert np.mean([p.annotated_onset != p.onset for p in plans]) > 0.3
  assert np.mean([p.annotated_apex != p.apex for p in annotated]) > 0.5
  # People differ in how they express a class and how strongly.
  for class_name in schema.CLASS_NAMES:
    assert len({p.action_units for p in plans if p.class_name == class_name}) >= 3
  strengths = collections.defaultdict(list)
  for p in plans:
    strengths[(p.dataset, p.subject)].append(p.amplitude_px / config.subsets[p.subset_index]
                                             .params.amplitude_px)
  medians = [np.median(v) for v in strengths.values() if len(v) >= 3]
  assert max(medians) > 1.5 * min(medians)


def test_plan_is_deterministic_and_dev_has_other_people_and_clips():
  first, second = synthetic.plan_composite(COMPOSITE), synthetic.plan_composite(COMPOSITE)
  assert first == second
  dev = synthetic.plan_composite(DEV)
  assert [(p.clip_id, p.class_name, p.num_frames) for p in dev] != [
      (p.clip_id, p.class_name, p.num_frames) for p in first]
  for k in range(len(COMPOSITE.subsets)):
    people = synthetic.composite_subjects(COMPOSITE, k)
    assert people == synthetic.composite_subjects(COMPOSITE, k)
    others = synthetic.composite_subjects(DEV, k)
    assert all(a.vector().tolist() != b.vector().tolist() for a in people for b in others)
  # Rendering a plan is deterministic too.
  plan = first[0]
  a, b = (synthetic.render_planned_clip(plan, COMPOSITE) for _ in range(2))
  assert a["frames"].tobytes() == b["frames"].tobytes()


def test_rendered_clips_have_their_setups_rate_size_and_camera():
  plans = synthetic.plan_composite(COMPOSITE)
  for name, (_, _, fps, size, _) in SETUPS.items():
    picks = [p for p in plans if p.dataset == name][:2]
    for plan in picks:
      clip = synthetic.render_planned_clip(plan, COMPOSITE)
      schema.validate_example(clip, where=plan.clip_id)
      assert clip["frames"].shape == (plan.num_frames, size, size, 3) and clip["fps"] == fps
      assert clip["dataset"] == name and clip["clip_id"] == plan.clip_id
      assert clip["subject"] == plan.subject
      assert (clip["onset"], clip["apex"], clip["offset"]) == (
          plan.annotated_onset, plan.annotated_apex, plan.annotated_offset)
      assert clip["apex_source"] == plan.apex_source
      assert clip["action_units"] == "+".join(plan.action_units)
      flow = clip["apex_flow"]
      np.testing.assert_allclose(np.hypot(flow[..., 0], flow[..., 1]).max(), plan.amplitude_px,
                                 rtol=1e-5)
      frames = clip["frames"].astype(np.int16)
      mono = (frames[..., 0] == frames[..., 1]).all() and (frames[..., 1] == frames[..., 2]).all()
      assert mono == (name == "synthetic_samm"), name  # SAMM's camera is monochrome


@pytest.mark.slow  # A TFDS build: ~13 s on the loaded 2-core machine.
def test_builder_writes_a_small_composite_with_mixed_frame_sizes(tmp_path):
  small = dataclasses.replace(COMPOSITE, subsets=tuple(
      dataclasses.replace(s, subject_class_counts=((1, 1, 0), (0, 0, 1))) for s in COMPOSITE.subsets))
  config = synthetic_me.SyntheticMeConfig(name="composite_small", params=small, version="1.0.0")
  builder = synthetic_me.Builder(data_dir=str(tmp_path), config=config)
  builder.download_and_prepare()
  rendered = dict(synthetic.generate_composite(small))
  examples = fake_trees.read_records(builder)
  assert len(examples) == len(rendered) == 9
  for example in examples:
    record = {k: v.decode() if isinstance(v, bytes) else v for k, v in example.items()}
    truth = rendered[record["clip_id"]]
    schema.validate_example(record, where=record["clip_id"])
    np.testing.assert_array_equal(example["frames"], truth["frames"])  # PNG is lossless
    for key in ("dataset", "subject", "apex_source"):
      assert record[key] == truth[key]
    for key in ("label", "onset", "apex", "offset"):
      assert int(example[key]) == truth[key]
  assert {e["frames"].shape[1] for e in examples} == {64, 80, 96}


def test_bad_composite_configs_raise_naming_the_field():
  subset = COMPOSITE.subsets[0]
  with pytest.raises(ValueError, match="subject_class_counts"):
    dataclasses.replace(subset, subject_class_counts=((1, 2),))
  with pytest.raises(ValueError, match="at least one clip per subject"):
    dataclasses.replace(subset, subject_class_counts=((1, 0, 0), (0, 0, 0)))
  with pytest.raises(ValueError, match="distinct names"):
    dataclasses.replace(COMPOSITE, subsets=(subset, subset))
  with pytest.raises(ValueError, match="habit_prob"):
    dataclasses.replace(COMPOSITE, habit_prob=1.5)
  with pytest.raises(ValueError, match="brightness"):
    synthetic.SyntheticConfig(brightness=0.0)
  with pytest.raises(ValueError, match="action_units"):
    synthetic.render_clip(synthetic.make_subjects(1)[0], "negative", np.random.default_rng(0),
                          config=synthetic.PRESETS["tiny"], action_units=("99",))


def _balanced_subset(plans, per_class):
  """`per_class` clips of every class in every setup (no prior to exploit).

  Drawn in a seeded random order, so that each class's clips come from many
  subjects: in plan order they would come from the first few subjects of a
  setup, and a classifier could then tell classes apart by a handful of faces
  (the neutral faces alone reached 0.52 accuracy that way, above the bound).
  """
  taken = collections.Counter()
  for index in np.random.default_rng(0).permutation(len(plans)):
    plan = plans[int(index)]
    key = (plan.dataset, plan.class_name)
    if taken[key] < per_class:
      taken[key] += 1
      yield plan


@pytest.mark.slow
def test_onset_frame_alone_is_at_chance_and_onset_to_apex_motion_is_not():
  """No label leak: the annotated onset frame's pixels predict nothing under LOSO.

  A class-balanced subset in every setup (15 clips per class and setup), so
  neither the class prior nor a setup's look can be exploited. The control,
  the classical baseline's onset->apex flow features on the same clips, is
  above chance: the subset is learnable and the test has power.
  """
  pixels, motion, labels, groups = [], [], [], []
  subjects = {k: synthetic.composite_subjects(COMPOSITE, k) for k in range(len(COMPOSITE.subsets))}
  for plan in _balanced_subset(synthetic.plan_composite(COMPOSITE), per_class=15):
    clip = synthetic.render_planned_clip(plan, COMPOSITE,
                                         subjects[plan.subset_index][plan.subject_index])
    onset = clip["frames"][clip["onset"]].astype(np.float32).mean(-1)
    pooled = onset.reshape(8, onset.shape[0] // 8, 8, onset.shape[1] // 8).mean((1, 3))
    pixels.append(pooled.ravel())
    motion.append(classical_baseline.clip_features(clip["frames"][clip["onset"]],
                                                   clip["frames"][clip["apex"]]))
    labels.append(plan.label)
    groups.append(f"{plan.dataset}/{plan.subject}")
  labels, n = np.array(labels), len(labels)
  assert n == 135

  def loso_accuracy(features):
    classifier = pipeline.make_pipeline(preprocessing.StandardScaler(),
                                        linear_model.LogisticRegression(C=0.1, max_iter=2000))
    predicted = model_selection.cross_val_predict(
        classifier, np.array(features), labels, groups=np.array(groups),
        cv=model_selection.LeaveOneGroupOut())
    return float(np.mean(predicted == labels))

  # Smallest accuracy that chance (p = 1/3) reaches with probability <= 0.1%.
  bound = (stats.binom.isf(0.001, n, 1 / 3) + 1) / n
  onset_accuracy, motion_accuracy = loso_accuracy(pixels), loso_accuracy(motion)
  print(f"LOSO on {n} balanced clips: onset pixels {onset_accuracy:.3f}, onset->apex flow "
        f"{motion_accuracy:.3f} (chance bound {bound:.3f})")
  assert onset_accuracy < bound
  assert motion_accuracy >= bound
