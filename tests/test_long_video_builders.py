"""Long-video data: the synthetic renderer and builder, and the CAS(ME)^2 / SAMM
long-video builders on fake trees that copy the releases' layouts (never real data)."""

import dataclasses
import os

import numpy as np
import openpyxl
import pytest
import tensorflow_datasets as tfds

import fake_trees
from data_builders import common
from data_builders.casme_sq import casme_sq_dataset_builder as casme_sq
from data_builders.samm_long import samm_long_dataset_builder as samm_long
import data_builders.synthetic_me_long as synthetic_me_long
from mer_jax import synthetic
from mer_jax import synthetic_long
from mer_jax.spotting import metrics
from mer_jax.spotting import schema as long_schema

TINY = synthetic_long.PRESETS["tiny"]


def _text(value):
  return value.decode() if isinstance(value, bytes) else value


def _read(builder):
  records = {}
  for example in fake_trees.read_records(builder):
    records[_text(example["video_id"])] = example
  return records


def _intervals(record):
  iv = record["intervals"]
  return [(int(iv["onset"][k]), int(iv["apex"][k]), int(iv["offset"][k]), _text(iv["type"][k]),
           int(iv["label"][k]), _text(iv["apex_source"][k])) for k in range(len(iv["onset"]))]


# ----------------------------------------------------------------------------
# Synthetic long videos.


def test_synthetic_truth_is_exact_without_nuisances():
  # No noise, blinks, mouth or head motion: every frame outside the true
  # intervals is the neutral face exactly, and every apex frame differs from it.
  quiet = dataclasses.replace(
      TINY, duration_s=5.0, noise_std=0.0, flicker=0.0, blinks_per_minute=0.0,
      mouth_per_minute=0.0, head_moves_per_minute=0.0, head_drift_px=0.0,
      head_rotation_deg=0.0)
  subject = synthetic.make_subjects(1)[0]
  video = synthetic_long.render_video(subject, np.random.default_rng(3), quiet)
  frames, expressions = video["frames"], video["expressions"]
  assert frames.shape == (150, 48, 48, 3) and video["nuisances"] == []
  inside = np.zeros(len(frames), bool)
  for e in expressions:
    inside[e.onset + 1:e.offset] = True  # the profile is 0 at onset and offset
    assert np.abs(frames[e.apex].astype(int) - frames[0]).max() > 0, e
  assert (frames[~inside] == frames[0]).all()
  kinds = sorted(e.type for e in expressions)
  assert kinds == ["macro", "micro", "micro"]  # tiny: 2 micro + 1 macro


def test_synthetic_timeline_respects_the_config():
  for name in ("cas_like", "samm_like"):
    config = synthetic_long.PRESETS[name]
    for seed in range(5):
      expressions = synthetic_long.draw_expressions(np.random.default_rng(seed), config)
      micros = [e for e in expressions if e.type == "micro"]
      assert config.micros_per_video[0] <= len(micros) <= config.micros_per_video[1]
      for e in expressions:
        assert 0 <= e.onset < e.apex <= e.hold_end < e.offset < config.num_frames
        # The truth's type is the MEGC duration rule (<= 0.5 s is micro).
        assert metrics.expression_type(e.onset, e.offset, config.fps) == e.type, (name, e)
      for a, b in zip(expressions, expressions[1:]):
        assert b.onset - a.offset >= config.min_gap_frames  # no overlap
  with pytest.raises(ValueError, match="micro-expression limit"):
    dataclasses.replace(TINY, micro_duration_s=(0.2, 0.8))
  with pytest.raises(ValueError, match="need .* frames; a video has"):
    dataclasses.replace(TINY, duration_s=2.0)


def test_synthetic_me_long_tiny_builds_deterministically_and_reads_back(tmp_path):
  builder = synthetic_me_long.Builder(config="tiny", data_dir=os.fspath(tmp_path / "a"))
  builder.download_and_prepare()
  records = _read(builder)
  assert sorted(records) == ["s00/v00", "s01/v00"]
  rendered = dict(synthetic_long.generate_dataset(TINY))
  for video_id, record in records.items():
    truth = rendered[video_id]
    # PNG is lossless: stored frames are the rendered frames.
    np.testing.assert_array_equal(record["frames"], truth["frames"])
    assert int(record["num_frames"]) == len(truth["frames"]) == TINY.num_frames
    assert float(record["fps"]) == 30.0 and _text(record["dataset"]) == "synthetic_me_long"
    assert _intervals(record) == [
        (i["onset"], i["apex"], i["offset"], i["type"], i["label"], "ground_truth")
        for i in truth["intervals"]]
    assert [_text(k) for k in record["nuisances"]["kind"]] == [
        n["kind"] for n in truth["nuisances"]]
  # The records feed the metrics directly: the truth scores F1 = 1 against itself.
  truths = long_schema.truths_by_video(list(records.values()))
  assert metrics.evaluate_spotting(truths, truths).overall.f1 == 1.0
  assert metrics.evaluate_spot_then_recognise(truths, truths).strs == 1.0
  # Same config, same frames: a second render is identical.
  again = dict(synthetic_long.generate_dataset(TINY))
  np.testing.assert_array_equal(again["s01/v00"]["frames"], rendered["s01/v00"]["frames"])


