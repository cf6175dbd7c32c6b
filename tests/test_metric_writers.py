"""Tests of `mer_jax.metric_writers`: TF-free TensorBoard events, progress reports."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mer_jax import metric_writers


def _event_files(logdir):
  return [n for n in os.listdir(logdir) if n.startswith("events.out.tfevents")]


def test_tensorboard_writer_scalars_and_images_read_back(tmp_path):
  writer = metric_writers.create_writer(str(tmp_path), backend="tensorboard")
  writer.write_scalars(1, {"train/loss": np.float32(2.5), "train/accuracy": 0.25})
  writer.write_scalars(7, {"train/loss": np.array([1.5])})
  image = np.zeros((5, 4, 3), np.uint8)
  image[1, 2] = (255, 0, 0)  # One red pixel: the channel order must survive encoding.
  writer.write_images(7, {"gradcam/x": image})
  writer.flush()
  writer.close()
  assert len(_event_files(tmp_path)) == 1

  # (TensorBoard's own reader reads these files in tests/test_tf_free.py, without TensorFlow;
  # here it would import TensorFlow, which is installed.)
  (path,) = _event_files(tmp_path)
  read_events = metric_writers._read_events  # pylint: disable=protected-access
  events = list(read_events(str(tmp_path / path)))
  assert events[0].file_version == "brain.Event:2"
  scalar = events[1].summary.value[0]
  assert scalar.metadata.plugin_data.plugin_name == "scalars"
  (stored,) = events[-1].summary.value
  assert (events[-1].step, stored.tag, stored.image.height, stored.image.width) == (
      7, "gradcam/x", 5, 4)
  import cv2  # pylint: disable=import-outside-toplevel
  decoded = cv2.imdecode(np.frombuffer(stored.image.encoded_image_string, np.uint8),
                         cv2.IMREAD_COLOR)
  np.testing.assert_array_equal(decoded[..., ::-1], image)  # BGR on decode -> RGB.

  assert metric_writers.read_scalars(str(tmp_path)) == {
      "train/loss": [(1, 2.5), (7, 1.5)], "train/accuracy": [(1, 0.25)]}


def test_bad_values_name_the_tag(tmp_path):
  writer = metric_writers.create_writer(str(tmp_path), backend="tensorboard")
  with pytest.raises(ValueError, match="'train/loss' must be a scalar, got shape \\(2,\\)"):
    writer.write_scalars(1, {"train/loss": np.ones(2)})
  with pytest.raises(ValueError, match="'pic'.*got shape \\(4, 4\\)"):
    writer.write_images(1, {"pic": np.ones((4, 4))})
  writer.close()
  with pytest.raises(ValueError, match="backend must be"):
    metric_writers.create_writer(str(tmp_path), backend="tf")
  with pytest.raises(FileNotFoundError, match="not a directory"):
    metric_writers.read_scalars(str(tmp_path / "missing"))


def test_just_logging_writes_no_event_file(tmp_path):
  writer = metric_writers.create_writer(str(tmp_path / "log"), just_logging=True,
                                        backend="tensorboard")
  writer.write_scalars(3, {"a": 1.0})
  writer.flush()
  assert not os.path.exists(tmp_path / "log")


def test_writer_without_tensorflow_in_a_subprocess(tmp_path):
  """`import tensorflow` fails: "auto" picks the tensorboard writer, TF is never imported."""
  script = textwrap.dedent(f"""
      import sys
      sys.modules["tensorflow"] = None
      from mer_jax import metric_writers
      writer = metric_writers.create_writer({str(tmp_path)!r})
      assert type(writer).__name__ == "MultiWriter", type(writer)
      writer.write_scalars(4, {{"test/uf1": 0.75}})
      writer.close()
      print(metric_writers.read_scalars({str(tmp_path)!r}))
      assert sys.modules["tensorflow"] is None
  """)
  proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                        timeout=120, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "{'test/uf1': [(4, 0.75)]}" in proc.stdout


def test_auto_does_not_import_tensorflow_only_to_log(tmp_path):
  """TensorFlow installed but not imported: "auto" writes without it (about 700 MiB less)."""
  script = textwrap.dedent(f"""
      import sys
      from mer_jax import metric_writers
      writer = metric_writers.create_writer({str(tmp_path)!r})
      writer.write_scalars(1, {{"a": 1.0}})
      writer.close()
      assert metric_writers.read_scalars({str(tmp_path)!r}) == {{"a": [(1, 1.0)]}}
      assert "tensorflow" not in sys.modules, "TensorFlow was imported"
  """)
  proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                        timeout=120, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_both_backends_write_the_same_scalar_format(tmp_path):
  """clu's writer (TensorFlow) and the TF-free one: TensorFlow's own reader sees the same."""
  tf = pytest.importorskip("tensorflow", reason="clu's writer needs TensorFlow")
  read = {}
  for backend in ("clu", "tensorboard"):
    writer = metric_writers.create_writer(str(tmp_path / backend), backend=backend)
    writer.write_scalars(2, {"steps_per_sec": 3.5})
    writer.write_scalars(5, {"steps_per_sec": 4.0})
    writer.close()
    assert metric_writers.read_scalars(str(tmp_path / backend)) == {
        "steps_per_sec": [(2, 3.5), (5, 4.0)]}
    values = []
    for name in _event_files(tmp_path / backend):
      for event in tf.compat.v1.train.summary_iterator(str(tmp_path / backend / name)):
        for value in event.summary.value:
          values.append((event.step, value.metadata.plugin_data.plugin_name,
                         float(tf.make_ndarray(value.tensor))))
    read[backend] = values
  assert read["clu"] == read["tensorboard"] == [(2, "scalars", 3.5), (5, "scalars", 4.0)]


def test_a_truncated_event_file_reads_up_to_the_cut_and_a_corrupt_one_is_named(tmp_path):
  writer = metric_writers.TensorBoardWriter(str(tmp_path))
  writer.write_scalars(1, {"loss": 1.0})
  writer.write_scalars(2, {"loss": 0.5})
  writer.close()
  data = open(writer.path, "rb").read()
  with open(writer.path, "wb") as f:
    f.write(data[:-7])  # The writer was killed while writing its last event.
  assert metric_writers.read_scalars(str(tmp_path)) == {"loss": [(1, 1.0)]}
  corrupt = bytearray(data)
  corrupt[len(data) // 2] ^= 0xFF
  with open(writer.path, "wb") as f:
    f.write(bytes(corrupt))
  with pytest.raises(ValueError, match=f"{os.path.basename(writer.path)} is corrupt"):
    metric_writers.read_scalars(str(tmp_path))


def test_legacy_simple_values_are_read_too(tmp_path):
  # pylint: disable=import-outside-toplevel
  from tensorboard.compat.proto import event_pb2, summary_pb2
  from tensorboard.summary.writer import record_writer
  # pylint: enable=import-outside-toplevel
  with open(tmp_path / "events.out.tfevents.1.old", "wb") as f:
    record_writer.RecordWriter(f).write(event_pb2.Event(step=3, summary=summary_pb2.Summary(
        value=[summary_pb2.Summary.Value(tag="old", simple_value=0.5)])).SerializeToString())
  assert metric_writers.read_scalars(str(tmp_path)) == {"old": [(3, 0.5)]}


def test_format_seconds():
  assert metric_writers.format_seconds(42.4) == "42s"
  assert metric_writers.format_seconds(727) == "12m 07s"
  assert metric_writers.format_seconds(3 * 3600 + 5 * 60 + 9) == "3h 05m"
  assert metric_writers.format_seconds(None) == "?"
  assert metric_writers.format_seconds(float("inf")) == "?"


class _Clock:
  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


class _Recorder:
  def __init__(self):
    self.scalars = []

  def write_scalars(self, step, scalars):
    self.scalars.append((step, dict(scalars)))


def test_fold_progress_reports_fold_and_run_eta(monkeypatch):
  clock = _Clock()
  monkeypatch.setattr(metric_writers.time, "monotonic", clock)
  run = metric_writers.LosoProgress(num_folds=4, num_train_steps=100)
  run.mark_done(2)  # Read back from an earlier run: not counted as to go.
  recorder = _Recorder()
  progress = metric_writers.FoldProgress(num_train_steps=100, every_steps=10, fold="s01",
                                         fold_index=0, run=run, writer=recorder,
                                         global_offset=0)
  assert progress(1) is None  # Starts the clock (the first step compiles).
  clock.now += 4.5
  assert progress(5) is None  # Between reports.
  clock.now += 4.5
  message = progress(10)
  # 9 steps in 9 s: 1 step/s; 90 steps left in this fold; folds 2 and 4 to go, 100 s each.
  assert message == ("fold s01 (1 of 4): step 10/100 (10%), 1 steps/s, fold ETA 1m 30s, "
                     "run ETA 4m 50s (2 more fold(s) to train)")
  assert recorder.scalars == [(10, {"steps_per_sec": 1.0})]

  run.mark_done(0, seconds=200.0)  # Fold 1 took 200 s of wall time (set-up and prediction too).
  second = metric_writers.FoldProgress(num_train_steps=100, every_steps=50, fold="s02",
                                       fold_index=1, run=run, writer=recorder, global_offset=100)
  second(0)
  clock.now += 25
  message = second(50)
  # 2 steps/s: 25 s left in this fold, then fold 4 at the measured 200 s.
  assert message.endswith("fold ETA 25s, run ETA 3m 45s (1 more fold(s) to train)")
  assert recorder.scalars[-1] == (150, {"steps_per_sec": 2.0})
  clock.now += 25
  assert second(100).startswith("fold s02 (2 of 4): step 100/100 (100%)")


def test_fold_progress_without_a_run_and_bad_arguments():
  progress = metric_writers.FoldProgress(num_train_steps=3, every_steps=1, fold="s07",
                                         fold_index=6)
  progress(1)
  import time  # pylint: disable=import-outside-toplevel
  time.sleep(0.01)
  assert progress(2).startswith("fold s07 (7 of ?): step 2/3")
  with pytest.raises(ValueError, match="every_steps must be >= 1"):
    metric_writers.FoldProgress(num_train_steps=3, every_steps=0)
  with pytest.raises(ValueError, match="num_folds"):
    metric_writers.LosoProgress(num_folds=0, num_train_steps=3)
