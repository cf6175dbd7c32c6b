"""Faults that used to change a clip's time axis or labels silently (issue 17).

Each case runs the real builder planning (and decoding where the fault is in
the pixels) on a generated fake CASME II tree and ends in either a recorded
repair or a refusal naming the sample, file or sheet row.
"""

import os

import pytest

import fake_trees
from data_builders import common
from data_builders.casme2 import casme2_dataset_builder as casme2
from data_builders.smic import smic_dataset_builder as smic

GOOD = (1, "EP02_01f", range(46, 53), 46, 49, 52, "12", "happiness")


def _plan(tmp_path, samples, *, skip=False):
  manual = fake_trees.make_fake_casme2(tmp_path / "manual", samples=[GOOD] + list(samples))
  report = common.BuildReport("casme2", "t", skip_unreadable=skip)
  planned = casme2.plan_samples(manual, "raw", report)
  return manual, report, {s.clip_id: s for s in planned}


def _clip(manual, subject, name):
  return os.path.join(manual, "CASME2_RAW_selected", subject, name)


def _emit(samples, report):
  return dict(common.generate_examples(samples, short_side=8, report=report))


def test_missing_frames_are_filled_and_recorded_inside_and_outside(tmp_path):
  _, report, samples = _plan(tmp_path, [
      (2, "EP01_01", [10, 11, 13, 14, 15], 10, 12, 15, "4", "disgust"),   # 12: inside, apex
      (3, "EP01_02", [1, 2, 4, 5, 6, 7, 8], 5, 6, 8, "4", "disgust"),     # 3: before onset
      (4, "EP01_03", [1, 2, 9, 10], 1, 2, 10, "4", "disgust"),            # 3..8: too long
  ], skip=True)
  inside = samples["sub02/EP01_01"]
  assert len(inside.frame_paths) == 6 and inside.frame_paths[2] == inside.frame_paths[1]
  assert (inside.fields["onset"], inside.fields["apex"], inside.fields["offset"]) == (0, 1, 5)
  assert inside.fields["apex_source"] == "nearest_frame"  # Snapped to a real frame, not a copy.
  assert ("frame 12 missing on disk (inside onset..offset 10..15): filled with copies of "
          "frame 11 (time axis kept)") in inside.repairs
  outside = samples["sub03/EP01_02"]
  assert (outside.fields["onset"], outside.fields["offset"]) == (4, 7)  # Frame 5 is index 4.
  assert any("frame 3 missing on disk (outside onset..offset 5..8)" in r for r in outside.repairs)
  assert "sub04/EP01_03" not in samples
  (skipped,) = [e for e in report.skipped if e["clip_id"] == "sub04/EP01_03"]
  assert "frames 3..8 missing on disk" in skipped["reason"]
  # The repairs reach the build report when emitted.
  emitted = _emit([inside], report)
  assert len(emitted["sub02/EP01_01"]["frames"]) == 6
  assert {r["clip_id"] for r in report.repairs} == {"sub02/EP01_01"}


def test_folder_link_loop_and_copy_names_are_refused_by_name(tmp_path):
  sample = (2, "EP01_01", range(10, 16), 10, 12, 15, "4", "disgust")
  manual, _, _ = _plan(tmp_path, [sample])
  clip = _clip(manual, "sub02", "EP01_01")
  os.remove(os.path.join(clip, "img12.jpg"))
  os.makedirs(os.path.join(clip, "img12.jpg"))
  report = common.BuildReport("casme2", "t", skip_unreadable=False)
  with pytest.raises(common.SampleError, match=r"sub02/EP01_01 .*img12\.jpg is a folder"):
    casme2.plan_samples(manual, "raw", report)
  os.rmdir(os.path.join(clip, "img12.jpg"))
  os.symlink("img12.jpg", os.path.join(clip, "img12.jpg"))  # Points at itself.
  report = common.BuildReport("casme2", "t", skip_unreadable=True)
  assert [s.clip_id for s in casme2.plan_samples(manual, "raw", report)] == ["sub01/EP02_01f"]
  assert "img12.jpg is a symbolic-link loop" in report.skipped[0]["reason"]
  os.remove(os.path.join(clip, "img12.jpg"))
  fake_trees.write_frames(clip, ["img12.jpg", "img14 (1).jpg"])
  report = common.BuildReport("casme2", "t", skip_unreadable=True)
  casme2.plan_samples(manual, "raw", report)
  assert "img14 (1).jpg: its name does not end in a frame number" in report.skipped[0]["reason"]
  with pytest.raises(ValueError, match="no frame number at the end"):
    common.frame_number("img48 (1).jpg")