def test_cas_like_dev_is_the_cas_like_recipe_with_other_people_and_videos():
  test, dev = synthetic_long.PRESETS["cas_like"], synthetic_long.PRESETS["cas_like_dev"]
  assert dev.seed != test.seed
  assert dataclasses.replace(dev, seed=test.seed) == test  # every shape setting the same
  # Other identities: same ids, different faces.
  for a, b in zip(synthetic.make_subjects(test.num_subjects, test.seed),
                  synthetic.make_subjects(dev.num_subjects, dev.seed)):
    assert a.subject_id == b.subject_id and a != b
  # Other videos: the first video (shortened so the test renders in seconds) has
  # another timeline and other frames.
  short = dict(num_subjects=1, videos_per_subject=1, duration_s=18.0)
  first = [next(synthetic_long.generate_dataset(dataclasses.replace(c, **short)))
           for c in (test, dev)]
  assert first[0][0] == first[1][0] == "s00/v00"
  assert first[0][1]["intervals"] != first[1][1]["intervals"]
  assert first[0][1]["frames"].shape == first[1][1]["frames"].shape == (540, 64, 64, 3)
  assert not np.array_equal(first[0][1]["frames"], first[1][1]["frames"])
  # Selectable as a TFDS config and in the spotting config, with its own dataset identity.
  assert "cas_like_dev" in [c.name for c in synthetic_me_long.Builder.BUILDER_CONFIGS]
  from configs import spotting as spotting_config  # pylint: disable=import-outside-toplevel
  from mer_jax.spotting import data as data_lib  # pylint: disable=import-outside-toplevel
  from mer_jax.spotting import train  # pylint: disable=import-outside-toplevel
  config = spotting_config.get_config("preset=cas_like_dev")
  assert config.dataset.preset == "cas_like_dev"
  settings = train.feature_settings(config)
  assert data_lib.dataset_fingerprint("cas_like_dev", settings) != (
      data_lib.dataset_fingerprint("cas_like", settings))


# ----------------------------------------------------------------------------
# CAS(ME)^2: coding sheet without header, two naming-rule sheets, rawpic/.

# (participant, "<video>_<n>", onset, apex, offset, AUs, category, type, emotion)
CASME_SQ_ROWS = (
    (1, "anger1_1", 3, 5, 8, "4+7", "negative", "micro-expression", "anger"),
    (1, "anger1_2", 20, 25, 0, "12", "positive", "macro-expression", "happyiness"),  # offset 0
    (1, "anger1_2", 20, 25, 0, "12", "positive", "macro-expression", "happyiness"),  # duplicate
    (1, "happy1_1", 10, 40, 14, "6+12", "others", "micro-expression", "happy"),      # apex out
    (2, "anger1_1", 5, 6, 9, "", "surprise", "micro-expression", "surprise"),
)


def make_fake_casme_sq(root, *, rows=CASME_SQ_ROWS, folders=None):
  """rawpic/s<NN>/<NN>_<code><name>/imgN.jpg (N from 1) and the 3-sheet workbook."""
  root = os.fspath(root)
  folders = folders if folders is not None else {
      "s15/15_0401girlcrashing": list(range(1, 31)),
      "s15/15_0102happytalk": [n for n in range(1, 41) if n != 12],   # img12 missing
      "s15/15_0503unannotated": list(range(1, 11)),                   # no interval
      "s16/16_0401girlcrashing": list(range(1, 13)),
  }
  for seed, (folder, numbers) in enumerate(folders.items()):
    fake_trees.write_frames(os.path.join(root, "rawpic", folder),
                            [f"img{n}.jpg" for n in numbers], size=(24, 32), seed=seed)
  with open(os.path.join(root, "rawpic", "s15", "Thumbs.db"), "wb") as handle:
    handle.write(b"\x00" * 8)
  workbook = openpyxl.Workbook()
  coding = workbook.active
  coding.title = "CASFEcode_final"
  for row in rows:
    coding.append(list(row))
  subjects = workbook.create_sheet("naming rule1")
  for row in (("15", "s15", 1), ("16", "s16", 2)):
    subjects.append(list(row))
  videos = workbook.create_sheet("naming rule2")
  for row in ((401, "anger1"), (102, "happy1"), (503, "disgust2")):
    videos.append(list(row))
  workbook.save(os.path.join(root, casme_sq.ANNOTATION_FILE))
  return root


