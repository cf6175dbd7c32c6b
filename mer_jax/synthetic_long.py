"""Synthetic long videos for micro-expression spotting (`synthetic_me_long`).

Each video is one synthetic subject (`mer_jax.synthetic.make_subjects`) filmed
for tens of seconds, like a CAS(ME)^2 (30 fps) or SAMM long-video (200 fps)
recording. Its timeline holds, without overlap between expressions:

* micro-expressions: onset-to-offset at most 0.5 s, peak displacement
  `micro_amplitude_px` (sub-pixel to about a pixel), raised-cosine rise and fall;
* macro-expressions: longer (`macro_duration_s`) and larger
  (`macro_amplitude_px`), rising to a plateau held for part of the interval;

both made of the renderer's action-unit displacement fields
(`synthetic.action_unit_flow`, classes negative AU4+AU15, positive AU6+AU12,
surprise AU1+AU2+AU26); and, independent of them (they may overlap an
expression), label-free nuisances a spotter must ignore:

* blinks (eyes close and reopen, `synthetic.NeutralFace.face_closed`),
* mouth movements (AU17 chin raiser or AU24 lip pressor, expression-sized),
* head motion: a slow drift over the whole video plus a few quick shifts,
* sensor noise and illumination flicker.

Every frame is the subject's neutral face warped by the sum of the active
displacement fields (riding on the rigid head motion), so the true intervals
are exact: the expression's displacement is 0 up to its onset frame and from
its offset frame on, and peaks at its apex frame. Everything is a pure
function of the config (same config -> identical frames).

Conventions are those of `mer_jax.synthetic`; interval indices are inclusive
0-based frame indices (`mer_jax.spotting.schema`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterator, Mapping, Optional

import cv2
import numpy as np

from mer_jax import schema
from mer_jax import synthetic
from mer_jax.spotting import metrics

DATASET_NAME = "synthetic_me_long"
# Mouth movements that carry no label (talking, lip pressing, swallowing).
MOUTH_ACTION_UNITS: tuple[str, ...] = ("17", "24")
NUISANCE_KINDS: tuple[str, ...] = ("blink", "mouth", "head")


def _range(name: str, value, *, minimum: float = 0.0, integer: bool = False) -> None:
  if not (isinstance(value, tuple) and len(value) == 2):
    raise ValueError(f"LongVideoConfig.{name} must be a (low, high) tuple, got {value!r}")
  for v in value:
    bad_type = isinstance(v, bool) or not isinstance(v, (int, np.integer) if integer else (int, float))
    if bad_type or not math.isfinite(v) or v < minimum:
      kind = "integers" if integer else "finite numbers"
      raise ValueError(f"LongVideoConfig.{name} must hold {kind} >= {minimum}, got {value!r}")
  if value[0] > value[1]:
    raise ValueError(f"LongVideoConfig.{name} needs low <= high, got {value!r}")


@dataclasses.dataclass(frozen=True)
class LongVideoConfig:
  """Everything that defines a synthetic long-video dataset.

  Ranges are (low, high), drawn uniformly per video or per event (counts
  inclusive).

  Attributes:
    num_subjects: identities "s00", "s01", ...
    videos_per_subject: recordings per subject ("s00/v00", "s00/v01").
    duration_s: length of every video in seconds.
    fps: frames per second.
    size: frame height = width in pixels (>= 32).
    micros_per_video, macros_per_video: expression counts per video.
    micro_duration_s: onset-to-offset span of micro-expressions, at most
      `metrics.MICRO_MAX_SECONDS` (0.5 s).
    macro_duration_s: onset-to-offset span of macro-expressions, above 0.5 s.
    micro_amplitude_px, macro_amplitude_px: peak displacement, pixels.
    min_gap_s: least time between two expressions (offset to next onset).
    blinks_per_minute, mouth_per_minute, head_moves_per_minute: mean rates
      of the nuisance events (Poisson counts).
    mouth_amplitude_px: peak displacement of mouth movements, pixels.
    head_drift_px, head_rotation_deg: peak slow head drift over a video.
    head_move_px: size of the quick head shifts, pixels.
    noise_std: additive Gaussian sensor noise, grey levels.
    flicker: peak relative illumination change.
    seed: non-negative integer.
    supersample: drawing resolution factor of the neutral faces.
  """
  num_subjects: int = 8
  videos_per_subject: int = 2
  duration_s: float = 40.0
  fps: float = 30.0
  size: int = 64
  micros_per_video: tuple[int, int] = (3, 5)
  macros_per_video: tuple[int, int] = (2, 3)
  micro_duration_s: tuple[float, float] = (0.2, 0.5)
  macro_duration_s: tuple[float, float] = (1.0, 3.0)
  micro_amplitude_px: tuple[float, float] = (0.6, 1.0)
  macro_amplitude_px: tuple[float, float] = (2.0, 3.0)
  min_gap_s: float = 0.6
  blinks_per_minute: float = 12.0
  mouth_per_minute: float = 4.0
  mouth_amplitude_px: tuple[float, float] = (0.6, 1.5)
  head_moves_per_minute: float = 3.0
  head_drift_px: float = 1.0
  head_rotation_deg: float = 0.5
  head_move_px: tuple[float, float] = (0.5, 1.5)
  noise_std: float = 1.5
  flicker: float = 0.005
  seed: int = 0
  supersample: int = 4

  def __post_init__(self):
    for name, minimum in (("num_subjects", 1), ("videos_per_subject", 1), ("size", 32),
                          ("seed", 0), ("supersample", 1)):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"LongVideoConfig.{name} must be an integer >= {minimum}, got {value!r}")
    for name in ("duration_s", "fps", "min_gap_s", "blinks_per_minute", "mouth_per_minute",
                 "head_moves_per_minute", "head_drift_px", "head_rotation_deg", "noise_std",
                 "flicker"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
          math.isfinite(value) and value >= 0):
        raise ValueError(f"LongVideoConfig.{name} must be a finite number >= 0, got {value!r}")
    if not (self.fps > 0 and self.duration_s > 0):
      raise ValueError(f"LongVideoConfig needs fps > 0 and duration_s > 0, got fps={self.fps}, "
                       f"duration_s={self.duration_s}")
    if self.flicker >= 0.5:
      raise ValueError(f"LongVideoConfig.flicker must be < 0.5, got {self.flicker}")
    for name in ("micros_per_video", "macros_per_video"):
      _range(name, getattr(self, name), integer=True)
    for name in ("micro_duration_s", "macro_duration_s", "micro_amplitude_px",
                 "macro_amplitude_px", "mouth_amplitude_px", "head_move_px"):
      _range(name, getattr(self, name))
    if self.micro_duration_frames[0] < 2:
      raise ValueError(f"LongVideoConfig.micro_duration_s={self.micro_duration_s} at fps="
                       f"{self.fps} spans < 2 frames; onset < apex < offset needs >= 2")
    if self.micro_duration_frames[1] > round(metrics.MICRO_MAX_SECONDS * self.fps):
      raise ValueError(f"LongVideoConfig.micro_duration_s={self.micro_duration_s} exceeds the "
                       f"micro-expression limit of {metrics.MICRO_MAX_SECONDS} s")
    if self.macro_duration_frames[0] <= round(metrics.MICRO_MAX_SECONDS * self.fps):
      raise ValueError(f"LongVideoConfig.macro_duration_s={self.macro_duration_s} must last "
                       f"more than {metrics.MICRO_MAX_SECONDS} s at fps={self.fps}")
    if self.micro_amplitude_px[1] > 0.1 * self.size or self.macro_amplitude_px[1] > 0.15 * self.size:
      raise ValueError(f"LongVideoConfig amplitudes {self.micro_amplitude_px} / "
                       f"{self.macro_amplitude_px} px are too large for size={self.size}")
    longest = (self.micros_per_video[1] * self.micro_duration_frames[1]
               + self.macros_per_video[1] * self.macro_duration_frames[1]
               + (self.micros_per_video[1] + self.macros_per_video[1] + 1) * self.min_gap_frames)
    if longest > self.num_frames:
      raise ValueError(
          f"LongVideoConfig: up to {self.micros_per_video[1]} micro + {self.macros_per_video[1]} "
          f"macro-expressions with {self.min_gap_s} s gaps need {longest} frames; a video has "
          f"{self.num_frames} (duration_s={self.duration_s}, fps={self.fps})")

  @property
  def num_frames(self) -> int:
    return int(round(self.duration_s * self.fps))

  @property
  def num_videos(self) -> int:
    return self.num_subjects * self.videos_per_subject

  @property
  def min_gap_frames(self) -> int:
    return int(math.ceil(self.min_gap_s * self.fps))

  @property
  def micro_duration_frames(self) -> tuple[int, int]:
    return tuple(int(round(s * self.fps)) for s in self.micro_duration_s)

  @property
  def macro_duration_frames(self) -> tuple[int, int]:
    return tuple(int(round(s * self.fps)) for s in self.macro_duration_s)


# Unit tests: two short videos, built in seconds.
_TINY = LongVideoConfig(
    num_subjects=2, videos_per_subject=1, duration_s=8.0, fps=30.0, size=48,
    micros_per_video=(2, 2), macros_per_video=(1, 1), macro_duration_s=(0.8, 1.5),
    blinks_per_minute=20.0, mouth_per_minute=10.0, head_moves_per_minute=8.0)

PRESETS: Mapping[str, LongVideoConfig] = {
    "tiny": _TINY,
    # Extra training subjects for the tests' tiny runs (the tiny recipe, another seed).
    "tiny_extra": dataclasses.replace(_TINY, seed=1),
    # Like CAS(ME)^2: 30 fps, long recordings with macro- and micro-expressions.
    "cas_like": LongVideoConfig(),
    # The cas_like recipe with other subjects and videos (another seed): spotting
    # choices (peak parameters, schedules) are made here, then cas_like is scored
    # once, so no choice is made on the benchmark's own test folds.
    "cas_like_dev": LongVideoConfig(seed=1),
    # The recipe with a third seed: subjects for neither instance, added to the training
    # set of every fold of either (spotting `config.dataset.extra_train_presets`).
    "cas_like_extra": LongVideoConfig(seed=2),
    # Like SAMM long videos: 200 fps, shorter recordings (frames are 6.7x denser).
    "samm_like": LongVideoConfig(
        num_subjects=6, videos_per_subject=1, duration_s=20.0, fps=200.0,
        micros_per_video=(3, 4), macros_per_video=(1, 2), macro_duration_s=(0.8, 2.5)),
}


# ----------------------------------------------------------------------------
# Timeline.


@dataclasses.dataclass(frozen=True)
class Expression:
  """One true expression interval (inclusive frame indices)."""
  onset: int
  apex: int
  hold_end: int   # last frame of the apex plateau (== apex for micro-expressions)
  offset: int
  type: str
  class_name: str
  amplitude_px: float


def _poisson_times(rng: np.random.Generator, rate_per_minute: float, num_frames: int,
                   fps: float) -> np.ndarray:
  count = rng.poisson(rate_per_minute * num_frames / fps / 60.0)
  return np.sort(rng.integers(0, num_frames, count))


def draw_expressions(rng: np.random.Generator, config: LongVideoConfig) -> list[Expression]:
  """Places the video's micro- and macro-expressions on its timeline.

  Durations are drawn first, then the free frames (beyond durations and the
  minimum gaps) are split at random between the gaps, so expressions never
  overlap and the order of types and classes is random.
  """
  n_micro = int(rng.integers(config.micros_per_video[0], config.micros_per_video[1] + 1))
  n_macro = int(rng.integers(config.macros_per_video[0], config.macros_per_video[1] + 1))
  kinds = np.array(["micro"] * n_micro + ["macro"] * n_macro)
  kinds = kinds[rng.permutation(len(kinds))]
  specs = []
  for kind in kinds:
    low, high = config.micro_duration_s if kind == "micro" else config.macro_duration_s
    frames = config.micro_duration_frames if kind == "micro" else config.macro_duration_frames
    duration = int(np.clip(round(rng.uniform(low, high) * config.fps), *frames))
    amp_low, amp_high = (config.micro_amplitude_px if kind == "micro"
                         else config.macro_amplitude_px)
    specs.append((str(kind), duration, schema.CLASS_NAMES[int(rng.integers(schema.NUM_CLASSES))],
                  float(rng.uniform(amp_low, amp_high)), float(rng.uniform(0.3, 0.6)),
                  float(rng.uniform(0.3, 0.6))))
  free = config.num_frames - 1 - sum(s[1] for s in specs) - (len(specs) + 1) * config.min_gap_frames
  weights = rng.dirichlet(np.ones(len(specs) + 1))
  extra = np.floor(weights * max(free, 0)).astype(int)
  expressions, t = [], config.min_gap_frames + int(extra[0])
  for k, (kind, duration, class_name, amplitude, rise_fraction, hold_fraction) in enumerate(specs):
    onset, offset = t, t + duration
    if kind == "micro":
      apex = onset + int(np.clip(round(rise_fraction * duration), 1, duration - 1))
      hold_end = apex
    else:
      # Macro: rise over 15-30 % of the interval, hold a plateau for 30-60 % of
      # the rest, fall back by the offset.
      apex = onset + max(1, int(round(0.5 * rise_fraction * duration)))
      hold_end = min(apex + int(round(hold_fraction * (offset - apex))), offset - 1)
    expressions.append(Expression(onset, apex, hold_end, offset, kind, class_name, amplitude))
    t = offset + config.min_gap_frames + int(extra[k + 1])
  return expressions


def event_profile(num_frames: int, onset: int, apex: int, hold_end: int, offset: int) -> np.ndarray:
  """Raised-cosine rise onset->apex, plateau to hold_end, fall to offset.

  With hold_end == apex this is `synthetic.temporal_profile`. Returns
  (num_frames,) float64 in [0, 1]: 0 at and before onset and from offset on.
  """
  if not 0 <= onset < apex <= hold_end < offset <= num_frames - 1:
    raise ValueError(f"event_profile needs 0 <= onset < apex <= hold_end < offset < num_frames, "
                     f"got {onset}, {apex}, {hold_end}, {offset}, num_frames={num_frames}")
  if hold_end == apex:
    return synthetic.temporal_profile(num_frames, onset, apex, offset)
  t = np.arange(num_frames, dtype=np.float64)
  rise = 0.5 * (1 - np.cos(np.pi * np.clip((t - onset) / (apex - onset), 0, 1)))
  fall = 0.5 * (1 + np.cos(np.pi * np.clip((t - hold_end) / (offset - hold_end), 0, 1)))
  return np.where(t <= hold_end, rise, fall)


# ----------------------------------------------------------------------------
# Rendering.


def _head_track(rng: np.random.Generator, config: LongVideoConfig,
                nuisances: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Rigid head (tx, ty) in pixels and rotation in radians per frame."""
  n, fps = config.num_frames, config.fps
  times = np.arange(n) / fps

  def drift(peak):
    if peak == 0:
      return np.zeros(n)
    freqs, phases = rng.uniform(0.02, 0.3, 3), rng.uniform(0, 2 * np.pi, 3)
    curve = sum(np.sin(2 * np.pi * f * times + p) - np.sin(p) for f, p in zip(freqs, phases))
    return curve / max(np.abs(curve).max(), 1e-9) * peak * rng.uniform(0.5, 1.0)

  tx, ty = drift(config.head_drift_px), drift(config.head_drift_px)
  rot = np.deg2rad(drift(config.head_rotation_deg))
  for start in _poisson_times(rng, config.head_moves_per_minute, n, fps):
    length = max(2, int(round(rng.uniform(0.2, 0.8) * fps)))
    angle = rng.uniform(0, 2 * np.pi)
    shift = rng.uniform(*config.head_move_px)
    returns = bool(rng.uniform() < 0.5)  # half of the moves come back (a nod)
    step = 0.5 * (1 - np.cos(np.pi * np.clip((np.arange(n) - start) / length, 0, 1)))
    if returns:
      step = np.where(np.arange(n) <= start + length, step,
                      0.5 * (1 + np.cos(np.pi * np.clip((np.arange(n) - start - length) / length,
                                                         0, 1))))
    tx, ty = tx + shift * math.cos(angle) * step, ty + shift * math.sin(angle) * step
    nuisances.append({"kind": "head", "start": int(start),
                      "end": int(min(n - 1, start + (2 if returns else 1) * length))})
  return tx, ty, rot


