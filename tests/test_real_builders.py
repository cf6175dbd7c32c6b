"""Builds the real-dataset TFDS builders from fake trees (never real data).

Each builder runs through the real TFDS machinery (`download_and_prepare`
with a manual dir) on a tree from `fake_trees`, and the tests check the
records: counts, labels, subjects, onset/apex/offset indices, repairs, the
build summary in `info.metadata`, and the errors for broken inputs.
"""

import os
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds

import fake_trees
from data_builders import common
from data_builders.casme2 import casme2_dataset_builder as casme2
from data_builders.casme3 import casme3_dataset_builder as casme3
from data_builders.megc2019_composite import megc2019_composite_dataset_builder as composite
from data_builders.samm import samm_dataset_builder as samm
from data_builders.smic import smic_dataset_builder as smic
from mer_jax import input_pipeline


def _build(builder_cls, config, manual_dir, data_dir, **kwargs):
  builder = builder_cls(config=config, data_dir=os.fspath(data_dir), **kwargs)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir)))
  return builder


def _records(builder):
  """All records of the train split, keyed by clip id (strings decoded)."""
  records = {}
  for example in fake_trees.read_records(builder):
    example = {k: v.decode() if isinstance(v, bytes) else v for k, v in example.items()}
    records[example["clip_id"]] = example
  return records


def _positions(record):
  return (int(record["onset"]), int(record["apex"]), int(record["offset"]), record["apex_source"])


# ----------------------------------------------------------------------------
# Shared helpers (pure functions, no TFDS).


def test_frame_numbers_sort_naturally():
  names = ["img10.jpg", "img9.jpg", "img100.jpg"]
  assert sorted(names, key=common.natural_sort_key) == ["img9.jpg", "img10.jpg", "img100.jpg"]
  assert common.frame_number("reg_img46.jpg") == 46
  assert common.frame_number("006_05562.jpg") == 5562
  with pytest.raises(ValueError, match="Thumbs"):
    common.frame_number("Thumbs.db")


@pytest.mark.parametrize("onset, apex, offset, expected", [
    (11, 13, 15, (1, 3, 5, "annotated")),
    (10, "/", 16, (0, 3, 6, "midpoint_repaired")),          # CASME II sub04/EP12_01f
    (11, 30, 15, (1, 3, 5, "midpoint_repaired")),           # SAMM 028_4_1
    (10, 10, 16, (0, 0, 6, "annotated")),                   # onset == apex: flagged only
])
def test_locate_sample_rules(onset, apex, offset, expected):
  located = common.locate_sample(range(10, 17), onset, apex, offset, where="t")
  assert (located.onset, located.apex, located.offset, located.apex_source) == expected
  assert ("onset_equals_apex" in located.flags) == (onset == apex)


def test_locate_sample_snaps_missing_frames_and_rejects_empty_range():
  numbers = [100, 101, 102, 104, 105, 106]
  located = common.locate_sample(numbers, 99, 103, 110, where="t")
  # Onset 99 and offset 110 are not on disk; apex 103 is missing, tie -> 102.
  assert (located.onset, located.apex, located.offset) == (0, 2, 5)
  assert located.apex_source == "nearest_frame"
  assert len(located.repairs) == 3
  with pytest.raises(common.SampleError, match="no frame on disk inside .* 200..210"):
    common.locate_sample(numbers, 200, 205, 210, where="t")
  with pytest.raises(common.SampleError, match="onset frame 9 is after offset frame 5"):
    common.locate_sample(numbers, 9, 7, 5, where="t")


def test_resize_short_side_keeps_aspect():
  image = np.zeros((24, 32, 3), np.uint8)
  assert common.resize_short_side(image, 12).shape == (12, 16, 3)
  assert common.resize_short_side(image, 48).shape == (48, 64, 3)
  assert common.resize_short_side(image, None) is image


# ----------------------------------------------------------------------------
# CASME II