def _build(builder_cls, config, manual_dir, data_dir, **kwargs):
  builder = builder_cls(config=config, data_dir=os.fspath(data_dir), **kwargs)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir)))
  return builder


def test_casme_sq_builds_fake_tree_with_stated_repairs(tmp_path):
  manual = make_fake_casme_sq(tmp_path / "manual")
  config = casme_sq.CasmeSqConfig(name="raw_16", release="raw", short_side=16)
  builder = _build(casme_sq.Builder, config, manual, tmp_path / "data")
  records = _read(builder)
  assert sorted(records) == ["s15/15_0102happytalk", "s15/15_0401girlcrashing",
                             "s15/15_0503unannotated", "s16/16_0401girlcrashing"]
  # imgN is frame N: index N - 1. Offset 0 -> the apex (25) is the offset.
  # The duplicate row is dropped; rows are sorted by onset.
  assert _intervals(records["s15/15_0401girlcrashing"]) == [
      (2, 4, 7, "micro", 0, "annotated"), (19, 24, 24, "macro", 1, "annotated")]
  # Apex 40 outside 10..14 -> midpoint 12, which is missing on disk: the nearest real
  # frame (11, tie to the earlier) is used; 'others' has no 3-class label.
  assert _intervals(records["s15/15_0102happytalk"]) == [
      (9, 10, 13, "micro", -1, "midpoint_repaired")]
  assert _intervals(records["s15/15_0503unannotated"]) == []
  assert _intervals(records["s16/16_0401girlcrashing"]) == [(4, 5, 8, "micro", 2, "annotated")]
  girl = records["s15/15_0401girlcrashing"]
  assert girl["frames"].shape == (30, 16, 21, 3) and girl["frames"].dtype == np.uint8
  assert int(girl["first_frame_number"]) == 1 and float(girl["fps"]) == 30.0
  emotions = [_text(e) for e in girl["intervals"]["emotion"]]
  assert emotions == ["anger", "happiness"]  # 'happyiness' repaired
  happy = records["s15/15_0102happytalk"]
  assert len(happy["frames"]) == 40  # img12 filled with a copy of img11
  np.testing.assert_array_equal(happy["frames"][11], happy["frames"][10])
  meta = builder.info.metadata
  assert meta["num_videos"] == 4 and meta["num_intervals"] == 4
  assert meta["intervals_per_type"] == {"macro": 1, "micro": 3}
  repairs = "\n".join(r["repair"] for r in meta["repairs"])
  for expected in ("offset 0 (unknown): used the apex frame 25", "repeats row 2",
                   "'happyiness' read as 'happiness'", "frame 12 missing on disk",
                   "apex frame 40 outside onset..offset 10..14"):
    assert expected in repairs
  assert any(path.endswith("Thumbs.db") for path in meta["stray_files"])


def test_casme_sq_refuses_or_skips_by_name(tmp_path):
  rows = CASME_SQ_ROWS + ((2, "happy1_1", 1, 2, 3, "", "positive", "micro-expression", "happy"),)
  manual = make_fake_casme_sq(tmp_path / "missing", rows=rows)
  strict = common.BuildReport("casme_sq", "raw", skip_unreadable=False)
  with pytest.raises(common.SampleError,
                     match=r"s16/16_0102 cannot be built: .*\(rows \[6\]\) but no folder"):
    casme_sq.plan_videos(manual, "raw", strict)
  lenient = common.BuildReport("casme_sq", "raw", skip_unreadable=True)
  videos = casme_sq.plan_videos(manual, "raw", lenient)
  assert lenient.skipped_ids == ["s16/16_0102"] and len(videos) == 4
  bad_type = make_fake_casme_sq(tmp_path / "type", rows=(
      (1, "anger1_1", 3, 5, 8, "4", "negative", "micro", "anger"),
      (2, "anger1_1", 3, 5, 8, "4", "negative", "mini-expression", "anger")))
  with pytest.raises(common.SampleError, match="row 2: expression type 'mini-expression'"):
    casme_sq.plan_videos(bad_type, "raw", common.BuildReport("c", "r", skip_unreadable=False))
  unknown_video = make_fake_casme_sq(tmp_path / "name", rows=(
      (1, "fear9_1", 3, 5, 8, "4", "negative", "micro-expression", "fear"),))
  with pytest.raises(common.AnnotationError, match="video name 'fear9'.*naming rule2"):
    casme_sq.plan_videos(unknown_video, "raw", common.BuildReport("c", "r", skip_unreadable=False))
  with pytest.raises(FileNotFoundError, match="CAS\\(ME\\)\\^2 coding sheet"):
    casme_sq.plan_videos(os.fspath(tmp_path / "missing" / "rawpic"), "raw", strict)


