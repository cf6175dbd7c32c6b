r"""`mer-jax analyze`: spot and recognise micro- and macro-expressions in a person's own video.

  mer-jax analyze VIDEO_OR_FRAME_DIR --out DIR [--spotting_workdir W] [--crop haar|none]
  python -m mer_jax.analyze VIDEO_OR_FRAME_DIR --out DIR ...

Input: a video file (read with OpenCV's VideoCapture) or a folder of frames
(`*.png`, `*.jpg`, ..., in natural order of the numbers in their names; the
frame rate then comes from `--fps`).

Steps:
1. frames are decoded in chunks of `--chunk_frames` (progress is logged per
   chunk): a video longer than memory never is held whole; only the cropped
   grey `size x size` frames are kept (4 KB a frame at 64 x 64);
2. the face: `--crop haar` finds it with OpenCV's Haar cascades (frontal face,
   then the eyes inside it for the eye-line angle) on `--detect_frames` frames
   spread over the first chunk; the median box and angle give one fixed,
   levelled square crop for the whole video (the spotter's flow removes small
   head shifts). No face in any of those frames is an error naming them.
   `--crop none` takes the frames as already cropped;
3. the spotting workdir's model (`mer_jax.spotting.train`, fold "all") scores
   every frame from the flow between frames k apart (k from the video's fps),
   finds intervals (`mer_jax.spotting.peaks`), estimates each apex from the
   flow and recognises each interval's class from its onset->apex flow;
4. writes `analysis.json` (each interval's onset, apex and offset frame
   indices, type, class, probabilities; the models' workdirs), `timeline.png`
   (the score over time with the intervals and classes marked) and, with
   `--video`, `annotated.mp4`.

Frame timing: where OpenCV reports a timestamp per frame, a variable frame
rate (intervals between frames differing by more than 10 % from their
median) is refused (`--variable_fps=warn` proceeds with the mean rate, so
durations and the micro/macro split are then approximate).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging as py_logging
import os
import re
import sys
import time
from typing import Callable, Iterator, Optional, Sequence

import numpy as np

from mer_jax import paths
from mer_jax.spotting import peaks as peaks_lib

log = py_logging.getLogger("mer_jax.analyze")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# Intervals between frame timestamps may differ from their median by this fraction.
VFR_TOLERANCE = 0.10
FACE_CASCADE = "haarcascade_frontalface_default.xml"
EYE_CASCADE = "haarcascade_eye.xml"


class AnalyzeError(ValueError):
  """Bad input to `mer-jax analyze`, with a message naming the file, frames or argument."""


class NoFaceError(AnalyzeError):
  """No face was found in the frames searched."""


# ----------------------------------------------------------------------------
# Reading.


@dataclasses.dataclass
class Source:
  """An opened input: its frame rate, frame count (None if unknown) and a chunk reader."""
  path: str
  fps: float
  num_frames: Optional[int]
  is_video: bool
  frame_names: Optional[list] = None


def _natural_key(name: str):
  return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def open_source(path: str, fps: Optional[float]) -> Source:
  """Checks the input and finds its frame rate (AnalyzeError naming the file otherwise)."""
  import cv2  # pylint: disable=import-outside-toplevel
  if os.path.isdir(path):
    names = sorted((n for n in os.listdir(path) if n.lower().endswith(IMAGE_EXTENSIONS)),
                   key=_natural_key)
    if not names:
      raise AnalyzeError(f"{path}: a folder without frames (no {', '.join(IMAGE_EXTENSIONS)} "
                         "files)")
    if fps is None:
      raise AnalyzeError(f"{path}: a folder of frames has no frame rate; pass --fps (e.g. 30 "
                         "for CAS(ME)^2, 200 for SAMM)")
    return Source(path, float(fps), len(names), False, names)
  if not os.path.exists(path):
    raise AnalyzeError(f"{path}: no such file or folder")
  capture = cv2.VideoCapture(path)
  try:
    if not capture.isOpened():
      raise AnalyzeError(f"{path}: OpenCV cannot open this file as a video (unreadable, not a "
                         "video, or a codec this OpenCV build lacks)")
    ok, frame = capture.read()
    if not ok or frame is None:
      raise AnalyzeError(f"{path}: the video has no readable frames (empty or damaged)")
    native_fps = capture.get(cv2.CAP_PROP_FPS)
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
  finally:
    capture.release()
  if fps is None:
    if not (native_fps and native_fps > 0 and np.isfinite(native_fps)):
      raise AnalyzeError(f"{path}: the video does not state its frame rate; pass --fps")
    fps = native_fps
  return Source(path, float(fps), count if count > 0 else None, True)


def read_chunks(source: Source, chunk_frames: int
                ) -> Iterator[tuple[int, np.ndarray, Optional[np.ndarray]]]:
  """Yields (first frame index, uint8 RGB frames (n, H, W, 3), timestamps in ms or None)."""
  import cv2  # pylint: disable=import-outside-toplevel
  if not source.is_video:
    for start in range(0, len(source.frame_names), chunk_frames):
      frames = []
      for name in source.frame_names[start:start + chunk_frames]:
        file = os.path.join(source.path, name)
        image = cv2.imread(file, cv2.IMREAD_COLOR)
        if image is None:
          raise AnalyzeError(f"{file}: unreadable image (frame {len(frames) + start})")
        if frames and image.shape != frames[0].shape:
          raise AnalyzeError(f"{file}: size {image.shape[:2]} differs from the first frame's "
                             f"{frames[0].shape[:2]}")
        frames.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
      yield start, np.stack(frames), None
    return
  capture = cv2.VideoCapture(source.path)
  try:
    start = 0
    while True:
      frames, stamps = [], []
      while len(frames) < chunk_frames:
        ok, frame = capture.read()
        if not ok:
          break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        stamps.append(capture.get(cv2.CAP_PROP_POS_MSEC))
      if not frames:
        return
      yield start, np.stack(frames), np.asarray(stamps, np.float64)
      start += len(frames)
  finally:
    capture.release()


def check_frame_times(stamps_ms: np.ndarray, path: str, *, on_variable: str = "refuse"
                      ) -> Optional[float]:
  """The frame rate implied by per-frame timestamps; refuses (or warns about) a variable one.

  Returns None when the timestamps carry no information (all equal, as some
  OpenCV back ends report).

  Raises:
    AnalyzeError: intervals between consecutive timestamps that differ from
      their median by more than `VFR_TOLERANCE`, with `on_variable="refuse"`.
  """
  stamps_ms = np.asarray(stamps_ms, np.float64)
  if len(stamps_ms) < 3:
    return None
  steps = np.diff(stamps_ms)
  if np.all(steps == 0):
    return None
  median = float(np.median(steps))
  bad = np.flatnonzero(np.abs(steps - median) > VFR_TOLERANCE * max(abs(median), 1e-9))
  if median <= 0 or len(bad):
    first = bad[:5].tolist()
    message = (f"{path}: variable frame rate: {len(bad)} of {len(steps)} frame intervals differ "
               f"from the median {median:.2f} ms by more than {VFR_TOLERANCE:.0%} (first after "
               f"frames {first}); spotting needs a constant rate (re-encode at a fixed rate, "
               "e.g. ffmpeg -vsync cfr), or pass --variable_fps=warn to use the mean rate")
    if on_variable == "refuse":
      raise AnalyzeError(message)
    log.warning("%s", message)
  return 1000.0 / float(np.mean(steps))


# ----------------------------------------------------------------------------
# Face crop.


@dataclasses.dataclass(frozen=True)
class Crop:
  """A fixed levelled square crop: centre (x, y), side and rotation (degrees) in input pixels."""
  cx: float
  cy: float
  side: float
  angle_deg: float

  def apply(self, frame: np.ndarray, size: int) -> np.ndarray:
    import cv2  # pylint: disable=import-outside-toplevel
    scale = size / self.side
    matrix = cv2.getRotationMatrix2D((self.cx, self.cy), self.angle_deg, scale)
    matrix[:, 2] += (size / 2 - self.cx, size / 2 - self.cy)
    return cv2.warpAffine(frame, matrix, (size, size), flags=cv2.INTER_AREA,
                          borderMode=cv2.BORDER_REPLICATE)


def haar_detector(cascade_dir: Optional[str] = None) -> Callable[[np.ndarray], Optional[tuple]]:
  """A face detector from OpenCV's Haar cascades: grey frame -> (x, y, w, h, eye angle) or None.

  The cascades ship inside the opencv wheels up to 4.x (`cv2.data.haarcascades`);
  `cascade_dir` names another folder holding the two XML files.
  """
  import cv2  # pylint: disable=import-outside-toplevel
  folder = cascade_dir or getattr(getattr(cv2, "data", None), "haarcascades", "")
  files = [os.path.join(folder, name) for name in (FACE_CASCADE, EYE_CASCADE)]
  missing = [f for f in files if not os.path.isfile(f)]
  if missing:
    raise AnalyzeError(
        f"--crop haar needs OpenCV's Haar cascades, missing: {', '.join(missing)} (OpenCV "
        f"{cv2.__version__}'s wheel does not ship them; 4.x wheels do). Pass --cascade_dir "
        "with a folder holding them, or crop the face yourself and pass --crop none")
  face, eye = cv2.CascadeClassifier(files[0]), cv2.CascadeClassifier(files[1])

  def detect(grey: np.ndarray):
    faces = face.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5,
                                  minSize=(max(24, min(grey.shape) // 8),) * 2)
    if len(faces) == 0:
      return None
    x, y, w, h = max(faces, key=lambda f: f[2] * f[3])
    top = grey[y:y + h // 2, x:x + w]
    eyes = eye.detectMultiScale(top, scaleFactor=1.1, minNeighbors=5)
    angle = 0.0
    if len(eyes) >= 2:
      two = sorted(sorted(eyes, key=lambda e: -e[2] * e[3])[:2], key=lambda e: e[0])
      (lx, ly), (rx, ry) = [(e[0] + e[2] / 2, e[1] + e[3] / 2) for e in two]
      angle = float(np.degrees(np.arctan2(ry - ly, rx - lx)))
    return float(x), float(y), float(w), float(h), angle

  return detect


def find_crop(frames: np.ndarray, first_index: int, detect: Callable, count: int,
              where: str) -> Crop:
  """The median face box and eye angle over `count` frames spread over `frames`."""
  import cv2  # pylint: disable=import-outside-toplevel
  picks = np.unique(np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int))
  found = []
  for i in picks:
    box = detect(cv2.cvtColor(frames[i], cv2.COLOR_RGB2GRAY))
    if box is not None:
      found.append(box)
  if not found:
    indices = [int(first_index + i) for i in picks]
    raise NoFaceError(f"{where}: no face found in frames {indices} (0-based indices) by the "
                      "Haar face detector; check the video shows a frontal face, or crop it "
                      "yourself and pass --crop none")
  x, y, w, h, angle = np.median(np.asarray(found), axis=0)
  return Crop(cx=x + w / 2, cy=y + h / 2, side=w, angle_deg=angle)


# ----------------------------------------------------------------------------
# Outputs.


def write_timeline(path: str, probabilities: np.ndarray, fps: float, intervals: Sequence[dict],
                   params: peaks_lib.PeakParams, title: str) -> None:
  """The spotting score over time, the intervals shaded by type and labelled with their class.

  The dashed line is `params.threshold`; with hysteresis the dotted one is
  `params.low_threshold`, down to which an interval extends once its type's
  smoothed probability reached the threshold (`mer_jax.spotting.peaks`)."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  t = np.arange(len(probabilities)) / fps
  fig, ax = plt.subplots(figsize=(max(8.0, min(24.0, len(t) / fps / 3)), 3.2))
  ax.plot(t, probabilities[:, 1], color="tab:red", lw=1, label="p(micro)")
  ax.plot(t, probabilities[:, 2], color="tab:blue", lw=1, label="p(macro)")
  ax.axhline(params.threshold, color="grey", ls="--", lw=0.8,
             label=f"threshold {params.threshold:g}")
  if params.low_threshold < params.threshold:
    ax.axhline(params.low_threshold, color="grey", ls=":", lw=0.8,
               label=f"extends down to {params.low_threshold:g}")
  for i in intervals:
    colour = "tab:red" if i["type"] == "micro" else "tab:blue"
    ax.axvspan(i["onset"] / fps, (i["offset"] + 1) / fps, color=colour, alpha=0.15)
    ax.axvline(i["apex"] / fps, color=colour, lw=0.6)
    ax.text(i["apex"] / fps, 1.02, f"{i['type']}\n{i['class']}", ha="center", va="bottom",
            fontsize=7, color=colour)
  ax.set_ylim(0, 1.0)
  ax.set_xlim(0, max(t[-1], 1e-3) if len(t) else 1)
  ax.set_xlabel("time (s)")
  ax.set_ylabel("probability")
  ax.set_title(title, fontsize=9, pad=22)
  ax.legend(loc="upper right", fontsize=7, framealpha=0.8)
  fig.tight_layout()
  tmp = f"{path}.tmp.{os.getpid()}.png"
  fig.savefig(tmp, dpi=110)
  plt.close(fig)
  os.replace(tmp, path)