@pytest.fixture(scope="module")
def casme2_built(tmp_path_factory):
  root = tmp_path_factory.mktemp("casme2")
  manual = fake_trees.make_fake_casme2(root / "manual")
  config = casme2.Casme2Config(name="raw_16", release="raw", short_side=16)
  return _build(casme2.Builder, config, manual, root / "data")


def test_casme2_records_and_repairs(casme2_built):
  records = _records(casme2_built)
  assert sorted(records) == ["sub01/EP02_01f", "sub01/EP03_02", "sub02/EP09_01",
                             "sub03/EP01_2", "sub04/EP12_01f", "sub05/EP07_01"]
  label = {r["clip_id"]: casme2_built.info.features["label"].int2str(r["label"])
           for r in records.values()}
  assert label == {"sub01/EP02_01f": "positive", "sub01/EP03_02": "negative",
                   "sub02/EP09_01": "surprise", "sub03/EP01_2": "negative",
                   "sub04/EP12_01f": "negative", "sub05/EP07_01": "negative"}
  # imgN numbering starts at the clip's first frame: onset 11 in a clip
  # starting at img10 is index 1.
  assert _positions(records["sub01/EP03_02"]) == (1, 3, 5, "annotated")
  assert _positions(records["sub01/EP02_01f"]) == (0, 3, 6, "annotated")
  assert _positions(records["sub04/EP12_01f"]) == (0, 3, 6, "midpoint_repaired")
  # img103 is missing: filled with a copy of img102 (time axis kept, 7 frames);
  # the apex snaps to the real img102, never to the copy.
  assert _positions(records["sub03/EP01_2"]) == (0, 2, 6, "nearest_frame")
  gap_clip = records["sub03/EP01_2"]["frames"]
  assert len(gap_clip) == 7
  np.testing.assert_array_equal(gap_clip[3], gap_clip[2])
  assert _positions(records["sub05/EP07_01"]) == (0, 2, 4, "annotated")
  first = records["sub01/EP03_02"]
  assert first["first_frame_number"] == 10 and first["objective_class"] == -1
  assert first["frames"].shape == (7, 16, 21, 3) and first["frames"].dtype == np.uint8
  assert first["subject"] == "sub01" and first["dataset"] == "casme2"
  assert first["emotion"] == "disgust" and first["action_units"] == "4+7"
  assert first["fps"] == pytest.approx(200.0)


def test_casme2_summary_in_metadata(casme2_built):
  # Reload from disk: the summary must be persisted, not only in memory.
  reloaded = casme2.Builder(config=casme2_built.builder_config,
                            data_dir=os.fspath(casme2_built.data_dir).split("/casme2/")[0])
  meta = reloaded.info.metadata
  assert meta["per_class"] == {"negative": 4, "positive": 1, "surprise": 1}
  assert meta["per_subject"] == {"sub01": 2, "sub02": 1, "sub03": 1, "sub04": 1, "sub05": 1}
  assert {(r["clip_id"], r["repair"].split(":")[0]) for r in meta["repairs"]} == {
      ("sub03/EP01_2", "apex frame 103 missing on disk"),
      ("sub03/EP01_2", "frame 103 missing on disk (inside onset..offset 100..106)"),
      ("sub04/EP12_01f", "apex '/' is not a frame number"),
      ("sub05/EP07_01", "offset frame 10 missing on disk")}
  assert meta["excluded"] == [{"clip_id": "sub02/EP15_01",
                               "reason": "emotion 'others' maps to no 3-class label"}]
  assert sorted(os.path.basename(p) for p in meta["stray_files"]) == [
      "EP02_01f - Shortcut.lnk", "Thumbs.db"]
  assert meta["skipped_ids"] == []


def test_casme2_2019_revision_pairs_sheet_and_folder(tmp_path):
  manual = fake_trees.make_fake_casme2(tmp_path, release="cropped_updated")
  assert os.path.isfile(tmp_path / "CASME2-coding-20190701.xlsx")
  report = common.BuildReport("casme2", "t", skip_unreadable=False)
  samples = casme2.plan_samples(manual, "cropped_updated", report)
  assert len(samples) == 7
  assert samples[0].frame_paths[0].endswith(os.path.join("Cropped-updated", "sub01", "EP02_01f",
                                                         "reg_img46.jpg"))