# ----------------------------------------------------------------------------
# SAMM long videos: header after preamble rows, SAMM_longvideos/<s>_<v>/.

SAMM_LONG_HEADER = ("Subject", "Filename", "Inducement Code", "Onset", "Apex", "Offset",
                    "Duration", "Type", "Action Units", "Notes")
# (subject, filename, onset, apex, offset, type, AUs)
SAMM_LONG_ROWS = (
    (6, "006_1_1", 5, 8, 12, "Micro - 1/2", "4"),
    (6, "006_1_2", 30, -1, 50, "Macro", "12"),      # apex -1: midpoint
    (7, "007_3_1", 2, 4, 6, "Micro - 1/2", "1+2"),
)


def make_fake_samm_long(root, *, rows=SAMM_LONG_ROWS, preamble_rows=9):
  root = os.fspath(root)
  for seed, (video, count) in enumerate((("006_1", 60), ("006_2", 8), ("007_3", 10))):
    fake_trees.write_frames(os.path.join(root, samm_long.FRAMES_FOLDER, video),
                            [f"{video}_{n:04d}.jpg" for n in range(1, count + 1)],
                            size=(24, 32), seed=seed, grey=True)
  preamble = [("SAMM Long Videos (fake, generated for tests)",)] + [()] * (preamble_rows - 1)
  fake_trees.write_xlsx(
      os.path.join(root, samm_long.ANNOTATION_FILE), SAMM_LONG_HEADER,
      [(s, f, int(f.replace("-", "_").split("_")[1]), on, ap, off, off - on + 1, kind, aus, None)
       for s, f, on, ap, off, kind, aus in rows], preamble=preamble)
  return root


def test_samm_long_builds_fake_tree(tmp_path):
  manual = make_fake_samm_long(tmp_path / "manual")
  config = samm_long.SammLongConfig(name="full_16", short_side=16)
  builder = _build(samm_long.Builder, config, manual, tmp_path / "data")
  records = _read(builder)
  assert sorted(records) == ["006_1", "006_2", "007_3"]
  assert _intervals(records["006_1"]) == [(4, 7, 11, "micro", -1, "annotated"),
                                          (29, 39, 49, "macro", -1, "midpoint_repaired")]
  assert _intervals(records["006_2"]) == []
  assert _intervals(records["007_3"]) == [(1, 3, 5, "micro", -1, "annotated")]
  assert records["006_1"]["frames"].shape == (60, 16, 21, 3)
  assert float(records["006_1"]["fps"]) == 200.0 and _text(records["007_3"]["subject"]) == "007"
  assert builder.info.metadata["num_videos"] == 3
  # The header is found whatever the preamble's length.
  other = make_fake_samm_long(tmp_path / "short", preamble_rows=3)
  videos = samm_long.plan_videos(other, common.BuildReport("s", "f", skip_unreadable=False))
  assert [v.video_id for v in videos] == ["006_1", "006_2", "007_3"]


def test_samm_long_refuses_by_name(tmp_path):
  bad = make_fake_samm_long(tmp_path / "bad", rows=SAMM_LONG_ROWS + (
      (7, "007-3-2", 2, 4, 6, "Micro - 1/2", ""),))
  with pytest.raises(common.AnnotationError, match=r"row 14: Filename '007-3-2'"):
    samm_long.plan_videos(bad, common.BuildReport("s", "f", skip_unreadable=False))
  missing = make_fake_samm_long(tmp_path / "missing", rows=SAMM_LONG_ROWS + (
      (8, "008_1_1", 2, 4, 6, "Micro - 1/2", ""),))
  report = common.BuildReport("s", "f", skip_unreadable=True)
  assert [v.video_id for v in samm_long.plan_videos(missing, report)] == [
      "006_1", "006_2", "007_3"]
  assert report.skipped_ids == ["008_1"] and "no folder" in report.skipped[0]["reason"]
