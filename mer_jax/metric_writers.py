"""TensorBoard logging and LOSO progress reports, with or without TensorFlow.

`create_writer(logdir, just_logging)` returns the absl log plus
`TensorBoardWriter`, which writes `events.out.tfevents.*` files with the
`tensorboard` package alone (its record framing and summary protos), in the
format clu's writer uses; clu's default writer where TensorFlow is already
imported. GPU machines and slim installs have no TensorFlow, and clu's
`metric_writers` and `periodic_actions` import it at module level, so neither
is imported here unless asked for.

`LosoProgress` and `FoldProgress` replace `clu.periodic_actions.ReportProgress`:
every `every_steps` they log which fold of how many is running, its step and
steps/s, the fold's ETA and the whole run's ETA (the folds still to train,
estimated from the folds already timed), and write `steps_per_sec` to
TensorBoard.

`read_scalars(logdir)` reads the scalars of either writer back without
TensorFlow.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import socket
import struct
import sys
import time
from typing import Any, Mapping, Optional, Protocol

from absl import logging
import numpy as np

STEPS_PER_SEC_TAG = "steps_per_sec"


class MetricWriter(Protocol):
  """What the trainer and the reports call on a writer (clu's `MetricWriter` subset)."""

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None: ...
  def write_images(self, step: int, images: Mapping[str, Any]) -> None: ...
  def flush(self) -> None: ...
  def close(self) -> None: ...


def _scalar(name: str, value: Any) -> float:
  array = np.asarray(value)
  if array.size != 1:
    raise ValueError(f"write_scalars: {name!r} must be a scalar, got shape {array.shape}")
  return float(array.reshape(()))


def _images(name: str, value: Any) -> np.ndarray:
  """`(N, H, W, C)` uint8, C in {1, 3, 4}, from uint8 or [0, 1] floats, `(H, W, C)` or batched."""
  array = np.asarray(value)
  if array.ndim == 3:
    array = array[None]
  if array.ndim != 4 or array.shape[-1] not in (1, 3, 4):
    raise ValueError(f"write_images: {name!r} must be (N, H, W, C) or (H, W, C) with C in "
                     f"1, 3, 4; got shape {array.shape}")
  if array.dtype != np.uint8:
    array = (np.clip(array.astype(np.float32), 0.0, 1.0) * 255.0).round().astype(np.uint8)
  return array


class LoggingWriter:
  """Writes scalars to the absl log ("[step] name = value, ..."); images are only counted."""

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    text = ", ".join(f"{k} = {_scalar(k, v):.6g}" for k, v in sorted(scalars.items()))
    logging.info("[%d] %s", step, text)

  def write_images(self, step: int, images: Mapping[str, Any]) -> None:
    logging.info("[%d] images: %s", step,
                 ", ".join(f"{k} {np.shape(v)}" for k, v in sorted(images.items())))

  def flush(self) -> None:
    pass

  def close(self) -> None:
    pass


class TensorBoardWriter:
  """TensorBoard event files written with the `tensorboard` package only (no TensorFlow).

  Scalars are written as TensorFlow 2's `tf.summary.scalar` writes them (clu's
  writer too): a float32 scalar tensor with the "scalars" plugin's metadata, so
  a reader of either writer's files reads both. Images are PNG-encoded
  `Summary.Image`s, one per image of the batch (tag, tag/1, ...).

  The file is `logdir/events.out.tfevents.<time>.<host>.<pid>.<n>`, TFRecord-framed
  by tensorboard's `RecordWriter` over a plain file, written and flushed at
  each call. tensorboard's own `EventFileWriter` is not used:
  it opens files through `tensorboard.compat.tf`, which imports TensorFlow
  whenever it is installed (about 700 MiB of resident memory).
  """

  _count = itertools.count()

  def __init__(self, logdir: str):
    # pylint: disable=import-outside-toplevel
    from tensorboard.compat.proto import event_pb2
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.scalar import metadata as scalar_metadata
    from tensorboard.summary.writer import record_writer
    from tensorboard.util import tensor_util
    # pylint: enable=import-outside-toplevel
    os.makedirs(logdir, exist_ok=True)
    self._event_pb2, self._summary_pb2 = event_pb2, summary_pb2
    self._scalar_metadata, self._tensor_util = scalar_metadata, tensor_util
    self.path = os.path.join(logdir, f"events.out.tfevents.{int(time.time()):010d}."
                                     f"{socket.gethostname()}.{os.getpid()}.{next(self._count)}")
    self._file = open(self.path, "wb")  # pylint: disable=consider-using-with
    self._records = record_writer.RecordWriter(self._file)
    self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

  def _write(self, event) -> None:
    if self._file.closed:
      raise ValueError(f"TensorBoardWriter: {self.path} is closed")
    self._records.write(event.SerializeToString())

  def _add(self, step: int, values: list) -> None:
    summary = self._summary_pb2.Summary(value=values)
    self._write(self._event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))
    self._file.flush()  # A few events per logging interval: TensorBoard sees them at once.

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    Value = self._summary_pb2.Summary.Value  # pylint: disable=invalid-name
    self._add(step, [
        Value(tag=k, tensor=self._tensor_util.make_tensor_proto(np.float32(_scalar(k, v))),
              metadata=self._scalar_metadata.create_summary_metadata(display_name=k,
                                                                     description=""))
        for k, v in scalars.items()])

  def write_images(self, step: int, images: Mapping[str, Any]) -> None:
    import cv2  # pylint: disable=import-outside-toplevel
    Summary = self._summary_pb2.Summary  # pylint: disable=invalid-name
    values = []
    for tag, value in images.items():
      batch = _images(tag, value)
      for i, image in enumerate(batch):
        # OpenCV encodes BGR(A); TensorBoard shows RGB(A).
        code = {3: cv2.COLOR_RGB2BGR, 4: cv2.COLOR_RGBA2BGRA}.get(image.shape[-1])
        ok, png = cv2.imencode(".png", cv2.cvtColor(image, code) if code is not None else image)
        if not ok:
          raise ValueError(f"write_images: could not PNG-encode {tag!r} (shape {image.shape})")
        values.append(Summary.Value(
            tag=tag if i == 0 else f"{tag}/{i}",
            image=Summary.Image(height=image.shape[0], width=image.shape[1],
                                colorspace=image.shape[-1], encoded_image_string=png.tobytes())))
    self._add(step, values)

  def flush(self) -> None:
    if not self._file.closed:
      self._file.flush()

  def close(self) -> None:
    if not self._file.closed:
      self._file.close()