def test_casme2_unrepairable_sample_fails_naming_the_file(tmp_path):
  manual = fake_trees.make_fake_casme2(tmp_path / "manual", unrepairable=("corrupt_frame",))
  config = casme2.Casme2Config(name="raw_16", release="raw", short_side=16)
  with pytest.raises(common.SampleError,
                     match=r"sub06/EP01_01 .*sub06/EP01_01/img3\.jpg is a corrupt JPEG"):
    _build(casme2.Builder, config, manual, tmp_path / "data")


def test_casme2_skip_mode_records_skipped_ids(tmp_path):
  manual = fake_trees.make_fake_casme2(tmp_path / "manual",
                                       unrepairable=("corrupt_frame", "missing_folder"))
  config = casme2.Casme2Config(name="raw_16", release="raw", short_side=16)
  builder = _build(casme2.Builder, config, manual, tmp_path / "data", skip_unreadable=True)
  assert builder.info.splits["train"].num_examples == 6
  reloaded = casme2.Builder(config=config, data_dir=os.fspath(tmp_path / "data"))
  skipped = {entry["clip_id"]: entry["reason"] for entry in reloaded.info.metadata["skipped"]}
  assert sorted(skipped) == ["sub06/EP01_01", "sub06/EP02_01"]
  assert "img3.jpg is a corrupt JPEG" in skipped["sub06/EP01_01"]
  assert "EP02_01 does not exist" in skipped["sub06/EP02_01"]
  assert sorted(reloaded.info.metadata["skipped_ids"]) == sorted(skipped)


def test_missing_manual_dir_shows_layout(tmp_path):
  config = casme2.Casme2Config(name="raw_16", release="raw", short_side=16)
  with pytest.raises(AssertionError, match=r"(?s)does not exist.*CASME2_RAW_selected/"):
    _build(casme2.Builder, config, tmp_path / "nowhere", tmp_path / "data")


def test_missing_annotation_file_shows_layout(tmp_path):
  manual = fake_trees.make_fake_casme2(tmp_path)
  os.remove(tmp_path / "CASME2-coding-20140508.xlsx")
  report = common.BuildReport("casme2", "t", skip_unreadable=False)
  with pytest.raises(FileNotFoundError,
                     match=r"(?s)CASME II coding sheet not found: .*CASME2-coding-20140508\.xlsx"
                           r".*Expected layout.*sub01/EP02_01f/img46\.jpg"):
    casme2.plan_samples(manual, "raw", report)


def test_malformed_header_names_file_and_column(tmp_path):
  manual = fake_trees.make_fake_casme2(tmp_path / "c", rename_columns={"ApexFrame": "Apex"})
  report = common.BuildReport("casme2", "t", skip_unreadable=False)
  with pytest.raises(common.AnnotationError,
                     match=r"CASME2-coding-20140508\.xlsx .*row 1 lacks column\(s\) \['ApexFrame'\]"):
    casme2.plan_samples(manual, "raw", report)
  manual = fake_trees.make_fake_samm(tmp_path / "s", rename_columns={"Onset Frame": "Onset"})
  with pytest.raises(common.AnnotationError,
                     match=r"SAMM_Micro_FACS_Codes_v2\.xlsx .*row 14 lacks .*'Onset Frame'"):
    samm.plan_samples(manual, "full", report)


# ----------------------------------------------------------------------------
# SAMM, SMIC, CAS(ME)^3


