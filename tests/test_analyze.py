"""`mer-jax analyze`: bad input named, chunked reading, and a synthetic long video end to end."""

import dataclasses
import json
import os

import cv2
import numpy as np
import pytest

from mer_jax import analyze
from mer_jax import synthetic
from mer_jax import synthetic_long
from mer_jax.spotting import metrics


def _write_video(path, frames, fps, codec="FFV1"):
  # FFV1 in an .mp4 is lossless: the spotter is trained on lossless frames, and lossy mp4v
  # (3.8 grey levels of change per pixel) floods it with false motion (docs/spotting.md).
  writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps,
                           (frames.shape[2], frames.shape[1]))
  assert writer.isOpened(), f"OpenCV cannot write {codec} to {path}"
  for frame in frames:
    writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
  writer.release()


# ---- bad input (fast: refused before any model is loaded) ----------------------------------


def test_unreadable_and_empty_videos_are_named(tmp_path):
  garbage = tmp_path / "garbage.mp4"
  garbage.write_bytes(b"this is not a video" * 50)
  with pytest.raises(analyze.AnalyzeError, match="garbage.mp4"):
    analyze.analyze(str(garbage), str(tmp_path / "out"), spotting_workdir=str(tmp_path / "w"))
  empty = tmp_path / "empty.mp4"
  empty.write_bytes(b"")
  with pytest.raises(analyze.AnalyzeError, match="empty.mp4"):
    analyze.analyze(str(empty), str(tmp_path / "out"), spotting_workdir=str(tmp_path / "w"))
  missing = tmp_path / "missing.mp4"
  with pytest.raises(analyze.AnalyzeError, match="missing.mp4: no such file"):
    analyze.analyze(str(missing), str(tmp_path / "out"), spotting_workdir=str(tmp_path / "w"))


def test_frame_folder_needs_frames_and_a_frame_rate(tmp_path):
  (tmp_path / "frames").mkdir()
  with pytest.raises(analyze.AnalyzeError, match="without frames"):
    analyze.open_source(str(tmp_path / "frames"), None)
  cv2.imwrite(str(tmp_path / "frames" / "img1.png"), np.zeros((8, 8, 3), np.uint8))
  with pytest.raises(analyze.AnalyzeError, match="--fps"):
    analyze.open_source(str(tmp_path / "frames"), None)


def test_frames_are_read_in_chunks_in_natural_order(tmp_path):
  folder = tmp_path / "frames"
  folder.mkdir()
  for n in range(1, 11):  # img1 ... img10: natural order, not img1, img10, img2
    cv2.imwrite(str(folder / f"img{n}.png"), np.full((8, 8, 3), n * 10, np.uint8))
  source = analyze.open_source(str(folder), 30.0)
  chunks = list(analyze.read_chunks(source, 4))
  assert [start for start, _, _ in chunks] == [0, 4, 8]
  values = np.concatenate([frames[:, 0, 0, 0] for _, frames, _ in chunks])
  assert values.tolist() == [n * 10 for n in range(1, 11)]


def test_variable_frame_rate_is_refused_or_warned():
  constant = np.arange(100) * 1000 / 30
  assert analyze.check_frame_times(constant, "v.mp4") == pytest.approx(30.0)
  assert analyze.check_frame_times(np.zeros(50), "v.mp4") is None  # no timestamps
  variable = np.cumsum(np.r_[0, np.full(50, 33.3), np.full(50, 50.0)])
  with pytest.raises(analyze.AnalyzeError, match="v.mp4: variable frame rate"):
    analyze.check_frame_times(variable, "v.mp4")
  rate = analyze.check_frame_times(variable, "v.mp4", on_variable="warn")
  assert rate == pytest.approx(1000 / np.mean(np.diff(variable)))


def test_no_face_names_the_frames_searched(tmp_path):
  frames = np.zeros((30, 40, 40, 3), np.uint8)
  with pytest.raises(analyze.NoFaceError, match=r"clip.mp4: no face found in frames \[100, "):
    analyze.find_crop(frames, 100, lambda grey: None, 4, "clip.mp4")
  # A detector that finds a face in some frames gives the median box.
  boxes = iter([None, (10.0, 10.0, 20.0, 20.0, 2.0), (12.0, 10.0, 20.0, 20.0, 4.0), None])
  crop = analyze.find_crop(frames, 0, lambda grey: next(boxes), 4, "clip.mp4")
  assert (crop.cx, crop.cy, crop.side, crop.angle_deg) == (21.0, 20.0, 20.0, 3.0)
  assert crop.apply(frames[0], 16).shape == (16, 16, 3)