def write_annotated_video(source: Source, out_path: str, fps: float, intervals: Sequence[dict],
                          chunk_frames: int) -> None:
  """The input with the interval, type and class written on every frame inside an interval."""
  import cv2  # pylint: disable=import-outside-toplevel
  writer = None
  tmp = f"{out_path}.tmp.{os.getpid()}.mp4"
  try:
    for start, frames, _ in read_chunks(source, chunk_frames):
      for j, frame in enumerate(frames):
        n = start + j
        if writer is None:
          writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                   (frame.shape[1], frame.shape[0]))
        image = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        for i in intervals:
          if i["onset"] <= n <= i["offset"]:
            text = f"{i['type']} {i['class']}" + (" APEX" if n == i["apex"] else "")
            cv2.putText(image, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 255), 1)
        cv2.putText(image, str(n), (4, image.shape[0] - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.3,
                    (255, 255, 255), 1)
        writer.write(image)
  finally:
    if writer is not None:
      writer.release()
  os.replace(tmp, out_path)


# ----------------------------------------------------------------------------
# The command.


def analyze(input_path: str, out_dir: str, *, spotting_workdir: str,
            recognition_workdir: Optional[str] = None, crop: str = "haar",
            cascade_dir: Optional[str] = None, fps: Optional[float] = None,
            chunk_frames: int = 1000, detect_frames: int = 10, variable_fps: str = "refuse",
            video: bool = False, overwrite: bool = False,
            detector: Optional[Callable] = None) -> dict:
  """Runs the whole analysis (module docstring) and returns analysis.json's content."""
  from mer_jax.spotting import features as features_lib  # pylint: disable=import-outside-toplevel
  from mer_jax.spotting import train as spot_train  # pylint: disable=import-outside-toplevel
  if crop not in ("haar", "none"):
    raise AnalyzeError(f"--crop must be 'haar' or 'none', got {crop!r}")
  if variable_fps not in ("refuse", "warn"):
    raise AnalyzeError(f"--variable_fps must be 'refuse' or 'warn', got {variable_fps!r}")
  if chunk_frames < 16:
    raise AnalyzeError(f"--chunk_frames must be >= 16, got {chunk_frames}")
  if fps is not None and not fps > 0:
    raise AnalyzeError(f"--fps must be > 0, got {fps}")
  paths.check_output_path(out_dir, [input_path, spotting_workdir]
                          + ([recognition_workdir] if recognition_workdir else []),
                          overwrite=overwrite, what="--out")
  source = open_source(input_path, fps)
  predictor, config = spot_train.load_predictor(spotting_workdir)
  recognition_workdir = recognition_workdir or spotting_workdir
  if os.path.abspath(recognition_workdir) != os.path.abspath(spotting_workdir):
    recogniser, _ = spot_train.load_predictor(recognition_workdir)
    predictor.use_recogniser_of(recogniser)
  size = predictor.settings.size
  if crop == "haar" and detector is None:
    detector = haar_detector(cascade_dir)

  began = time.time()
  face_crop, grey_chunks, stamps = None, [], []
  for start, frames, chunk_stamps in read_chunks(source, chunk_frames):
    if crop == "haar":
      if face_crop is None:
        face_crop = find_crop(frames, start, detector, detect_frames, input_path)
      frames = np.stack([face_crop.apply(f, size) for f in frames])
    grey_chunks.append(np.clip(np.rint(features_lib.grey_frames(frames, size) * 255), 0, 255)
                       .astype(np.uint8))
    if chunk_stamps is not None:
      stamps.append(chunk_stamps)
    total = f"/{source.num_frames}" if source.num_frames else ""
    log.info("%s: read frames %d-%d%s (%.1f s)", input_path, start, start + len(frames) - 1,
             total, time.time() - began)
  grey_u8 = np.concatenate(grey_chunks)
  if stamps:
    measured = check_frame_times(np.concatenate(stamps), input_path, on_variable=variable_fps)
    if measured is not None and fps is None and abs(measured - source.fps) > 0.05 * source.fps:
      log.warning("%s: the container says %.3f fps, the timestamps %.3f fps; using the "
                  "timestamps", input_path, source.fps, measured)
      source.fps = measured
  if len(grey_u8) < 3:
    raise AnalyzeError(f"{input_path}: {len(grey_u8)} frame(s); spotting needs a video")
  grey = grey_u8.astype(np.float32) / 255.0
  k = predictor.settings.k(source.fps)
  maps = features_lib.motion_features(grey, k, pool=predictor.settings.pool)
  log.info("%s: motion features of %d frames (k=%d) done (%.1f s)", input_path, len(grey), k,
           time.time() - began)
  result = predictor.analyse(maps, grey, source.fps)
  os.makedirs(out_dir, exist_ok=True)
  analysis = {
      "input": os.path.abspath(input_path), "fps": source.fps, "num_frames": int(len(grey)),
      "pair_distance_k": k, "frame_size": size,
      "crop": (dataclasses.asdict(face_crop) if face_crop else {"mode": "none"}),
      "spotting_workdir": os.path.abspath(spotting_workdir),
      "recognition_workdir": os.path.abspath(recognition_workdir),
      "peaks": dataclasses.asdict(predictor.peak_params),
      "intervals": result["intervals"],
  }
  from mer_jax import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  workdir_lib.atomic_write_text(os.path.join(out_dir, "analysis.json"),
                                json.dumps(analysis, indent=2) + "\n")
  write_timeline(os.path.join(out_dir, "timeline.png"), result["probabilities"], source.fps,
                 result["intervals"], predictor.peak_params,
                 f"{os.path.basename(os.path.normpath(input_path))}: "
                 f"{len(result['intervals'])} interval(s)")
  if video:
    write_annotated_video(source, os.path.join(out_dir, "annotated.mp4"), source.fps,
                          result["intervals"], chunk_frames)
  log.info("%s: %d interval(s); wrote %s", input_path, len(result["intervals"]), out_dir)
  return analysis


def build_parser(prog: str = "python -m mer_jax.analyze") -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0].strip())
  parser.add_argument("input", help="a video file or a folder of frames")
  parser.add_argument("--out", required=True, help="output folder")
  parser.add_argument("--spotting_workdir", required=True,
                      help="workdir of python -m mer_jax.spotting.train (its fold 'all')")
  parser.add_argument("--recognition_workdir", default=None,
                      help="spotting workdir whose recogniser classifies the intervals "
                           "(default: --spotting_workdir's)")
  parser.add_argument("--crop", default="haar", choices=("haar", "none"),
                      help="haar: find and level the face; none: frames are already cropped")
  parser.add_argument("--cascade_dir", default=None,
                      help="folder with haarcascade_frontalface_default.xml and "
                           "haarcascade_eye.xml (default: cv2.data.haarcascades)")
  parser.add_argument("--fps", type=float, default=None,
                      help="frame rate (required for a folder; overrides the video's)")
  parser.add_argument("--chunk_frames", type=int, default=1000,
                      help="frames decoded at a time (memory bound for long videos)")
  parser.add_argument("--detect_frames", type=int, default=10,
                      help="frames of the first chunk searched for the face")
  parser.add_argument("--variable_fps", default="refuse", choices=("refuse", "warn"))
  parser.add_argument("--video", action="store_true", help="also write annotated.mp4")
  parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
  return parser


def main(argv: Optional[Sequence[str]] = None, prog: str = "python -m mer_jax.analyze") -> int:
  args = build_parser(prog).parse_args(argv)
  py_logging.basicConfig(level=py_logging.INFO, format="%(levelname)s %(message)s")
  try:
    analyze(args.input, args.out, spotting_workdir=args.spotting_workdir,
            recognition_workdir=args.recognition_workdir, crop=args.crop,
            cascade_dir=args.cascade_dir, fps=args.fps, chunk_frames=args.chunk_frames,
            detect_frames=args.detect_frames, variable_fps=args.variable_fps,
            video=args.video, overwrite=args.overwrite)
  except (AnalyzeError, paths.OutputPathError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


def console_main() -> int:
  """`mer-jax analyze ...` (the console script; the first argument names the command)."""
  argv = sys.argv[1:]
  if not argv or argv[0] != "analyze":
    print("usage: mer-jax analyze VIDEO_OR_FRAME_DIR --out DIR --spotting_workdir W [...]\n"
          "(training: mer-jax-train; spotting training: python -m mer_jax.spotting.train)",
          file=sys.stderr)
    return 2
  return main(argv[1:], prog="mer-jax analyze")


if __name__ == "__main__":
  sys.exit(main())