def test_samm_builds_with_apex_repairs(tmp_path):
  manual = fake_trees.make_fake_samm(tmp_path / "manual")
  config = samm.SammConfig(name="full_12", release="full", short_side=12)
  builder = _build(samm.Builder, config, manual, tmp_path / "data")
  records = _records(builder)
  assert sorted(records) == ["006/006_1_2", "006/006_1_3", "011/011_2_1", "028/028_4_1",
                             "032/032_3_1"]
  assert _positions(records["006/006_1_2"]) == (1, 3, 5, "annotated")
  # 028_4_1: apex 120 > offset 109 -> midpoint (101 + 109) // 2 = 105, index 5.
  assert _positions(records["028/028_4_1"]) == (1, 5, 9, "midpoint_repaired")
  # 032_3_1: apex 20 < onset 42 -> midpoint 45 in a clip starting at 40.
  assert _positions(records["032/032_3_1"]) == (2, 5, 8, "midpoint_repaired")
  assert records["006/006_1_2"]["first_frame_number"] == 5560
  assert records["028/028_4_1"]["objective_class"] == 3
  assert records["006/006_1_2"]["frames"].shape == (7, 12, 16, 3)  # grey -> RGB
  meta = builder.info.metadata
  assert meta["per_class"] == {"negative": 3, "positive": 1, "surprise": 1}
  assert meta["per_subject"] == {"006": 2, "011": 1, "028": 1, "032": 1}
  assert [e["clip_id"] for e in meta["excluded"]] == ["007/007_6_1"]
  assert sorted(r["clip_id"] for r in meta["repairs"]) == ["028/028_4_1", "032/032_3_1"]


def test_smic_hs_labels_from_folders_and_midpoint_apex(tmp_path):
  manual = fake_trees.make_fake_smic(tmp_path / "manual", modalities=("HS", "NIR"))
  config = smic.SmicConfig(name="hs_raw_16", modality="HS", release="raw", short_side=16)
  builder = _build(smic.Builder, config, manual, tmp_path / "data")
  records = _records(builder)
  assert sorted(records) == ["s1/s1_ne_01", "s1/s1_po_01", "s1/s1_sur_01", "s2/s2_ne_01",
                             "s2/s2_ne_02", "s3/s3_po_01"]
  names = builder.info.features["label"].names
  assert {k: names[r["label"]] for k, r in records.items()} == {
      "s1/s1_ne_01": "negative", "s1/s1_po_01": "positive", "s1/s1_sur_01": "surprise",
      "s2/s2_ne_01": "negative", "s2/s2_ne_02": "negative", "s3/s3_po_01": "positive"}
  assert _positions(records["s1/s1_ne_01"]) == (0, 2, 4, "midpoint")
  assert _positions(records["s1/s1_po_01"]) == (0, 1, 3, "midpoint")
  assert _positions(records["s1/s1_sur_01"]) == (0, 2, 5, "midpoint")
  assert records["s1/s1_ne_01"]["first_frame_number"] == 134100
  assert records["s1/s1_ne_01"]["dataset"] == "smic_hs"
  assert records["s1/s1_ne_01"]["fps"] == pytest.approx(100.0)
  meta = builder.info.metadata
  assert meta["per_class"] == {"negative": 3, "positive": 2, "surprise": 1}
  assert meta["per_subject"] == {"s1": 3, "s2": 2, "s3": 1}
  assert [os.path.basename(p) for p in meta["stray_files"]] == ["Thumbs.db"]
  # The NIR camera is a separate config of the same tree.
  report = common.BuildReport("smic_nir", "t", skip_unreadable=False)
  nir = smic.plan_samples(manual, "raw", "NIR", report)
  assert len(nir) == 6 and nir[0].fields["fps"] == 25.0