class MultiWriter:
  """Forwards every call to each of `writers`."""

  def __init__(self, writers):
    self._writers = list(writers)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    for w in self._writers:
      w.write_scalars(step, scalars)

  def write_images(self, step: int, images: Mapping[str, Any]) -> None:
    for w in self._writers:
      w.write_images(step, images)

  def flush(self) -> None:
    for w in self._writers:
      w.flush()

  def close(self) -> None:
    for w in self._writers:
      w.close()


def create_writer(logdir: str, just_logging: bool = False, *,
                  backend: str = "auto") -> MetricWriter:
  """The run's metric writer: absl log, plus TensorBoard events in `logdir` unless `just_logging`.

  Args:
    logdir: directory of the `events.out.tfevents.*` files (created if needed).
    just_logging: log only (processes other than 0 of a multi-host run).
    backend: "clu" (clu's default writer; needs TensorFlow), "tensorboard"
      (`TensorBoardWriter`, the `tensorboard` package only), or "auto": clu
      where TensorFlow is already imported by this process, else
      "tensorboard".

  Both write scalars in the same format (`read_scalars` and TensorFlow's
  `summary_iterator` read either), so "auto" does not import TensorFlow only
  to log: that costs about 700 MiB of resident memory (measured on
  2026-11-29 with jax, flax and optax loaded: 895 MiB peak with clu's writer,
  209 MiB with `TensorBoardWriter`).
  """
  if backend not in ("auto", "clu", "tensorboard"):
    raise ValueError(f"create_writer: backend must be 'auto', 'clu' or 'tensorboard', "
                     f"got {backend!r}")
  if backend == "auto":
    backend = "clu" if sys.modules.get("tensorflow") is not None else "tensorboard"
  if backend == "clu":
    from clu import metric_writers  # pylint: disable=import-outside-toplevel
    return metric_writers.create_default_writer(logdir, just_logging=just_logging)
  if just_logging:
    return LoggingWriter()
  return MultiWriter([LoggingWriter(), TensorBoardWriter(logdir)])