def test_missing_haar_cascades_are_named(tmp_path):
  with pytest.raises(analyze.AnalyzeError, match="haarcascade_frontalface_default.xml"):
    analyze.haar_detector(str(tmp_path))


def test_cli_reports_errors_without_a_traceback(tmp_path, capsys):
  garbage = tmp_path / "bad.avi"
  garbage.write_bytes(b"nope")
  code = analyze.main([str(garbage), "--out", str(tmp_path / "o"), "--spotting_workdir",
                       str(tmp_path / "w")])
  assert code == 2
  assert "bad.avi" in capsys.readouterr().err


# ---- end to end (slow: trains the tiny spotter) --------------------------------------------


@pytest.fixture(scope="module")
def spotting_workdir(tmp_path_factory):
  from configs import spotting as spotting_config
  from mer_jax.spotting import train
  root = tmp_path_factory.mktemp("spotting")
  config = spotting_config.get_config("tiny,loso=false")
  config.dataset.data_dir = str(root / "cache")
  config.train.num_steps = 300
  config.train.checkpoint_every = 300
  # Peak parameters fitted to this one-member tiny spotter's curves (the defaults are chosen
  # for the real 3-member ensemble, whose averaged curve is smoother): those of the
  # one-member spotter before the ensemble.
  config.peaks.update(dict(smooth_s=0.2, threshold=0.7, low_threshold=0.4, merge_gap_s=0.2,
                           min_length_s=0.2, drop_by_duration=False))
  train.train_and_evaluate(config, str(root / "workdir"))
  return str(root / "workdir")


@pytest.mark.slow
def test_analyze_finds_the_expressions_of_an_unseen_synthetic_video(spotting_workdir, tmp_path):
  # Subject s02 is not among the two subjects (s00, s01) the tiny spotter was trained on.
  config = dataclasses.replace(synthetic_long.PRESETS["tiny"], num_subjects=3)
  subject = synthetic.make_subjects(3, config.seed)[2]
  rendered = synthetic_long.render_video(subject, np.random.default_rng([config.seed, 4, 2, 0]),
                                         config)
  video = tmp_path / "s02.mp4"
  _write_video(video, rendered["frames"], rendered["fps"])
  out = tmp_path / "analysis"
  result = analyze.analyze(str(video), str(out), spotting_workdir=spotting_workdir, crop="none",
                           chunk_frames=100, video=True)
  saved = json.loads((out / "analysis.json").read_text())
  assert saved["intervals"] == json.loads(json.dumps(result["intervals"]))
  assert saved["num_frames"] == len(rendered["frames"]) and saved["fps"] == pytest.approx(30.0)
  for name in ("timeline.png", "annotated.mp4"):
    assert os.path.getsize(out / name) > 1000
  for i in saved["intervals"]:
    assert i["onset"] <= i["apex"] <= i["offset"] and i["type"] in ("micro", "macro")
    assert abs(sum(i["probabilities"].values()) - 1) < 1e-4
  truths = [metrics.Interval(e.onset, e.offset, e.type) for e in rendered["expressions"]]
  found = [metrics.Interval(i["onset"], i["offset"], i["type"]) for i in saved["intervals"]]
  score = metrics.evaluate_spotting({"s02": truths}, {"s02": found})
  print("analyze on s02:", [(t.onset, t.offset, t.type) for t in truths], "found",
        [(f.onset, f.offset, f.type) for f in found], score.overall)
  # Three expressions: at least one found with IoU >= 0.5 and its type (a tiny model, 2
  # training videos; the LOSO figures of docs/spotting.md are the real measure).
  assert score.overall.tp >= 1
  # Reading in chunks of 100 frames or all at once gives the same analysis.
  again = analyze.analyze(str(video), str(tmp_path / "again"), spotting_workdir=spotting_workdir,
                          crop="none", chunk_frames=1000)
  assert again["intervals"] == result["intervals"]