def test_casme3_rgbd_windows_and_flags(tmp_path):
  manual = fake_trees.make_fake_casme3(tmp_path / "manual", with_depth=True)
  config = casme3.Casme3Config(name="rgbd_12", with_depth=True, short_side=12)
  builder = _build(casme3.Builder, config, manual, tmp_path / "data")
  records = _records(builder)
  assert sorted(records) == ["spNO.1/a/10", "spNO.1/a/40", "spNO.1/b/5", "spNO.2/c/50"]
  # Stored clips are onset..offset of the task recording.
  assert _positions(records["spNO.1/a/10"]) == (0, 3, 6, "annotated")
  assert records["spNO.1/a/10"]["frames"].shape == (7, 12, 16, 3)
  assert records["spNO.1/a/10"]["depth"].shape == (7, 12, 16, 1)
  assert records["spNO.1/a/10"]["depth"].dtype == np.uint16
  assert records["spNO.1/a/10"]["depth"][0, 0, 0, 0] == 910  # fake depth at frame 10: 600 + 10, +300 on top
  assert _positions(records["spNO.1/a/40"]) == (0, 0, 5, "annotated")
  assert _positions(records["spNO.2/c/50"]) == (0, 2, 5, "midpoint_repaired")
  assert records["spNO.1/b/5"]["frames"].shape[0] == 66
  assert records["spNO.1/b/5"]["first_frame_number"] == 5
  meta = builder.info.metadata
  assert {(f["clip_id"], f["flag"]) for f in meta["flags"]} == {
      ("spNO.1/a/40", "onset_equals_apex"), ("spNO.1/b/5", "longer_than_2s")}
  assert [e["clip_id"] for e in meta["excluded"]] == ["spNO.2/c/20"]
  assert meta["per_class"] == {"negative": 2, "positive": 1, "surprise": 1}


# ----------------------------------------------------------------------------
# MEGC2019 composite


def test_composite_official_list_gives_442_samples_68_subjects(tmp_path):
  manual = fake_trees.make_fake_composite(tmp_path / "manual", frames_per_clip=2)
  config = composite.CompositeConfig(name="cropped_16", release="cropped", short_side=16)
  builder = _build(composite.Builder, config, manual, tmp_path / "data")
  meta = builder.info.metadata
  assert meta["num_examples"] == 442 and builder.info.splits["train"].num_examples == 442
  assert meta["num_subjects"] == 68
  assert meta["per_class"] == {"negative": 250, "positive": 109, "surprise": 83}
  assert meta["per_dataset"] == {"casme2": 145, "samm": 133, "smic": 164}
  assert meta["skipped_ids"] == []
  records = _records(builder)
  samm_record = records["samm/006/006_1_2"]
  assert (samm_record["subject"], samm_record["megc_subject"], samm_record["dataset"]) == (
      "006", "6", "samm")
  smic_record = records["smic/s1/s1_ne_01"]
  assert (smic_record["subject"], smic_record["megc_filename"]) == ("s1", "s01_ne_01")
  assert smic_record["apex_source"] == "midpoint"
  assert records["casme2/sub01/EP02_01f"]["label"] == 1  # positive in the official list
  assert len({r["subject"] for r in records.values()}) == 68
  # The trainer's LOSO split: one fold per composite subject.
  folds = input_pipeline.loso_folds(input_pipeline.read_clip_index(builder))
  assert len(folds) == 68
  assert {f.test_subject.split("/")[0] for f in folds} == {"casme2", "samm", "smic"}


def test_composite_missing_clip_fails_or_is_skipped(tmp_path):
  manual = fake_trees.make_fake_composite(tmp_path, frames_per_clip=1)
  # The real SMIC_all_cropped lacks this listed clip.
  shutil.rmtree(tmp_path / "smic" / "SMIC_all_cropped" / "HS" / "s18" / "micro" / "surprise" /
                "s18_sur_03")
  strict = common.BuildReport("megc2019_composite", "t", skip_unreadable=False)
  with pytest.raises(common.SampleError, match=r"smic sample s18/s18_sur_03 cannot be built: no clip folder "):
    composite.plan_samples(manual, "cropped", strict)
  lenient = common.BuildReport("megc2019_composite", "t", skip_unreadable=True)
  samples = composite.plan_samples(manual, "cropped", lenient)
  assert len(samples) == 441
  assert lenient.skipped_ids == ["smic/s18/s18_sur_03"]
  shutil.rmtree(tmp_path / "samm")
  with pytest.raises(FileNotFoundError, match=r"(?s)samm manual directory.*SAMM_CROP/"):
    composite.plan_samples(manual, "cropped", strict)