def _read_events(path: str):
  """The `Event` protos of one event file, in order; a truncated last record is left out.

  TFRecord framing: uint64 length, uint32 masked CRC-32C of the length, the
  data, uint32 masked CRC-32C of the data (little-endian). Read here rather
  than with tensorboard's loader, which imports TensorFlow when it is installed.
  """
  # pylint: disable=import-outside-toplevel
  from tensorboard.compat.proto import event_pb2
  from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c
  # pylint: enable=import-outside-toplevel
  with open(path, "rb") as f:
    while True:
      header = f.read(12)
      if len(header) < 12:
        return  # End of file, or a header cut short by a killed writer.
      length, length_crc = struct.unpack("<QI", header)
      if masked_crc32c(header[:8]) != length_crc:
        raise ValueError(f"read_scalars: {path} is corrupt (bad record length checksum at byte "
                         f"{f.tell() - 12})")
      data, footer = f.read(length), f.read(4)
      if len(data) < length or len(footer) < 4:
        return  # The last record was being written when the writer stopped.
      if masked_crc32c(data) != struct.unpack("<I", footer)[0]:
        raise ValueError(f"read_scalars: {path} is corrupt (bad record checksum at byte "
                         f"{f.tell() - length - 4})")
      yield event_pb2.Event.FromString(data)


def read_scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
  """Every scalar in `logdir`'s event files: `{tag: [(step, value), ...]}`, files in name order.

  Reads scalar tensors (both writers) and legacy `simple_value` summaries
  without TensorFlow.
  """
  from tensorboard.util import tensor_util  # pylint: disable=import-outside-toplevel
  if not os.path.isdir(logdir):
    raise FileNotFoundError(f"read_scalars: {logdir!r} is not a directory")
  scalars: dict[str, list[tuple[int, float]]] = {}
  for name in sorted(os.listdir(logdir)):
    if not name.startswith("events.out.tfevents"):
      continue
    for event in _read_events(os.path.join(logdir, name)):
      for value in event.summary.value:
        kind = value.WhichOneof("value")
        if kind == "simple_value":
          number = value.simple_value
        elif kind == "tensor" and not value.tensor.tensor_shape.dim:
          array = tensor_util.make_ndarray(value.tensor)
          if array.dtype.kind not in "fiu":
            continue  # Text and other non-numeric tensors.
          number = float(array)
        else:
          continue
        scalars.setdefault(value.tag, []).append((int(event.step), float(number)))
  return scalars


# --------------------------------------------------------------------------------------------
# Progress.
# --------------------------------------------------------------------------------------------

def format_seconds(seconds: Optional[float]) -> str:
  """`3h 05m`, `12m 07s`, `42s`; "?" when unknown."""
  if seconds is None or not np.isfinite(seconds):
    return "?"
  seconds = max(0, int(round(seconds)))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  if hours:
    return f"{hours}h {minutes:02d}m"
  if minutes:
    return f"{minutes}m {secs:02d}s"
  return f"{secs}s"