def render_video(subject: synthetic.SubjectParams, rng: np.random.Generator,
                 config: LongVideoConfig) -> dict:
  """Renders one long video of `subject`.

  Args:
    subject: from `synthetic.make_subjects`.
    rng: source of all randomness (expressions, nuisances and noise use
      separate child streams).
    config: the dataset config (its dataset-size fields are ignored).

  Returns:
    A dict: "frames" uint8 (T, S, S, 3) RGB; "fps"; "expressions": list of
    `Expression`; "nuisances": list of {"kind", "start", "end"} (inclusive
    frame indices of blinks, mouth movements and quick head moves).
  """
  size, n = config.size, config.num_frames
  timeline_rng, shape_rng, nuisance_rng, noise_rng = rng.spawn(4)
  neutral = synthetic.render_neutral(subject, size, config.supersample)
  landmarks = synthetic.face_landmarks(subject, size)

  expressions = draw_expressions(timeline_rng, config)
  events = []  # (profile, field): displacement fields and their time courses
  for e in expressions:
    aus = synthetic.CLASS_ACTION_UNITS[e.class_name]
    weights = shape_rng.uniform(0.6, 1.0, len(aus))
    if "26" in aus:
      weights[aus.index("26")] *= 0.4  # a slight jaw drop beside the brow raise
    field = synthetic.action_unit_flow(aus, weights, landmarks, size, e.amplitude_px,
                                       shape_rng.uniform(0.75, 1.0, 2))
    events.append((event_profile(n, e.onset, e.apex, e.hold_end, e.offset), field))

  nuisances: list[dict] = []
  for start in _poisson_times(nuisance_rng, config.mouth_per_minute, n, config.fps):
    length = max(3, int(round(nuisance_rng.uniform(0.3, 1.5) * config.fps)))
    au = MOUTH_ACTION_UNITS[int(nuisance_rng.integers(len(MOUTH_ACTION_UNITS)))]
    amplitude = nuisance_rng.uniform(*config.mouth_amplitude_px)
    start, end = int(min(start, n - 4)), int(min(n - 1, start + length))
    apex = start + max(1, (end - start) // 3)
    events.append((event_profile(n, start, apex, max(apex, end - max(1, (end - start) // 3)), end),
                   synthetic.action_unit_flow((au,), (1.0,), landmarks, size, amplitude)))
    nuisances.append({"kind": "mouth", "start": start, "end": end})

  blink = np.zeros(n)
  for start in _poisson_times(nuisance_rng, config.blinks_per_minute, n, config.fps):
    length = max(2, int(round(nuisance_rng.uniform(0.1, 0.25) * config.fps)))
    depth = nuisance_rng.uniform(0.7, 1.0)
    phase = (np.arange(n) - start) / length
    shape = depth * 0.5 * (1 - np.cos(np.pi * np.minimum(np.clip(phase / 0.4, 0, 1),
                                                         np.clip((1 - phase) / 0.6, 0, 1))))
    shape[(phase < 0) | (phase > 1)] = 0.0
    blink = np.maximum(blink, shape)
    nuisances.append({"kind": "blink", "start": int(start), "end": int(min(n - 1, start + length))})
  tx, ty, rot = _head_track(nuisance_rng, config, nuisances)
  times = np.arange(n) / config.fps
  gain = 1.0 + config.flicker * np.sin(2 * np.pi * nuisance_rng.uniform(0.2, 2.0) * times
                                       + nuisance_rng.uniform(0, 2 * np.pi))
  nuisances.sort(key=lambda e: (e["start"], e["kind"]))

  profiles = np.stack([p for p, _ in events]) if events else np.zeros((0, n))
  grid_x, grid_y = np.meshgrid(np.arange(size, dtype=np.float32),
                               np.arange(size, dtype=np.float32))
  pivot = landmarks["face"]
  frames = np.empty((n, size, size, 3), np.uint8)
  for t in range(n):
    c, s = np.float32(math.cos(rot[t])), np.float32(math.sin(rot[t]))
    rel_x, rel_y = grid_x - np.float32(pivot[0] + tx[t]), grid_y - np.float32(pivot[1] + ty[t])
    head_x = c * rel_x + s * rel_y + np.float32(pivot[0])
    head_y = c * rel_y - s * rel_x + np.float32(pivot[1])
    map_x, map_y = head_x, head_y
    for k in np.flatnonzero(profiles[:, t] > 0):
      # The expression moves with the head: its field is sampled at the head position.
      field = cv2.remap(events[k][1], head_x, head_y, cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_CONSTANT)
      map_x = map_x + np.float32(profiles[k, t]) * field[..., 0]
      map_y = map_y + np.float32(profiles[k, t]) * field[..., 1]
    face = neutral.face_open if blink[t] == 0 else (
        neutral.face_open + np.float32(blink[t]) * (neutral.face_closed - neutral.face_open))
    face = cv2.remap(face, map_x, map_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT,
                     borderValue=0)
    np.clip(face, 0, None, out=face)
    np.clip(face[..., 3:], None, 1, out=face[..., 3:])
    image = neutral.composite(face) * np.float32(gain[t])
    if config.noise_std > 0:
      image += noise_rng.standard_normal(image.shape, dtype=np.float32) * np.float32(config.noise_std)
    frames[t] = np.clip(np.rint(image), 0, 255).astype(np.uint8)
  return {"frames": frames, "fps": float(config.fps), "expressions": expressions,
          "nuisances": nuisances}


def video_example(subject_id: str, video_id: str, rendered: dict) -> dict:
  """A rendered video as a long-video schema example (`mer_jax.spotting.schema`).

  Adds "nuisances" (the label-free events) beside the schema fields.
  """
  intervals = [{
      "onset": e.onset, "apex": e.apex, "offset": e.offset, "type": e.type,
      "label": schema.CLASS_NAMES.index(e.class_name),
      "emotion": synthetic.CLASS_EMOTIONS[e.class_name],
      "action_units": "+".join(synthetic.CLASS_ACTION_UNITS[e.class_name]),
      "apex_source": "ground_truth"} for e in rendered["expressions"]]
  return {"frames": rendered["frames"], "video_id": video_id, "subject": subject_id,
          "dataset": DATASET_NAME, "fps": rendered["fps"],
          "num_frames": len(rendered["frames"]), "first_frame_number": 0,
          "intervals": intervals, "nuisances": rendered["nuisances"]}


def generate_dataset(config: LongVideoConfig) -> Iterator[tuple[str, dict]]:
  """Yields (video_id, example) for every video of `config`, in a fixed order.

  Video `s03/v01` has its own random stream seeded by (seed, subject,
  video), so it does not change when subjects or videos are added.
  """
  for subject_index, subject in enumerate(synthetic.make_subjects(config.num_subjects,
                                                                  config.seed)):
    for video_index in range(config.videos_per_subject):
      rng = np.random.default_rng([config.seed, 4, subject_index, video_index])
      video_id = f"{subject.subject_id}/v{video_index:02d}"
      yield video_id, video_example(subject.subject_id, video_id,
                                    render_video(subject, rng, config))


def describe(config: LongVideoConfig) -> str:
  """One-line summary of a config (the TFDS config description)."""
  return (f"{config.num_subjects} subjects x {config.videos_per_subject} videos of "
          f"{config.duration_s:g} s at {config.fps:g} fps ({config.num_frames} frames), "
          f"{config.size}x{config.size} px; {config.micros_per_video[0]}-"
          f"{config.micros_per_video[1]} micro ({config.micro_duration_s[0]:g}-"
          f"{config.micro_duration_s[1]:g} s, {config.micro_amplitude_px[0]:g}-"
          f"{config.micro_amplitude_px[1]:g} px) and {config.macros_per_video[0]}-"
          f"{config.macros_per_video[1]} macro-expressions ({config.macro_duration_s[0]:g}-"
          f"{config.macro_duration_s[1]:g} s, {config.macro_amplitude_px[0]:g}-"
          f"{config.macro_amplitude_px[1]:g} px) per video; blinks {config.blinks_per_minute:g}"
          f"/min, mouth movements {config.mouth_per_minute:g}/min, head moves "
          f"{config.head_moves_per_minute:g}/min; seed {config.seed}.")