def test_corrupt_jpegs_are_refused_by_their_markers(tmp_path):
  _, report, samples = _plan(tmp_path, [], skip=True)
  paths = samples["sub01/EP02_01f"].frame_paths
  data = open(paths[2], "rb").read()
  assert common.jpeg_fault(data) is None
  truncated, damaged = data[:len(data) * 2 // 3], bytearray(data)
  damaged[-100:-98] = b"\xff\x01"  # A bogus marker inside the entropy-coded data.
  with open(paths[2], "wb") as f:
    f.write(truncated)
  with open(paths[4], "wb") as f:
    f.write(bytes(damaged))
  with pytest.raises(common.SampleError, match=r"img48\.jpg is a corrupt JPEG: no JPEG "
                     r"end-of-image marker \(truncated file\)"):
    common.read_rgb_frame(paths[2])
  with pytest.raises(common.SampleError, match=r"img50\.jpg is a corrupt JPEG: unexpected "
                     r"JPEG marker FF01"):
    common.read_rgb_frame(paths[4])
  assert _emit(list(samples.values()), report) == {}
  assert report.skipped_ids == ["sub01/EP02_01f"]


def test_annotation_hygiene(tmp_path):
  _, report, samples = _plan(tmp_path, [
      (2, "EP01_01", range(1, 5), 1, 2, 4, "4", "Happyness"),            # unknown label
      (2, "EP01_02", range(1, 5), 1, 2, 4, "4", "others"),               # stated exclusion
      (2, "sub02/../sub01/EP02_01f", (), 46, 49, 52, "12", "happiness"),  # path-like
      (2, "..", (), 46, 49, 52, "12", "happiness"),
  ], skip=True)
  assert sorted(samples) == ["sub01/EP02_01f", "sub02/EP01_02"]
  skipped = {e["clip_id"]: e for e in report.skipped}
  assert skipped["sub02/EP01_01"]["row"] == 3 and skipped["sub02/EP01_01"]["value"] == "happyness"
  assert "row 3: unknown emotion 'happyness'" in skipped["sub02/EP01_01"]["reason"]
  assert "Filename 'sub02/../sub01/EP02_01f' holds a path separator" in \
      skipped["sub02/sub02/../sub01/EP02_01f"]["reason"]
  assert "Filename '..' is a relative path" in skipped["sub02/.."]["reason"]
  assert common.keep_labelled(list(samples.values()), report)[0].clip_id == "sub01/EP02_01f"
  assert report.excluded[0]["reason"] == "emotion 'others' maps to no 3-class label"
  # The unknown label is skipped and listed even with skipping off; the path is an error.
  with pytest.raises(common.SampleError, match=r"row 3\): Filename 'sub02/\.\./sub01"):
    _plan(tmp_path / "strict", [(2, "sub02/../sub01/EP02_01f", (), 46, 49, 52, "", "surprise")])
  with pytest.raises(common.AnnotationError,
                     match=r"rows 2 \(sub01/EP02_01f\) and 3 \(sub01/ep02_01F\) .*letter case"):
    _plan(tmp_path / "case", [(1, "ep02_01F", range(46, 53), 46, 49, 52, "12", "happiness")])


def test_smic_gap_is_filled_and_recorded(tmp_path):
  manual = fake_trees.make_fake_smic(tmp_path / "manual")
  report = common.BuildReport("smic_hs", "t", skip_unreadable=False)
  (first, *_) = smic.plan_samples(manual, "raw", "HS", report)
  clip = os.path.dirname(first.frame_paths[0])
  os.remove(first.frame_paths[2])
  (again, *_) = smic.plan_samples(manual, "raw", "HS", report)
  assert again.frame_paths == first.frame_paths[:2] + (first.frame_paths[1],) + \
      first.frame_paths[3:]
  assert any("missing on disk (inside onset..offset" in r for r in again.repairs), again.repairs
  assert os.path.isdir(clip)