@dataclasses.dataclass
class LosoProgress:
  """The whole LOSO run's progress: which folds are done, how long a fold takes.

  The trainer makes one per run and hands it to each fold's `FoldProgress`.
  The run ETA is the running fold's ETA plus, for every fold after it not yet
  done, the mean wall time of the folds trained in this process (set-up,
  training, prediction), or before the first fold ends, its training steps at
  the running fold's steps/s.
  """
  num_folds: int
  num_train_steps: int
  done: set = dataclasses.field(default_factory=set)
  fold_seconds: list = dataclasses.field(default_factory=list)

  def __post_init__(self):
    if self.num_folds < 1 or self.num_train_steps < 1:
      raise ValueError(f"LosoProgress: num_folds and num_train_steps must be >= 1, got "
                       f"{self.num_folds}, {self.num_train_steps}")

  def mark_done(self, fold_index: int, seconds: Optional[float] = None) -> None:
    """Fold `fold_index` is finished; `seconds` is its wall time if it was trained here."""
    self.done.add(fold_index)
    if seconds is not None:
      self.fold_seconds.append(float(seconds))

  def folds_after(self, fold_index: int) -> int:
    """Folds after `fold_index` that still have to be trained."""
    return sum(1 for i in range(fold_index + 1, self.num_folds) if i not in self.done)

  def run_eta(self, fold_index: int, fold_eta: float, steps_per_sec: float) -> float:
    """Seconds until the last fold ends, with the running fold `fold_eta` seconds from its end."""
    if self.fold_seconds:
      per_fold = float(np.mean(self.fold_seconds))
    else:
      per_fold = self.num_train_steps / steps_per_sec
    return fold_eta + self.folds_after(fold_index) * per_fold


class FoldProgress:
  """`progress(step)` after each train step: a readable report every `every_steps`.

  Logs, e.g., "fold s03 (4 of 16): step 200/500 (40%), 12.5 steps/s, fold ETA
  24s, run ETA 10m 40s (12 folds to go)" and writes `steps_per_sec` at global
  step `global_offset + step`. The rate covers the steps since the previous
  report; the first call only starts the clock, so the compiling first step
  is not counted.
  """

  def __init__(self, *, num_train_steps: int, every_steps: int, fold: str = "",
               fold_index: int = 0, run: Optional[LosoProgress] = None,
               writer: Optional[MetricWriter] = None, global_offset: int = 0):
    if num_train_steps < 1 or every_steps < 1:
      raise ValueError(f"FoldProgress: num_train_steps and every_steps must be >= 1, got "
                       f"{num_train_steps}, {every_steps}")
    self.num_train_steps = num_train_steps
    self.every_steps = every_steps
    self.fold = fold
    self.fold_index = fold_index
    self.run = run
    self.writer = writer
    self.global_offset = global_offset
    self._last: Optional[tuple[int, float]] = None  # (step, time) of the previous report.
    self.last_message: Optional[str] = None

  def _label(self) -> str:
    where = (f"{self.fold_index + 1} of {self.run.num_folds}" if self.run is not None
             else f"{self.fold_index + 1} of ?")
    return f"fold {self.fold} ({where})" if self.fold else f"fold {where}"

  def __call__(self, step: int) -> Optional[str]:
    """Reports at multiples of `every_steps` and at the last step; returns the message."""
    now = time.monotonic()
    if self._last is None:
      self._last = (step, now)
      return None
    if step % self.every_steps and step != self.num_train_steps:
      return None
    last_step, last_time = self._last
    if step <= last_step or now <= last_time:
      return None
    rate = (step - last_step) / (now - last_time)
    self._last = (step, now)
    fold_eta = (self.num_train_steps - step) / rate
    message = (f"{self._label()}: step {step}/{self.num_train_steps} "
               f"({100 * step / self.num_train_steps:.0f}%), {rate:.3g} steps/s, "
               f"fold ETA {format_seconds(fold_eta)}")
    if self.run is not None:
      run_eta = self.run.run_eta(self.fold_index, fold_eta, rate)
      message += (f", run ETA {format_seconds(run_eta)} "
                  f"({self.run.folds_after(self.fold_index)} more fold(s) to train)")
    logging.info("%s", message)
    if self.writer is not None:
      self.writer.write_scalars(self.global_offset + step, {STEPS_PER_SEC_TAG: rate})
    self.last_message = message
    return message
