"""Procedural synthetic micro-expression benchmark: renderer and CLI.

`synthetic_me` is the project's embedded dataset. It needs no licence and no
download, yet it exercises every part of a micro-expression recognition (MER)
pipeline with exact ground truth:

* Subjects (`make_subjects`) are procedural identities: face oval, skin tone
  and texture, eyes, brows, nose, mouth, hair, background texture, lighting.
  Faces are drawn anti-aliased at `supersample` times the output size and
  reduced with `cv2.INTER_AREA`, so they stay smooth at 64x64 and 112x112.
* A micro-expression is a smooth displacement field built from facial action
  units (AUs), one Gaussian "bump" of motion per facial region:
  negative = AU4 + AU15, positive = AU6 + AU12, surprise = AU1 + AU2 + AU26.
  Every frame is the subject's neutral face warped with `cv2.remap`, so the
  apex field (`apex_flow`) is the ground-truth optical flow of the clip.
* Timing follows onset -> apex -> offset with raised-cosine ramps; durations
  are drawn in [1/25, 1/5] s at the clip's fps (200 fps by default, as CASME II
  and SAMM). The peak displacement is `amplitude_px` pixels exactly.
* Nuisances carry no label information: rigid head motion, sensor noise,
  illumination flicker, blinks and distractor AUs (7, 9, 17, 24) are drawn from
  random streams that do not depend on the class.

The composite tier (`COMPOSITE_PRESETS`: `composite`, `composite_dev`) is
shaped like the MEGC2019 composite: three recording setups (SMIC-HS-,
CASME II- and SAMM-like: 100/200/200 fps, 64/80/96 px, their own light,
camera and noise), 68 subjects with the composite's uneven per-subject class
counts, per-subject AU variants and strengths, annotation error, and no apex
annotation in the SMIC-like part. `plan_composite` fixes every clip without
rendering; `render_planned_clip` renders one. See docs/synthetic_me.md.

Conventions: frames are RGB uint8 `(T, H, W, 3)`; pixel (row i, column j) has
its centre at image coordinates (x, y) = (j, i); `apex_flow[..., 0]` is dx and
`[..., 1]` is dy in pixels, a backward map: output pixel (x, y) samples the
neutral face at (x + dx, y + dy). cv2.remap quantises sample positions to
1/32 pixel (OpenCV's INTER_TAB_SIZE), which bounds the warp's precision.

Command line (writes the figure shown in docs/synthetic_me.md):

  python -m mer_jax.synthetic strip --config default \
      --out docs/images/synthetic_me_strip.png
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
from typing import Iterator, Mapping, Optional, Sequence

import cv2
import numpy as np

from mer_jax import schema

DATASET_NAME = "synthetic_me"

# FACS action units each class is made of (MEGC2019 three-class scheme).
CLASS_ACTION_UNITS: Mapping[str, tuple[str, ...]] = {
    "negative": ("4", "15"),       # brow lowerer + lip-corner depressor
    "positive": ("6", "12"),       # cheek raiser + lip-corner puller
    "surprise": ("1", "2", "26"),  # inner + outer brow raiser + jaw drop
}
# The `emotion` field: the prototypical emotion of each AU combination.
CLASS_EMOTIONS: Mapping[str, str] = {
    "negative": "sadness", "positive": "happiness", "surprise": "surprise"}
# Class-independent AUs added as nuisances: lid tightener, nose wrinkler, chin
# raiser, lip pressor. None of them is part of a class's combination.
DISTRACTOR_ACTION_UNITS: tuple[str, ...] = ("7", "9", "17", "24")
# Relative weight of the jaw drop inside surprise: the issue asks for a
# "slight" AU26 beside the brow raise.
_JAW_DROP_WEIGHT = 0.4
# Every AU `action_unit_flow` has a displacement model for.
_MODELLED_ACTION_UNITS = frozenset(("1", "2", "4", "6", "7", "9", "12", "15", "17", "24", "26"))
# ITU-R BT.601 luma: what a monochrome sensor behind no colour filter records,
# near enough, from an RGB scene. Shape (3, 1) so `video @ w` keeps a channel axis.
_LUMA_WEIGHTS = np.array([[0.299], [0.587], [0.114]], np.float32)


@dataclasses.dataclass(frozen=True)
class Nuisances:
  """Label-independent variation added to every clip.

  Attributes:
    head_translation_px: peak rigid head translation over a clip, in pixels.
    head_rotation_deg: peak in-plane head rotation over a clip, in degrees.
    noise_std: std of additive Gaussian sensor noise, in grey levels (0-255).
    flicker: peak relative change of global illumination (0.01 = 1 %).
    blink_prob: probability that a clip contains a (possibly partial) blink.
    distractor_prob: probability that a clip contains one distractor AU.
    distractor_amplitude_px: peak displacement of a distractor AU, in pixels.
  """
  head_translation_px: float = 0.4
  head_rotation_deg: float = 0.3
  noise_std: float = 1.5
  flicker: float = 0.01
  blink_prob: float = 0.3
  distractor_prob: float = 0.5
  distractor_amplitude_px: float = 0.5

  def __post_init__(self):
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"Nuisances.{field.name} must be a finite number >= 0, got {value!r}")
    for name in ("blink_prob", "distractor_prob"):
      if getattr(self, name) > 1:
        raise ValueError(f"Nuisances.{name} is a probability, got {getattr(self, name)}")
    if self.flicker >= 0.5:
      raise ValueError(f"Nuisances.flicker must be < 0.5 (relative gain), got {self.flicker}")

  @classmethod
  def off(cls) -> "Nuisances":
    """No nuisance at all: frames are exact warps of the neutral face."""
    return cls(**{f.name: 0.0 for f in dataclasses.fields(cls)})


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
  """Everything that defines a synthetic_me dataset (renderer + dataset size).

  Attributes:
    num_subjects: number of identities ("s00", "s01", ...).
    clips_per_class_per_subject: clips of each class per subject (balanced).
    num_frames: frames per clip T.
    size: frame height = width, in pixels.
    fps: frames per second; sets how many frames a duration spans.
    amplitude_px: peak micro-expression displacement at the apex, in pixels of
      a `size` x `size` frame (max over pixels of |apex_flow|). 0 = no motion.
    min_duration_s: shortest onset-to-offset duration, seconds.
    max_duration_s: longest onset-to-offset duration, seconds; must fit in
      the clip: round(max_duration_s * fps) <= num_frames - 1.
    seed: non-negative integer; same config -> byte-identical clips.
    nuisances: label-independent variation (`Nuisances.off()` for none).
    mask_threshold: `motion_mask` marks pixels where |apex_flow| >=
      mask_threshold * amplitude_px.
    supersample: drawing resolution factor before `INTER_AREA` reduction.
    brightness: global gain of the scene (exposure and lamp power; 1 = as
      drawn), applied before flicker and noise. The composite tier's
      SMIC-like part is darker.
    grayscale: record a monochrome camera (SAMM): each frame becomes its
      luma (ITU-R BT.601 weights) in all three channels, and the sensor noise
      is the same in the three channels.
  """
  num_subjects: int = 16
  clips_per_class_per_subject: int = 4
  num_frames: int = 48
  size: int = 112
  fps: float = 200.0
  amplitude_px: float = 0.8
  min_duration_s: float = 1 / 25
  max_duration_s: float = 1 / 5
  seed: int = 0
  nuisances: Nuisances = Nuisances()
  mask_threshold: float = 0.1
  supersample: int = 4
  # Knobs added for the composite tier. Their defaults leave the rendering of
  # the other presets bit-identical (tests/test_synthetic_composite.py).
  brightness: float = 1.0
  grayscale: bool = False

  def __post_init__(self):
    for name, minimum in (("num_subjects", 1), ("clips_per_class_per_subject", 1),
                          ("num_frames", 3), ("size", 32), ("supersample", 1),
                          ("seed", 0)):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"SyntheticConfig.{name} must be an integer >= {minimum}, got {value!r}")
    for name in ("fps", "amplitude_px", "min_duration_s", "max_duration_s", "mask_threshold",
                 "brightness"):
      value = getattr(self, name)
      if not (isinstance(value, (int, float)) and math.isfinite(value)):
        raise ValueError(f"SyntheticConfig.{name} must be a finite number, got {value!r}")
    if self.fps <= 0:
      raise ValueError(f"SyntheticConfig.fps must be > 0, got {self.fps}")
    if self.brightness <= 0:
      raise ValueError(f"SyntheticConfig.brightness must be > 0, got {self.brightness}")
    if not isinstance(self.grayscale, bool):
      raise ValueError(f"SyntheticConfig.grayscale must be a bool, got {self.grayscale!r}")
    if self.amplitude_px < 0:
      raise ValueError(f"SyntheticConfig.amplitude_px must be >= 0, got {self.amplitude_px}")
    if self.amplitude_px > 0.1 * self.size:
      raise ValueError(
          f"SyntheticConfig.amplitude_px={self.amplitude_px} exceeds 10% of size={self.size}:"
          " that is a macro-expression, not a micro-expression")
    if not 0 < self.mask_threshold < 1:
      raise ValueError(f"SyntheticConfig.mask_threshold must be in (0, 1), got {self.mask_threshold}")
    if not 0 < self.min_duration_s <= self.max_duration_s:
      raise ValueError(
          f"SyntheticConfig needs 0 < min_duration_s <= max_duration_s, got "
          f"min_duration_s={self.min_duration_s}, max_duration_s={self.max_duration_s}")
    if self.min_duration_frames < 2:
      raise ValueError(
          f"SyntheticConfig.min_duration_s={self.min_duration_s} at fps={self.fps} spans "
          f"{self.min_duration_frames} frame(s); onset < apex < offset needs >= 2")
    if self.max_duration_frames > self.num_frames - 1:
      raise ValueError(
          f"SyntheticConfig.max_duration_s={self.max_duration_s} at fps={self.fps} spans "
          f"{self.max_duration_frames} frames, longer than the clip "
          f"(num_frames={self.num_frames} allows at most {self.num_frames - 1})")
    if not isinstance(self.nuisances, Nuisances):
      raise ValueError(f"SyntheticConfig.nuisances must be a Nuisances, got {self.nuisances!r}")

  @property
  def min_duration_frames(self) -> int:
    return int(round(self.min_duration_s * self.fps))

  @property
  def max_duration_frames(self) -> int:
    return int(round(self.max_duration_s * self.fps))

  @property
  def num_clips(self) -> int:
    return self.num_subjects * schema.NUM_CLASSES * self.clips_per_class_per_subject


# The same clips' setting as `default`, about 3x fainter (nuisances scaled
# alike, except sensor noise, which does not depend on the motion).
_LOW_AMPLITUDE = SyntheticConfig(
    amplitude_px=0.25,
    nuisances=Nuisances(head_translation_px=0.15, head_rotation_deg=0.1,
                        distractor_amplitude_px=0.15))

# Named configurations; the TFDS builder exposes exactly these.
PRESETS: Mapping[str, SyntheticConfig] = {
    # Unit tests: builds in about a second.
    "tiny": SyntheticConfig(
        num_subjects=3, clips_per_class_per_subject=1, num_frames=24, size=64,
        fps=100.0, amplitude_px=0.6),
    # The demo: learnable by a small CNN in minutes, hard to see by eye.
    "default": SyntheticConfig(),
    # The default recipe with other subjects and clips (another seed): tune
    # models and schedules here, then report on `default` once, so no choice is
    # made on the benchmark's own test folds.
    "dev": SyntheticConfig(seed=1),
    "low_amplitude": _LOW_AMPLITUDE,
    # The low-amplitude recipe with other subjects and clips: choices for the
    # faint tier are made here, never on `low_amplitude`'s folds.
    "low_amplitude_dev": dataclasses.replace(_LOW_AMPLITUDE, seed=1),
}


# ----------------------------------------------------------------------------
# Subjects.


@dataclasses.dataclass(frozen=True)
class SubjectParams:
  """Geometry and appearance of one identity.

  Lengths are fractions of the image side (resolution independent); colours
  are RGB in [0, 255].
  """
  subject_id: str
  face_center: tuple[float, float]
  face_half_width: float
  face_aspect: float            # half-height / half-width of the face oval
  skin_rgb: tuple[float, float, float]
  skin_texture: float           # relative amplitude of skin mottling
  hair_rgb: tuple[float, float, float]
  hair_fringe: float            # fringe depth, fraction of face half-height
  hair_length: float            # how far down the sides the hair reaches
  iris_rgb: tuple[float, float, float]
  lip_rgb: tuple[float, float, float]
  shirt_rgb: tuple[float, float, float]
  eye_height: float             # eye line above the face centre, fraction of half-height
  eye_spacing: float            # eye centre to midline, fraction of half-width
  eye_size: float               # eye half-width, fraction of half-width
  eye_openness: float           # eye half-height / half-width
  brow_gap: float               # brow above eye centre, in eye half-heights
  brow_thickness: float         # fraction of face half-height
  brow_arch: float              # arch height, in eye half-heights
  brow_tilt: float              # outer end raised (+) or lowered (-), eye half-heights
  nose_length: float            # eye line to nose tip, fraction of half-height
  nose_width: float             # nostril spacing, fraction of half-width
  mouth_gap: float              # nose tip to mouth, fraction of half-height
  mouth_width: float            # mouth half-width, fraction of half-width
  lip_thickness: float          # fraction of face half-height
  background_rgb: tuple[tuple[float, float, float], tuple[float, float, float]]
  background_cells: int         # texture cells across the image
  light_angle: float            # direction of the lighting gradient, radians
  light_strength: float         # relative brightness change across the image
  texture_seed: int             # seeds the background and skin textures

  def vector(self) -> np.ndarray:
    """All numeric parameters as a flat float64 vector (for identity checks)."""
    values = []
    for field in dataclasses.fields(self):
      if field.name in ("subject_id", "texture_seed"):
        continue
      values.extend(np.ravel(np.asarray(getattr(self, field.name), dtype=np.float64)))
    return np.asarray(values)


def _mix(a, b, t):
  return tuple(float(x) for x in (1 - t) * np.asarray(a) + t * np.asarray(b))


def make_subjects(num: int, seed: int = 0) -> list[SubjectParams]:
  """Draws `num` distinct identities, ids "s00", "s01", ...

  Subject i depends only on (seed, i): the first k subjects of a larger set
  are the same people.

  Raises:
    ValueError: `num` < 1 or `seed` < 0.
  """
  if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 1:
    raise ValueError(f"make_subjects: num must be an integer >= 1, got {num!r}")
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f"make_subjects: seed must be an integer >= 0, got {seed!r}")
  subjects = []
  for index in range(num):
    rng = np.random.default_rng([int(seed), 1, index])
    u = rng.uniform
    tone = u(0, 1)
    skin = np.asarray(_mix((238, 200, 172), (110, 72, 50), tone)) + rng.normal(0, 6, 3)
    hair_palette = np.array([(25, 20, 18), (70, 45, 30), (120, 80, 45), (200, 165, 110),
                             (150, 60, 30), (110, 105, 100)], dtype=np.float64)
    hair = hair_palette[rng.integers(len(hair_palette))] * u(0.85, 1.15)
    iris_palette = np.array([(70, 45, 25), (40, 30, 20), (70, 110, 150), (80, 110, 70)],
                            dtype=np.float64)
    iris = iris_palette[rng.integers(len(iris_palette))] * u(0.8, 1.2)
    lip = skin * np.array([0.82, 0.55, 0.55]) + np.array([25, 0, 5])
    background = tuple(tuple(float(c) for c in rng.uniform(60, 220, 3)) for _ in range(2))
    subjects.append(SubjectParams(
        subject_id=f"s{index:02d}",
        face_center=(u(0.47, 0.53), u(0.50, 0.54)),
        face_half_width=u(0.24, 0.285),
        face_aspect=u(1.22, 1.42),
        skin_rgb=tuple(float(c) for c in np.clip(skin, 0, 255)),
        skin_texture=u(0.02, 0.05),
        hair_rgb=tuple(float(c) for c in np.clip(hair, 0, 255)),
        hair_fringe=u(0.18, 0.38),
        hair_length=u(0.0, 0.6),
        iris_rgb=tuple(float(c) for c in np.clip(iris, 0, 255)),
        lip_rgb=tuple(float(c) for c in np.clip(lip, 0, 255)),
        shirt_rgb=tuple(float(c) for c in rng.uniform(20, 230, 3)),
        eye_height=u(0.05, 0.17),
        eye_spacing=u(0.36, 0.45),
        eye_size=u(0.2, 0.25),
        eye_openness=u(0.45, 0.6),
        brow_gap=u(1.6, 2.4),
        brow_thickness=u(0.035, 0.065),
        brow_arch=u(0.1, 0.6),
        brow_tilt=u(-0.4, 0.3),
        nose_length=u(0.40, 0.52),
        nose_width=u(0.17, 0.25),
        mouth_gap=u(0.22, 0.30),
        mouth_width=u(0.32, 0.44),
        lip_thickness=u(0.045, 0.075),
        background_rgb=background,
        background_cells=int(rng.integers(3, 9)),
        light_angle=u(0, 2 * math.pi),
        light_strength=u(0.08, 0.3),
        texture_seed=int(rng.integers(2**31 - 1)),
    ))
  return subjects


def face_landmarks(subject: SubjectParams, size: int) -> dict[str, np.ndarray]:
  """Landmark positions of the neutral face in pixel coordinates.

  Returns:
    name -> float64 array (x, y) in pixels of a `size` x `size` frame (pixel
    centres at integers), or (2, 2) arrays (image-left, image-right) for
    paired landmarks. Also the scalars "rx", "ry" (face half-axes, pixels).
  """
  s = subject
  cx, cy = s.face_center
  rx = s.face_half_width
  ry = rx * s.face_aspect
  eye_y = cy - s.eye_height * ry
  eye_dx = s.eye_spacing * rx
  eye_rx = s.eye_size * rx
  eye_ry = eye_rx * s.eye_openness
  brow_y = eye_y - s.brow_gap * eye_ry
  nose_y = eye_y + s.nose_length * ry
  mouth_y = nose_y + s.mouth_gap * ry
  mouth_hw = s.mouth_width * rx
  chin_y = cy + ry
  sides = np.array([-1.0, 1.0])
  norm = {
      "eye": np.stack([cx + sides * eye_dx, np.full(2, eye_y)], -1),
      "brow_inner": np.stack([cx + sides * (eye_dx - 1.1 * eye_rx), np.full(2, brow_y)], -1),
      "brow_outer": np.stack([cx + sides * (eye_dx + 1.3 * eye_rx),
                              np.full(2, brow_y - s.brow_tilt * eye_ry)], -1),
      "lower_lid": np.stack([cx + sides * eye_dx, np.full(2, eye_y + eye_ry)], -1),
      "cheek": np.stack([cx + sides * (eye_dx + 0.15 * eye_rx),
                         np.full(2, eye_y + 0.5 * (nose_y - eye_y) + eye_ry)], -1),
      "nostril": np.stack([cx + sides * 0.5 * s.nose_width * rx, np.full(2, nose_y)], -1),
      "mouth_corner": np.stack([cx + sides * mouth_hw, np.full(2, mouth_y)], -1),
      "nose_tip": np.array([cx, nose_y]),
      "mouth": np.array([cx, mouth_y]),
      "upper_lip": np.array([cx, mouth_y - 0.7 * s.lip_thickness * ry]),
      "lower_lip": np.array([cx, mouth_y + 0.9 * s.lip_thickness * ry]),
      "chin": np.array([cx, chin_y - 0.35 * (chin_y - mouth_y)]),
      "face": np.array([cx, cy]),
  }
  out = {k: v * size - 0.5 for k, v in norm.items()}
  out.update(rx=np.float64(rx * size), ry=np.float64(ry * size),
             eye_rx=np.float64(eye_rx * size), eye_ry=np.float64(eye_ry * size),
             mouth_hw=np.float64(mouth_hw * size), nose_hw=np.float64(0.5 * s.nose_width * rx * size))
  return out


# ----------------------------------------------------------------------------
# Neutral face rendering.

_SHIFT = 4  # Fixed-point fractional bits for cv2 drawing: sub-pixel outlines.


@dataclasses.dataclass(frozen=True)
class NeutralFace:
  """A subject's neutral appearance at one size, float32 in [0, 255].

  Attributes:
    background: (S, S, 3) static scene behind the head (incl. neck, shoulders).
    face_open: (S, S, 4) premultiplied RGBA head layer, eyes open.
    face_closed: (S, S, 4) the same with the eyes closed (blinks blend to it).
  """
  background: np.ndarray
  face_open: np.ndarray
  face_closed: np.ndarray

  def composite(self, face: Optional[np.ndarray] = None) -> np.ndarray:
    """Head layer over the background -> (S, S, 3) float32."""
    face = self.face_open if face is None else face
    return face[..., :3] + (1.0 - face[..., 3:]) * self.background


class _Canvas:
  """Premultiplied RGBA float canvas drawn with anti-aliased cv2 masks."""

  def __init__(self, size: int, supersample: int):
    self.scale = size * supersample  # normalised units -> canvas pixels
    self.rgb = np.zeros((self.scale, self.scale, 3), np.float32)
    self.alpha = np.zeros((self.scale, self.scale, 1), np.float32)

  def xy(self, points) -> np.ndarray:
    """Normalised (x, y) -> fixed-point int32 canvas coordinates."""
    pts = np.asarray(points, np.float64) * self.scale - 0.5
    return np.round(pts * (1 << _SHIFT)).astype(np.int32)

  def length(self, value: float) -> int:
    return max(1, int(round(value * self.scale * (1 << _SHIFT))))

  def new_mask(self) -> np.ndarray:
    return np.zeros((self.scale, self.scale), np.uint8)

  def ellipse_mask(self, center, axes, angle=0.0, start=0.0, end=360.0, thickness=-1):
    mask = self.new_mask()
    thick = thickness if thickness == -1 else max(1, int(round(thickness * self.scale)))
    cv2.ellipse(mask, tuple(int(v) for v in self.xy(center)),
                (self.length(axes[0]), self.length(axes[1])), angle, start, end, 255,
                thick, cv2.LINE_AA, _SHIFT)
    return mask

  def poly_mask(self, points):
    mask = self.new_mask()
    cv2.fillPoly(mask, [self.xy(points)], 255, cv2.LINE_AA, _SHIFT)
    return mask

  def polyline_mask(self, points, thickness):
    mask = self.new_mask()
    cv2.polylines(mask, [self.xy(points)], False, 255,
                  max(1, int(round(thickness * self.scale))), cv2.LINE_AA, _SHIFT)
    return mask

  def paint(self, mask: np.ndarray, color, opacity: float = 1.0) -> None:
    """Porter-Duff "over" of a uniform colour through an 8-bit coverage mask."""
    x, y, w, h = cv2.boundingRect(mask)  # Only touch the covered box: 10x faster.
    if w == 0 or h == 0:
      return
    box = np.s_[y:y + h, x:x + w]
    a = (mask[box].astype(np.float32) * (opacity / 255.0))[..., None]
    self.rgb[box] *= 1.0 - a
    self.rgb[box] += a * np.asarray(color, np.float32)
    self.alpha[box] *= 1.0 - a
    self.alpha[box] += a

  def grid(self) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(self.scale, dtype=np.float32) + 0.5) / self.scale
    return c[None, :], c[:, None]


def _smooth_noise(rng: np.random.Generator, cells: int, out_size: int) -> np.ndarray:
  """Band-limited noise in about [-1, 1], (out_size, out_size) float32."""
  coarse = rng.standard_normal((cells + 3, cells + 3)).astype(np.float32)
  big = cv2.resize(coarse, (out_size + 2 * out_size // cells,) * 2, interpolation=cv2.INTER_CUBIC)
  margin = out_size // cells
  return np.clip(big[margin:margin + out_size, margin:margin + out_size] / 2.0, -1.5, 1.5)


def _gaussian(x, y, center, sigma) -> np.ndarray:
  return np.exp(-((x - center[0]) ** 2 + (y - center[1]) ** 2) / (2.0 * sigma**2))


def _draw_eye(canvas: _Canvas, s: SubjectParams, center, eye_rx, eye_ry, side, closed):
  skin = np.asarray(s.skin_rgb)
  lash = np.minimum(np.asarray(s.hair_rgb), 60) * 0.5
  if closed:
    canvas.paint(canvas.ellipse_mask(center, (eye_rx * 1.05, eye_ry * 1.1)), skin * 0.93)
    canvas.paint(canvas.ellipse_mask((center[0], center[1] - 0.1 * eye_ry),
                                     (eye_rx, eye_ry * 0.45), 0, 10, 170, 0.010), lash)
    return
  sclera = canvas.ellipse_mask(center, (eye_rx, eye_ry))
  canvas.paint(sclera, (236, 232, 226))
  gaze = side * 0.08 * eye_rx
  iris_center = (center[0] - gaze, center[1])
  iris_r = eye_ry * 0.95
  inside = sclera.astype(np.float32) / 255.0
  iris = (canvas.ellipse_mask(iris_center, (iris_r, iris_r)) * inside).astype(np.uint8)
  canvas.paint(iris, s.iris_rgb)
  pupil = (canvas.ellipse_mask(iris_center, (iris_r * 0.45, iris_r * 0.45)) * inside).astype(np.uint8)
  canvas.paint(pupil, (15, 12, 12))
  canvas.paint(canvas.ellipse_mask((iris_center[0] + 0.3 * iris_r, iris_center[1] - 0.35 * iris_r),
                                   (iris_r * 0.18, iris_r * 0.18)), (250, 250, 250), 0.8)
  # Upper lid with lashes: a thick dark arc along the top of the eye.
  canvas.paint(canvas.ellipse_mask(center, (eye_rx * 1.04, eye_ry * 1.04), 0, 185, 355, 0.011), lash)
  canvas.paint(canvas.ellipse_mask(center, (eye_rx, eye_ry), 0, 20, 160, 0.004), skin * 0.7, 0.8)
  # Lid crease above the eye.
  canvas.paint(canvas.ellipse_mask((center[0], center[1] - 0.25 * eye_ry), (eye_rx * 1.0, eye_ry * 1.3),
                                   0, 200, 340, 0.005), skin * 0.75, 0.7)


@functools.lru_cache(maxsize=128)
def render_neutral(subject: SubjectParams, size: int, supersample: int = 4) -> NeutralFace:
  """Renders a subject's neutral face at `size` x `size` pixels.

  Drawn anti-aliased at `supersample` x `size`, then reduced with
  `cv2.INTER_AREA`. Cached: the returned arrays are read-only.
  """
  if size < 32:
    raise ValueError(f"render_neutral: size must be >= 32 pixels, got {size}")
  s = subject
  cx, cy = s.face_center
  rx = s.face_half_width
  ry = rx * s.face_aspect
  skin = np.asarray(s.skin_rgb)
  hair = np.asarray(s.hair_rgb)
  lm = {k: (v + 0.5) / size if isinstance(v, np.ndarray) and v.ndim else v / size
        for k, v in face_landmarks(s, size).items()}
  eye_rx, eye_ry = float(lm["eye_rx"]), float(lm["eye_ry"])
  texture_rng = np.random.default_rng(s.texture_seed)

  # Background layer: textured wall, shoulders, neck. It never moves.
  back = _Canvas(size, supersample)
  wall = _smooth_noise(texture_rng, s.background_cells, back.scale)[..., None] * 0.5 + 0.5
  c0, c1 = (np.asarray(c, np.float32) for c in s.background_rgb)
  back.rgb[:] = (1 - wall) * c0 + wall * c1
  back.alpha[:] = 1.0
  back.paint(back.ellipse_mask((cx, 1.12), (rx * 2.1, 0.22)), s.shirt_rgb)
  neck = [(cx - 0.5 * rx, cy + 0.5 * ry), (cx + 0.5 * rx, cy + 0.5 * ry),
          (cx + 0.6 * rx, 1.0), (cx - 0.6 * rx, 1.0)]
  back.paint(back.poly_mask(neck), skin * 0.8)

  # Head layer (premultiplied RGBA): everything that moves with the head.
  head = _Canvas(size, supersample)
  if s.hair_length > 0.05:  # hair falling behind the face at the sides
    head.paint(head.ellipse_mask((cx, cy - 0.2 * ry), (rx * 1.14, ry * (0.85 + 0.5 * s.hair_length))),
               hair * 0.85)
  head.paint(head.ellipse_mask((cx, cy - 0.12 * ry), (rx * 1.1, ry * 0.95)), hair * 0.9)
  for side in (-1, 1):
    head.paint(head.ellipse_mask((cx + side * rx * 0.97, float(lm["eye"][0][1]) + 0.12 * ry),
                                 (rx * 0.12, ry * 0.2)), skin * 0.88)
  head.paint(head.ellipse_mask((cx, cy), (rx, ry)), skin)
  x, y = head.grid()
  # Skin mottling, blush and round shading give the cheeks, forehead and chin
  # the texture that makes their motion visible.
  er = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
  shade = 1.0 - 0.28 * np.clip(er, 0, 1) ** 3
  mottling = 1.0 + s.skin_texture * _smooth_noise(texture_rng, 14, head.scale)
  face_mask = head.alpha[..., 0] > 0
  factor = np.where(face_mask, shade * mottling, 1.0)[..., None].astype(np.float32)
  head.rgb *= factor
  for side in (0, 1):
    blush = _gaussian(x, y, lm["cheek"][side], 0.9 * eye_rx)[..., None]
    head.rgb += (head.alpha * blush * np.array([14, -6, -6], np.float32)).astype(np.float32)
  # Eye sockets: soft shadow above and around the eyes.
  for side in (0, 1):
    socket = _gaussian(x, y, (lm["eye"][side][0], lm["eye"][side][1] - 0.4 * eye_ry), 1.3 * eye_rx)
    head.rgb *= (1.0 - 0.12 * socket)[..., None]
  # Hair over the top of the head: the cap ellipse minus a forehead ellipse
  # whose top is the hairline.
  cap = head.ellipse_mask((cx, cy - 0.1 * ry), (rx * 1.08, ry * 1.0)).astype(np.float32)
  forehead = head.ellipse_mask((cx, cy + 0.2 * ry), (rx * 0.93, ry * (1.2 - s.hair_fringe)))
  head.paint((cap * (1.0 - forehead / 255.0)).astype(np.uint8), hair)
  # Brows: tapered polygons along an arch.
  brow_rgb = np.minimum(hair, skin) * 0.55
  for side in (0, 1):
    inner, outer = lm["brow_inner"][side], lm["brow_outer"][side]
    t = np.linspace(0.0, 1.0, 16)
    px = inner[0] + t * (outer[0] - inner[0])
    py = inner[1] + t * (outer[1] - inner[1]) - s.brow_arch * eye_ry * np.sin(np.pi * t**0.8)
    half = 0.5 * s.brow_thickness * ry * (1.1 - 0.6 * t)
    outline = np.concatenate([np.stack([px, py - half], -1), np.stack([px, py + half], -1)[::-1]])
    head.paint(head.poly_mask(outline), brow_rgb, 0.92)
  # Nose: bridge shading, tip shadow, nostrils, alar creases.
  tip = lm["nose_tip"]
  nose_hw = float(lm["nose_hw"])
  head.rgb *= (1.0 - 0.16 * _gaussian(x, y, (tip[0], tip[1] + 0.4 * nose_hw), 0.9 * nose_hw))[..., None]
  head.rgb *= (1.0 + 0.06 * _gaussian(x, y, (tip[0], tip[1] - 1.2 * nose_hw), 0.7 * nose_hw))[..., None]
  for side in (0, 1):
    sign = -1 if side == 0 else 1
    nostril = lm["nostril"][side]
    head.paint(head.ellipse_mask((nostril[0], nostril[1] + 0.15 * nose_hw),
                                 (0.35 * nose_hw, 0.2 * nose_hw), sign * 20), skin * 0.42)
    # Alar crease: an arc around the outer side of the nostril (cv2 angles
    # run clockwise from +x; 0 deg points right, 180 left).
    outward = 0.0 if sign > 0 else 180.0
    head.paint(head.ellipse_mask((nostril[0] + sign * 0.25 * nose_hw, nostril[1] - 0.1 * nose_hw),
                                 (0.55 * nose_hw, 0.55 * nose_hw), 0, outward - 70, outward + 70,
                                 0.006), skin * 0.7, 0.8)
    bridge = [(lm["eye"][side][0] - sign * 1.0 * eye_rx, lm["eye"][side][1] + 1.5 * eye_ry),
              (nostril[0] + sign * 0.05 * nose_hw, nostril[1] - 1.3 * nose_hw)]
    head.paint(head.polyline_mask(bridge, 0.006), skin * 0.85, 0.35)
  # Mouth: upper lip with a cupid's bow, lower lip, dark mouth line.
  left, right = lm["mouth_corner"]
  mouth_y = float(lm["mouth"][1])
  mouth_hw = float(lm["mouth_hw"])
  lip_h = s.lip_thickness * ry
  t = np.linspace(-1.0, 1.0, 31)
  mx = cx + t * mouth_hw
  line_y = mouth_y + 0.08 * lip_h * (1 - t**2)
  upper = mouth_y - lip_h * (0.9 * np.sqrt(np.clip(1 - t**2, 0, 1)) ** 0.7 - 0.35 * np.exp(-(t / 0.12) ** 2))
  lower = mouth_y + 1.25 * lip_h * np.sqrt(np.clip(1 - t**2, 0, 1)) ** 0.8
  lip = np.asarray(s.lip_rgb)
  head.paint(head.poly_mask(np.concatenate([np.stack([mx, upper], -1), np.stack([mx, line_y], -1)[::-1]])),
             lip * 0.88)
  head.paint(head.poly_mask(np.concatenate([np.stack([mx, line_y], -1), np.stack([mx, lower], -1)[::-1]])),
             lip)
  head.rgb *= (1.0 - 0.12 * _gaussian(x, y, (cx, mouth_y + 2.0 * lip_h), 1.1 * lip_h))[..., None]
  head.paint(head.polyline_mask(np.stack([mx, line_y], -1), 0.007), lip * 0.4)
  for corner, sign in ((left, -1), (right, 1)):
    dimple = [(corner[0] - sign * 0.02 * rx, corner[1] - 0.3 * lip_h),
              (corner[0] + sign * 0.04 * rx, corner[1] + 0.15 * lip_h)]
    head.paint(head.polyline_mask(dimple, 0.006), skin * 0.7, 0.7)
  # Eyes last: open and closed variants share everything else.
  head_closed = _Canvas(size, supersample)
  head_closed.rgb, head_closed.alpha = head.rgb.copy(), head.alpha.copy()
  for side, sign in ((0, -1), (1, 1)):
    _draw_eye(head, s, lm["eye"][side], eye_rx, eye_ry, sign, closed=False)
    _draw_eye(head_closed, s, lm["eye"][side], eye_rx, eye_ry, sign, closed=True)

  # Lighting is a property of the scene: a linear gradient over the image,
  # baked into both layers before the warp.
  g = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
  light = (1.0 + s.light_strength * (math.cos(s.light_angle) * g[None, :]
                                     + math.sin(s.light_angle) * g[:, None]))[..., None]

  def reduce(canvas: _Canvas, with_alpha: bool) -> np.ndarray:
    rgba = np.concatenate([canvas.rgb, canvas.alpha], -1)
    small = cv2.resize(rgba, (size, size), interpolation=cv2.INTER_AREA)
    small[..., :3] = np.clip(small[..., :3], 0, 255) * light
    small = small if with_alpha else small[..., :3]
    small = np.ascontiguousarray(small, dtype=np.float32)
    small.setflags(write=False)
    return small

  return NeutralFace(background=reduce(back, False), face_open=reduce(head, True),
                     face_closed=reduce(head_closed, True))


# ----------------------------------------------------------------------------
# Action-unit displacement fields.


def _au_bumps(au: str, lm: Mapping[str, np.ndarray]) -> list[tuple[np.ndarray, float, np.ndarray]]:
  """Gaussian motion bumps of one AU: (centre px, sigma px, forward motion dir)."""
  eye_rx, eye_ry = float(lm["eye_rx"]), float(lm["eye_ry"])
  mouth_hw = float(lm["mouth_hw"])
  nose_hw = float(lm["nose_hw"])
  bumps = []
  for side, sign in ((0, -1.0), (1, 1.0)):
    inner, outer = lm["brow_inner"][side], lm["brow_outer"][side]
    if au == "1":    # inner brow raiser
      bumps.append((inner + (0.2 * sign * eye_rx, -0.3 * eye_ry), 0.75 * eye_rx, (0.0, -1.0)))
    elif au == "2":  # outer brow raiser
      bumps.append((outer + (-0.2 * sign * eye_rx, -0.3 * eye_ry), 0.75 * eye_rx, (0.0, -1.0)))
    elif au == "4":  # brow lowerer: inner brows down and together
      bumps.append((0.65 * inner + 0.35 * outer, 0.85 * eye_rx, (-0.5 * sign, 1.0)))
    elif au == "6":  # cheek raiser (and the lower lid it pushes up)
      bumps.append((lm["cheek"][side], 0.9 * eye_rx, (0.0, -1.0)))
      bumps.append((lm["lower_lid"][side], 0.45 * eye_rx, (0.0, -0.6)))
    elif au == "7":  # lid tightener
      bumps.append((lm["lower_lid"][side], 0.4 * eye_rx, (0.0, -1.0)))
    elif au == "9":  # nose wrinkler
      nostril = lm["nostril"][side]
      bumps.append((nostril + (0.0, -1.6 * nose_hw), 0.8 * nose_hw, (0.0, -1.0)))
    elif au == "12":  # lip-corner puller: up and out
      bumps.append((lm["mouth_corner"][side], 0.4 * mouth_hw, (0.6 * sign, -0.8)))
    elif au == "15":  # lip-corner depressor: down
      bumps.append((lm["mouth_corner"][side], 0.4 * mouth_hw, (0.15 * sign, 1.0)))
  if au == "26":      # jaw drop: lower lip and chin down
    bumps.append(((lm["lower_lip"] + lm["chin"]) / 2, 0.55 * mouth_hw, (0.0, 1.0)))
  elif au == "17":    # chin raiser
    bumps.append((lm["chin"], 0.45 * mouth_hw, (0.0, -1.0)))
  elif au == "24":    # lip pressor: lips squeezed together
    bumps.append((lm["upper_lip"], 0.3 * mouth_hw, (0.0, 1.0)))
    bumps.append((lm["lower_lip"], 0.3 * mouth_hw, (0.0, -1.0)))
  if not bumps:
    raise ValueError(f"action unit {au!r} has no displacement model")
  return [(np.asarray(c, np.float64), float(sig), np.asarray(d, np.float64)) for c, sig, d in bumps]


def action_unit_flow(aus: Sequence[str], weights: Sequence[float], landmarks: Mapping[str, np.ndarray],
                     size: int, amplitude_px: float,
                     side_weights: Optional[Sequence[float]] = None) -> np.ndarray:
  """Backward displacement field of a weighted AU combination.

  Args:
    aus: FACS codes, e.g. ("4", "15").
    weights: relative strength of each AU (> 0).
    landmarks: `face_landmarks(subject, size)`.
    size: frame side S in pixels.
    amplitude_px: the field's peak magnitude max |flow|, pixels.
    side_weights: (image-left, image-right) strength, for asymmetric expressions.

  Returns:
    (S, S, 2) float32 (dx, dy): output pixel (x, y) samples the neutral face at
    (x + dx, y + dy), i.e. minus the forward motion of the face.
  """
  coords = np.arange(size, dtype=np.float64)
  motion = np.zeros((size, size, 2), np.float64)
  side_weights = (1.0, 1.0) if side_weights is None else side_weights
  for au, weight in zip(aus, weights, strict=True):
    for center, sigma, direction in _au_bumps(au, landmarks):
      side = side_weights[0] if center[0] < landmarks["face"][0] else side_weights[1]
      gx = np.exp(-((coords - center[0]) ** 2) / (2 * sigma**2))
      gy = np.exp(-((coords - center[1]) ** 2) / (2 * sigma**2))
      bump = weight * side * np.outer(gy, gx)
      motion += bump[..., None] * (direction / np.linalg.norm(direction))
  peak = np.sqrt((motion**2).sum(-1)).max()
  scale = 0.0 if peak == 0 else amplitude_px / peak
  return (-scale * motion).astype(np.float32)


def temporal_profile(num_frames: int, onset: int, apex: int, offset: int) -> np.ndarray:
  """Raised-cosine intensity: 0 at and before onset, 1 at apex, 0 from offset.

  Returns:
    (num_frames,) float64 in [0, 1].
  """
  if not 0 <= onset < apex < offset <= num_frames - 1:
    raise ValueError(f"temporal_profile needs 0 <= onset < apex < offset < num_frames, got "
                     f"onset={onset}, apex={apex}, offset={offset}, num_frames={num_frames}")
  t = np.arange(num_frames, dtype=np.float64)
  rise = 0.5 * (1 - np.cos(np.pi * np.clip((t - onset) / (apex - onset), 0, 1)))
  fall = 0.5 * (1 + np.cos(np.pi * np.clip((t - apex) / (offset - apex), 0, 1)))
  return np.where(t <= apex, rise, fall)


def _draw_timing(rng: np.random.Generator, config: SyntheticConfig) -> tuple[int, int, int]:
  duration = int(round(rng.uniform(config.min_duration_s, config.max_duration_s) * config.fps))
  duration = min(max(duration, config.min_duration_frames, 2), config.max_duration_frames)
  onset = int(rng.integers(0, config.num_frames - duration))
  # Micro-expressions reach their apex before the middle more often than not.
  apex = onset + int(np.clip(round(rng.uniform(0.3, 0.6) * duration), 1, duration - 1))
  return onset, apex, onset + duration


def _smooth_trajectory(rng: np.random.Generator, times_s: np.ndarray, peak: float) -> np.ndarray:
  """A slow random curve through 0 at t=0 with max |value| in [0.4, 1] * peak."""
  if peak == 0:
    return np.zeros_like(times_s)
  freq = rng.uniform(0.5, 4.0, 2)
  phase = rng.uniform(0, 2 * np.pi, 2)
  curve = rng.normal() * times_s + sum(
      np.sin(2 * np.pi * f * times_s + p) - np.sin(p) for f, p in zip(freq, phase))
  top = np.abs(curve).max()
  return np.zeros_like(times_s) if top == 0 else curve / top * peak * rng.uniform(0.4, 1.0)


def render_clip(subject: SubjectParams, class_name: str, rng: np.random.Generator, *,
                config: Optional[SyntheticConfig] = None,
                action_units: Optional[Sequence[str]] = None,
                timing: Optional[tuple[int, int, int]] = None, **params) -> dict:
  """Renders one micro-expression clip of `subject`.

  Args:
    subject: from `make_subjects`.
    class_name: one of `schema.CLASS_NAMES`.
    rng: source of all randomness; equal generator states give equal clips.
      Timing, expression shape and nuisances use separate child streams, so
      the nuisances' distribution does not depend on the class.
    config: renderer settings (default `SyntheticConfig()`); dataset-size
      fields are ignored.
    action_units: the AUs that express the class in this clip, e.g. ("4",)
      (default `CLASS_ACTION_UNITS[class_name]`); the composite tier's
      per-subject variants.
    timing: (onset, apex, offset) frame indices of the expression, with
      0 <= onset < apex < offset < num_frames (default: drawn from the
      config's durations, onset uniform in the clip).
    **params: overrides of `config` fields, e.g. amplitude_px=0.5,
      nuisances=Nuisances.off().

  Returns:
    A dict with the clip-level schema fields: "frames" uint8 (T, S, S, 3) RGB,
    "label" int, "subject" str, "dataset", "fps" float, "onset", "apex",
    "offset" int frame indices, "action_units" ("4+15"), "emotion",
    "apex_source" ("ground_truth"), "motion_mask" uint8 (S, S) in {0, 1},
    "apex_flow" float32 (S, S, 2) pixels; plus "class_name",
    "distractor_action_units" ("" or e.g. "9") and "blink" (bool).

  Raises:
    ValueError: unknown `class_name`, unknown or invalid parameter.
  """
  if class_name not in CLASS_ACTION_UNITS:
    raise ValueError(f"render_clip: class_name {class_name!r} is not one of {schema.CLASS_NAMES}")
  if not isinstance(subject, SubjectParams):
    raise ValueError(f"render_clip: subject must be a SubjectParams, got {type(subject).__name__}")
  config = config or SyntheticConfig()
  unknown = set(params) - {f.name for f in dataclasses.fields(SyntheticConfig)}
  if unknown:
    raise ValueError(f"render_clip: unknown parameter(s) {sorted(unknown)}")
  config = dataclasses.replace(config, **params)
  size, num_frames, nuis = config.size, config.num_frames, config.nuisances
  if action_units is not None:
    action_units = tuple(str(au) for au in action_units)
    unknown_aus = [au for au in action_units if au not in _MODELLED_ACTION_UNITS]
    if not action_units or unknown_aus:
      raise ValueError(f"render_clip: action_units must be a non-empty subset of "
                       f"{sorted(_MODELLED_ACTION_UNITS, key=int)}, got {action_units!r}")
  timing_rng, expression_rng, nuisance_rng, noise_rng = rng.spawn(4)

  neutral = render_neutral(subject, size, config.supersample)
  lm = face_landmarks(subject, size)
  if timing is None:
    onset, apex, offset = _draw_timing(timing_rng, config)
  else:
    onset, apex, offset = (int(t) for t in timing)
  profile = temporal_profile(num_frames, onset, apex, offset)

  aus = CLASS_ACTION_UNITS[class_name] if action_units is None else action_units
  weights = expression_rng.uniform(0.6, 1.0, len(aus))
  if "26" in aus:
    weights[aus.index("26")] *= _JAW_DROP_WEIGHT
  side_weights = expression_rng.uniform(0.75, 1.0, 2)
  apex_flow = action_unit_flow(aus, weights, lm, size, config.amplitude_px, side_weights)
  magnitude = np.sqrt((apex_flow**2).sum(-1))
  motion_mask = ((magnitude >= config.mask_threshold * config.amplitude_px)
                 & (magnitude > 0)).astype(np.uint8)

  # Nuisances: a fixed number of draws in a fixed order, whatever the class.
  times = np.arange(num_frames) / config.fps
  tx = _smooth_trajectory(nuisance_rng, times, nuis.head_translation_px)
  ty = _smooth_trajectory(nuisance_rng, times, nuis.head_translation_px)
  rot = np.deg2rad(_smooth_trajectory(nuisance_rng, times, nuis.head_rotation_deg))
  flicker_freq, flicker_phase = nuisance_rng.uniform(5, 45), nuisance_rng.uniform(0, 2 * np.pi)
  gain = 1.0 + nuis.flicker * (0.7 * np.sin(2 * np.pi * flicker_freq * times + flicker_phase)
                               + 0.3 * nuisance_rng.uniform(-1, 1, num_frames))
  blink = np.zeros(num_frames)
  has_blink = bool(nuisance_rng.uniform() < nuis.blink_prob)
  blink_len = int(round(nuisance_rng.uniform(0.1, 0.25) * config.fps))
  blink_start = int(nuisance_rng.integers(-blink_len // 2, num_frames))
  blink_depth = nuisance_rng.uniform(0.6, 1.0)
  if has_blink:
    phase = (np.arange(num_frames) - blink_start) / max(blink_len, 1)
    closing = np.clip(phase / 0.4, 0, 1)
    opening = np.clip((1 - phase) / 0.6, 0, 1)
    blink = blink_depth * 0.5 * (1 - np.cos(np.pi * np.minimum(closing, opening)))
    blink[(phase < 0) | (phase > 1)] = 0.0
  has_distractor = bool(nuisance_rng.uniform() < nuis.distractor_prob)
  distractor_au = DISTRACTOR_ACTION_UNITS[int(nuisance_rng.integers(len(DISTRACTOR_ACTION_UNITS)))]
  distractor_timing = _draw_timing(nuisance_rng, config)
  distractor_amp = nuis.distractor_amplitude_px * nuisance_rng.uniform(0.5, 1.0)
  if has_distractor and distractor_amp > 0:
    distractor_flow = action_unit_flow((distractor_au,), (1.0,), lm, size, distractor_amp)
    distractor_profile = temporal_profile(num_frames, *distractor_timing)
  else:
    distractor_flow, distractor_profile = None, np.zeros(num_frames)

  grid_x, grid_y = np.meshgrid(np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32))
  pivot = lm["face"]
  video = np.empty((num_frames, size, size, 3), np.float32)
  for t in range(num_frames):
    # Rigid head motion (backward map): where the head was at rest.
    if tx[t] or ty[t] or rot[t]:
      c, s = np.float32(math.cos(rot[t])), np.float32(math.sin(rot[t]))
      rel_x = grid_x - np.float32(pivot[0] + tx[t])
      rel_y = grid_y - np.float32(pivot[1] + ty[t])
      head_x = c * rel_x + s * rel_y + np.float32(pivot[0])
      head_y = c * rel_y - s * rel_x + np.float32(pivot[1])
      rigid = True
    else:
      head_x, head_y, rigid = grid_x, grid_y, False
    map_x, map_y, moving = head_x, head_y, rigid
    for field, weight in ((apex_flow, profile[t]), (distractor_flow, distractor_profile[t])):
      if field is None or weight == 0:
        continue
      # The expression moves with the head: sample its field at head position.
      if rigid:
        field = cv2.remap(field, head_x, head_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
      map_x = map_x + np.float32(weight) * field[..., 0]
      map_y = map_y + np.float32(weight) * field[..., 1]
      moving = True
    if blink[t] == 0:
      face = neutral.face_open
    else:
      face = neutral.face_open + np.float32(blink[t]) * (neutral.face_closed - neutral.face_open)
    if moving:
      face = cv2.remap(face, map_x, map_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT,
                       borderValue=0)
      # Bicubic overshoot must not create negative light or alpha above 1.
      np.clip(face, 0, None, out=face)
      np.clip(face[..., 3:], None, 1, out=face[..., 3:])
    video[t] = neutral.composite(face)
  if config.brightness != 1.0:  # Skipped at the default: other presets stay bit-identical.
    gain = gain * config.brightness
  video *= gain.astype(np.float32)[:, None, None, None]
  if config.grayscale:
    video = np.repeat(video @ _LUMA_WEIGHTS, 3, axis=-1)
    if nuis.noise_std > 0:
      video += (noise_rng.standard_normal(video.shape[:-1] + (1,), dtype=np.float32)
                * np.float32(nuis.noise_std))
  elif nuis.noise_std > 0:
    video += noise_rng.standard_normal(video.shape, dtype=np.float32) * np.float32(nuis.noise_std)
  frames = np.clip(np.rint(video), 0, 255).astype(np.uint8)

  return {
      "frames": frames,
      "label": schema.CLASS_NAMES.index(class_name),
      "class_name": class_name,
      "subject": subject.subject_id,
      "dataset": DATASET_NAME,
      "fps": float(config.fps),
      "onset": onset,
      "apex": apex,
      "offset": offset,
      "action_units": "+".join(aus),
      "emotion": CLASS_EMOTIONS[class_name],
      "apex_source": "ground_truth",
      "motion_mask": motion_mask,
      "apex_flow": apex_flow,
      "distractor_action_units": distractor_au if has_distractor and distractor_amp > 0 else "",
      "blink": has_blink,
  }


def generate_dataset(config: SyntheticConfig) -> Iterator[tuple[str, dict]]:
  """Yields (clip_id, example) for every clip of a config, in a fixed order.

  Each subject has `clips_per_class_per_subject` clips of every class. Clip
  ids ("s03/clip07") are numbered in a per-subject shuffled order, so they
  carry no class information. Every clip has its own random stream seeded by
  (seed, subject, class, repetition): a clip does not change when others are
  added.
  """
  subjects = make_subjects(config.num_subjects, config.seed)
  per_subject = schema.NUM_CLASSES * config.clips_per_class_per_subject
  for subject_index, subject in enumerate(subjects):
    order = np.random.default_rng([config.seed, 2, subject_index]).permutation(per_subject)
    for slot in range(per_subject):
      class_index, repetition = divmod(int(order[slot]), config.clips_per_class_per_subject)
      rng = np.random.default_rng([config.seed, 3, subject_index, class_index, repetition])
      example = render_clip(subject, schema.CLASS_NAMES[class_index], rng, config=config)
      clip_id = f"{subject.subject_id}/clip{slot:02d}"
      example["clip_id"] = clip_id
      yield clip_id, example


# ----------------------------------------------------------------------------
# The composite tier: three recording setups shaped like the MEGC2019 composite.

# Clips per (negative, positive, surprise) of every subject of the MEGC2019
# composite, per source dataset, counted from the official public sample list
# (megc2019_composite_3class.csv: protocol metadata, no licensed data), in the
# list's subject order. Totals: SMIC 70/51/43 over 16 subjects, CASME II
# 88/32/25 over 24, SAMM 92/26/15 over 28; 442 clips, 68 subjects.
MEGC2019_SUBJECT_CLASS_COUNTS: Mapping[str, tuple[tuple[int, int, int], ...]] = {
    "smic": ((3, 2, 1), (0, 1, 5), (22, 11, 6), (10, 4, 5), (1, 0, 1), (2, 0, 2), (9, 4, 0),
             (0, 1, 3), (3, 3, 1), (0, 8, 1), (0, 10, 0), (3, 2, 5), (1, 1, 2), (2, 0, 5),
             (0, 1, 1), (14, 3, 5)),
    "casme2": ((2, 1, 0), (5, 1, 3), (4, 0, 1), (2, 0, 0), (0, 1, 5), (1, 1, 2), (5, 0, 0),
               (1, 0, 0), (5, 5, 0), (4, 0, 0), (5, 2, 4), (0, 2, 0), (0, 3, 0), (1, 1, 1),
               (1, 2, 0), (23, 7, 1), (3, 3, 5), (2, 0, 0), (1, 0, 0), (2, 0, 0), (7, 1, 0),
               (2, 0, 1), (3, 0, 2), (9, 2, 0)),
    "samm": ((9, 0, 2), (1, 5, 2), (3, 0, 1), (4, 0, 0), (13, 7, 0), (2, 0, 1), (6, 0, 0),
             (2, 7, 1), (2, 0, 1), (2, 1, 2), (3, 0, 1), (2, 0, 1), (0, 1, 0), (2, 2, 0),
             (2, 0, 0), (3, 2, 0), (1, 0, 0), (1, 0, 0), (9, 0, 0), (1, 0, 2), (3, 0, 0),
             (1, 0, 0), (4, 0, 0), (4, 1, 0), (3, 0, 0), (7, 0, 1), (1, 0, 0), (1, 0, 0)),
}

# How a class may be expressed in the composite tier. Real subjects show a
# class with different AU subsets (CASME II codes negative clips as AU4,
# AU4+AU7, AU4+AU9, AU15+AU17, ...); several variants share AUs with other
# classes' variants (6 vs 7: both lift the lower lid) or with the distractors
# (7, 9, 17), which makes them confusable. The first variant is the prototype
# of `CLASS_ACTION_UNITS`.
CLASS_ACTION_UNIT_VARIANTS: Mapping[str, tuple[tuple[str, ...], ...]] = {
    "negative": (("4", "15"), ("4",), ("4", "7"), ("15", "17"), ("4", "9")),
    "positive": (("6", "12"), ("12",), ("6",)),
    "surprise": (("1", "2", "26"), ("1", "2"), ("1",)),
}


@dataclasses.dataclass(frozen=True)
class SubDataset:
  """One recording setup of the composite tier (SMIC-HS-, CASME II- or SAMM-like).

  Attributes:
    name: the records' `dataset` field, e.g. "synthetic_casme2".
    params: renderer settings of this setup: `fps`, `size`, `amplitude_px`
      (the median peak motion of its subjects, pixels of a `size` frame),
      `min/max_duration_s` (expression onset-to-offset), `nuisances`,
      `brightness`, `grayscale`. `num_frames`, `seed`, `num_subjects` and
      `clips_per_class_per_subject` are ignored: the plan sets them per clip.
    subject_class_counts: per subject, clips of (negative, positive,
      surprise); its length is the number of subjects.
    apex_annotated: False for the SMIC-like setup: the record's apex is the
      midpoint (onset + offset) // 2 of the annotated onset and offset, with
      `apex_source="midpoint"`, as the real SMIC builder does.
    face_scale: face size relative to `make_subjects`' faces (tighter or
      looser crops).
    light_scale: multiplies each subject's lighting-gradient strength
      (side light across the face).
    margin_s: (min, max) seconds of neutral frames stored before the onset
      and after the offset (drawn separately per side, at least 1 frame).
  """
  name: str
  params: SyntheticConfig
  subject_class_counts: tuple[tuple[int, int, int], ...]
  apex_annotated: bool = True
  face_scale: float = 1.0
  light_scale: float = 1.0
  margin_s: tuple[float, float] = (0.01, 0.04)

  def __post_init__(self):
    where = f"SubDataset {self.name!r}"
    if not isinstance(self.params, SyntheticConfig):
      raise ValueError(f"{where}: params must be a SyntheticConfig, got {self.params!r}")
    counts = np.asarray(self.subject_class_counts)
    if counts.ndim != 2 or counts.shape[1] != schema.NUM_CLASSES or counts.shape[0] < 1:
      raise ValueError(f"{where}: subject_class_counts must be a non-empty list of "
                       f"{schema.NUM_CLASSES}-tuples, got shape {counts.shape}")
    if counts.min() < 0 or (counts.sum(1) == 0).any():
      raise ValueError(f"{where}: subject_class_counts must be >= 0 with at least one clip "
                       "per subject")
    if not 0 < self.face_scale <= 1.25 or not 0 <= self.light_scale <= 3:
      raise ValueError(f"{where}: face_scale must be in (0, 1.25] and light_scale in [0, 3], "
                       f"got {self.face_scale}, {self.light_scale}")
    if not 0 <= self.margin_s[0] <= self.margin_s[1]:
      raise ValueError(f"{where}: margin_s must be (min, max) with 0 <= min <= max, "
                       f"got {self.margin_s}")

  @property
  def num_subjects(self) -> int:
    return len(self.subject_class_counts)

  @property
  def num_clips(self) -> int:
    return int(np.sum(self.subject_class_counts))


@dataclasses.dataclass(frozen=True)
class CompositeConfig:
  """A composite benchmark: several recording setups, subjects keyed per setup.

  Attributes:
    subsets: the recording setups.
    seed: non-negative integer: identities, which subject gets which row of
      `subject_class_counts`, every clip. Another seed = other people.
    subject_intensity_spread: std of the log of a subject's expression
      strength (lognormal, median 1): some people move more than others.
    clip_intensity: (min, max) uniform per-clip factor on the subject's strength.
    habit_prob: probability that a clip uses its subject's habitual AU
      variant of the class; otherwise a variant drawn uniformly from
      `CLASS_ACTION_UNIT_VARIANTS`. Each subject's habits are drawn once per
      class, the prototype with probability `prototype_prob`.
    prototype_prob: see `habit_prob`.
    boundary_jitter_s: std (seconds) of the annotation error of onset and
      offset: the records hold annotated indices, the renderer's true ones
      differ by this much.
    apex_jitter_s: std (seconds) of the annotation error of the apex.
  """
  subsets: tuple[SubDataset, ...]
  seed: int = 0
  subject_intensity_spread: float = 0.35
  clip_intensity: tuple[float, float] = (0.7, 1.3)
  habit_prob: float = 0.7
  prototype_prob: float = 0.4
  boundary_jitter_s: float = 0.01
  apex_jitter_s: float = 0.02

  def __post_init__(self):
    if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
      raise ValueError(f"CompositeConfig.seed must be an integer >= 0, got {self.seed!r}")
    names = [s.name for s in self.subsets]
    if not names or len(set(names)) != len(names):
      raise ValueError(f"CompositeConfig.subsets must be non-empty with distinct names, got {names}")
    for name in ("habit_prob", "prototype_prob"):
      if not 0 <= getattr(self, name) <= 1:
        raise ValueError(f"CompositeConfig.{name} is a probability, got {getattr(self, name)}")
    for name in ("subject_intensity_spread", "boundary_jitter_s", "apex_jitter_s"):
      if not getattr(self, name) >= 0:
        raise ValueError(f"CompositeConfig.{name} must be >= 0, got {getattr(self, name)}")
    if not 0 < self.clip_intensity[0] <= self.clip_intensity[1]:
      raise ValueError(f"CompositeConfig.clip_intensity must be (min, max) with 0 < min <= max, "
                       f"got {self.clip_intensity}")

  @property
  def num_subjects(self) -> int:
    return sum(s.num_subjects for s in self.subsets)

  @property
  def num_clips(self) -> int:
    return sum(s.num_clips for s in self.subsets)


@dataclasses.dataclass(frozen=True)
class ClipPlan:
  """Everything that decides one composite clip, fixed before any rendering.

  Frame indices are into the stored clip of `num_frames` frames. `onset`,
  `apex`, `offset` are the renderer's true timing; `annotated_*` are what the
  record holds (jittered; for a setup without apex annotation
  `annotated_apex` is the midpoint rule's frame and `apex_source` says so).
  """
  clip_id: str
  dataset: str
  subset_index: int
  subject_index: int
  subject: str
  class_name: str
  fps: float
  size: int
  num_frames: int
  onset: int
  apex: int
  offset: int
  annotated_onset: int
  annotated_apex: int
  annotated_offset: int
  apex_source: str
  action_units: tuple[str, ...]
  amplitude_px: float
  render_seed: tuple[int, ...]

  @property
  def label(self) -> int:
    return schema.CLASS_NAMES.index(self.class_name)


def composite_subjects(config: CompositeConfig, subset_index: int) -> list[SubjectParams]:
  """The identities of one setup ("s00", "s01", ... within that setup).

  Ids repeat across setups on purpose: subjects are people of one dataset,
  keyed `dataset/subject` by the input pipeline, as in the real composite.
  """
  subset = config.subsets[subset_index]
  people_seed = int(np.random.default_rng([config.seed, 20, subset_index]).integers(2**31 - 1))
  return [dataclasses.replace(s, face_half_width=s.face_half_width * subset.face_scale,
                              light_strength=s.light_strength * subset.light_scale)
          for s in make_subjects(subset.num_subjects, people_seed)]


def _annotate(rng: np.random.Generator, config: CompositeConfig, subset: SubDataset,
              num_frames: int, onset: int, apex: int, offset: int) -> tuple[int, int, int, str]:
  """Annotated (onset, apex, offset, apex_source) of a clip, with annotator error."""
  fps = subset.params.fps
  boundary = rng.normal(0.0, config.boundary_jitter_s * fps, 2)
  apex_error = rng.normal(0.0, config.apex_jitter_s * fps)
  a_onset = int(np.clip(round(onset + boundary[0]), 0, num_frames - 3))
  a_offset = int(np.clip(round(offset + boundary[1]), a_onset + 2, num_frames - 1))
  if subset.apex_annotated:
    a_apex = int(np.clip(round(apex + apex_error), a_onset + 1, a_offset - 1))
    return a_onset, a_apex, a_offset, "annotated"
  return a_onset, (a_onset + a_offset) // 2, a_offset, "midpoint"


def plan_composite(config: CompositeConfig) -> list[ClipPlan]:
  """The composite's clips (subjects, classes, timing, AUs, strength), no pixels.

  Deterministic in `config`. Each subject of a setup receives one row of the
  setup's `subject_class_counts` (a seeded permutation of the rows); its clip
  ids ("synthetic_casme2/s03/clip07", unique over the whole composite, as
  the real composite builder writes them) are numbered in a per-subject
  shuffled order, so they carry no class information.
  """
  plans = []
  for k, subset in enumerate(config.subsets):
    params = subset.params
    fps = params.fps
    rows = np.random.default_rng([config.seed, 21, k]).permutation(subset.num_subjects)
    for subject_index in range(subset.num_subjects):
      counts = subset.subject_class_counts[int(rows[subject_index])]
      subject_rng = np.random.default_rng([config.seed, 22, k, subject_index])
      strength = float(np.exp(subject_rng.normal(0.0, config.subject_intensity_spread)))
      habits = {}
      for class_name in schema.CLASS_NAMES:
        variants = CLASS_ACTION_UNIT_VARIANTS[class_name]
        prototype = subject_rng.uniform() < config.prototype_prob
        habits[class_name] = 0 if prototype else int(subject_rng.integers(1, len(variants)))
      slots = [(c, r) for c in range(schema.NUM_CLASSES) for r in range(counts[c])]
      order = subject_rng.permutation(len(slots))
      subject_id = f"s{subject_index:02d}"
      for slot, slot_index in enumerate(order):
        class_index, repetition = slots[int(slot_index)]
        class_name = schema.CLASS_NAMES[class_index]
        rng = np.random.default_rng([config.seed, 23, k, subject_index, class_index, repetition])
        # True timing: the stored clip is the expression plus short margins,
        # as the datasets' clips are cut around it.
        duration = int(round(rng.uniform(params.min_duration_s, params.max_duration_s) * fps))
        duration = max(duration, 2)
        rise = int(np.clip(round(rng.uniform(0.3, 0.6) * duration), 1, duration - 1))
        lead, tail = (max(1, int(round(rng.uniform(*subset.margin_s) * fps))) for _ in range(2))
        num_frames = lead + duration + tail + 1
        onset, apex, offset = lead, lead + rise, lead + duration
        variants = CLASS_ACTION_UNIT_VARIANTS[class_name]
        variant = (habits[class_name] if rng.uniform() < config.habit_prob
                   else int(rng.integers(len(variants))))
        amplitude = params.amplitude_px * strength * rng.uniform(*config.clip_intensity)
        amplitude = float(min(amplitude, 0.1 * params.size))
        annotated = _annotate(rng, config, subset, num_frames, onset, apex, offset)
        plans.append(ClipPlan(
            clip_id=f"{subset.name}/{subject_id}/clip{slot:02d}", dataset=subset.name, subset_index=k,
            subject_index=subject_index, subject=subject_id, class_name=class_name,
            fps=float(fps), size=params.size, num_frames=num_frames, onset=onset, apex=apex,
            offset=offset, annotated_onset=annotated[0], annotated_apex=annotated[1],
            annotated_offset=annotated[2], apex_source=annotated[3],
            action_units=variants[variant], amplitude_px=amplitude,
            render_seed=(config.seed, 24, k, subject_index, class_index, repetition)))
  return plans


def render_planned_clip(plan: ClipPlan, config: CompositeConfig,
                        subject: Optional[SubjectParams] = None) -> dict:
  """Renders one `ClipPlan` into a record (the fields of `render_clip`).

  `onset`, `apex`, `offset` and `apex_source` are the plan's annotated values;
  `apex_flow` and `motion_mask` are the true apex field and its mask.

  Args:
    plan: from `plan_composite(config)`.
    config: the composite it was planned from.
    subject: the plan's identity, if the caller has it (saves redrawing).
  """
  subset = config.subsets[plan.subset_index]
  if subject is None:
    subject = composite_subjects(config, plan.subset_index)[plan.subject_index]
  params = subset.params
  # The distractor AU's own timing is drawn from the config's durations; keep
  # them inside this clip.
  longest = min(params.max_duration_s, (plan.num_frames - 1) / params.fps)
  clip_config = dataclasses.replace(
      params, num_frames=plan.num_frames, amplitude_px=plan.amplitude_px,
      min_duration_s=min(params.min_duration_s, longest), max_duration_s=longest)
  example = render_clip(subject, plan.class_name, np.random.default_rng(list(plan.render_seed)),
                        config=clip_config, action_units=plan.action_units,
                        timing=(plan.onset, plan.apex, plan.offset))
  example.update(
      dataset=plan.dataset, clip_id=plan.clip_id, onset=plan.annotated_onset,
      apex=plan.annotated_apex, offset=plan.annotated_offset, apex_source=plan.apex_source)
  return example


def generate_composite(config: CompositeConfig) -> Iterator[tuple[str, dict]]:
  """Yields (clip_id, example) for every clip of a composite, in plan order."""
  subjects = {}
  for plan in plan_composite(config):
    if plan.subset_index not in subjects:
      subjects[plan.subset_index] = composite_subjects(config, plan.subset_index)
    example = render_planned_clip(plan, config, subjects[plan.subset_index][plan.subject_index])
    yield plan.clip_id, example


def _composite(seed: int) -> CompositeConfig:
  """The calibrated composite recipe (docs/synthetic_me.md, "composite")."""
  counts = MEGC2019_SUBJECT_CLASS_COUNTS
  # `num_frames` only has to hold the longest expression: the plan sets each
  # clip's length (expression plus margins).
  durations = lambda fps: dict(min_duration_s=0.1, max_duration_s=0.25,
                               num_frames=int(round(0.25 * fps)) + 1)
  return CompositeConfig(
      seed=seed,
      subsets=(
          # SMIC-HS: 100 fps, the lowest resolution, dim side light, a noisy
          # sensor; no apex annotation.
          SubDataset(
              name="synthetic_smic_hs", apex_annotated=False, face_scale=0.85, light_scale=1.6,
              subject_class_counts=counts["smic"],
              params=SyntheticConfig(
                  fps=100.0, size=64, amplitude_px=0.38, brightness=0.7, **durations(100.0),
                  nuisances=Nuisances(head_translation_px=0.6, head_rotation_deg=0.5,
                                      noise_std=3.0, flicker=0.01))),
          # CASME II: 200 fps colour, tight crops, lamp flicker.
          SubDataset(
              name="synthetic_casme2", face_scale=1.1, subject_class_counts=counts["casme2"],
              params=SyntheticConfig(
                  fps=200.0, size=80, amplitude_px=0.46, **durations(200.0),
                  nuisances=Nuisances(head_translation_px=0.7, head_rotation_deg=0.5,
                                      noise_std=1.5, flicker=0.03))),
          # SAMM: 200 fps monochrome, the highest resolution, even light.
          SubDataset(
              name="synthetic_samm", light_scale=0.5, subject_class_counts=counts["samm"],
              params=SyntheticConfig(
                  fps=200.0, size=96, amplitude_px=0.40, brightness=1.1, grayscale=True,
                  **durations(200.0),
                  nuisances=Nuisances(head_translation_px=0.8, head_rotation_deg=0.6,
                                      noise_std=1.0, flicker=0.01))),
      ))


# Named composite configurations; the TFDS builder exposes these beside PRESETS.
COMPOSITE_PRESETS: Mapping[str, CompositeConfig] = {
    # Shaped like the MEGC2019 composite; calibrated so the classical
    # Farneback + strain + logistic-regression baseline lands in 0.55-0.75
    # pooled UF1 (benchmarks/classical_baseline.py).
    "composite": _composite(seed=0),
    # The same recipe with other people and clips: make choices here.
    "composite_dev": _composite(seed=1),
}


# ----------------------------------------------------------------------------
# Figure and command line.


def write_strip(path: str, config: SyntheticConfig, *, subject_index: int = 0,
                difference_gain: float = 20.0) -> None:
  """Writes a PNG: one row per class for one subject.

  Columns: onset, mid-rise, apex, mid-fall, offset frames; the apex - onset
  difference magnified `difference_gain` times (grey = no change); the
  motion mask over the apex frame with the forward motion drawn as arrows
  (scaled up for visibility).
  """
  import matplotlib  # Imported lazily: only the figure needs it.
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from PIL import Image  # Pillow: a dependency of matplotlib.

  if not 0 <= subject_index < config.num_subjects:
    raise ValueError(f"write_strip: subject_index must be in [0, {config.num_subjects}), "
                     f"got {subject_index}")
  subject = make_subjects(config.num_subjects, config.seed)[subject_index]
  columns = ("onset", "rising", "apex", "falling", "offset",
             f"apex - onset, x{difference_gain:g}", "motion mask + flow")
  fig, axes = plt.subplots(len(schema.CLASS_NAMES), len(columns),
                           figsize=(1.25 * len(columns), 1.42 * len(schema.CLASS_NAMES)),
                           dpi=100, squeeze=False)
  for row, class_name in enumerate(schema.CLASS_NAMES):
    class_index = schema.CLASS_NAMES.index(class_name)
    rng = np.random.default_rng([config.seed, 3, subject_index, class_index, 0])
    clip = render_clip(subject, class_name, rng, config=config)
    frames = clip["frames"]
    onset, apex, offset = clip["onset"], clip["apex"], clip["offset"]
    picks = (onset, (onset + apex) // 2, apex, (apex + offset) // 2, offset)
    for col, t in enumerate(picks):
      axes[row, col].imshow(frames[t])
      axes[row, col].set_title(f"{columns[col]} t={t}", fontsize=6.5, pad=2)
    # Grey-level difference (channel mean: less noise), red = brighter at apex.
    diff = frames[apex].astype(np.float32).mean(-1) - frames[onset].astype(np.float32).mean(-1)
    limit = 128.0 / difference_gain
    axes[row, 5].imshow(diff, cmap="RdBu_r", vmin=-limit, vmax=limit)
    axes[row, 5].set_title(columns[5], fontsize=6.5, pad=2)
    overlay = frames[apex].astype(np.float32)
    overlay[clip["motion_mask"] > 0] = 0.5 * overlay[clip["motion_mask"] > 0] + (120, 0, 0)
    axes[row, 6].imshow(np.clip(overlay, 0, 255).astype(np.uint8))
    step = max(2, config.size // 14)
    ys, xs = np.mgrid[step // 2:config.size:step, step // 2:config.size:step]
    forward = -clip["apex_flow"][ys, xs]
    keep = np.hypot(forward[..., 0], forward[..., 1]) >= 0.2 * max(config.amplitude_px, 1e-9)
    axes[row, 6].quiver(xs[keep], ys[keep], forward[..., 0][keep], forward[..., 1][keep],
                        color="yellow", angles="xy", scale_units="xy",
                        scale=max(config.amplitude_px, 1e-9) / (1.2 * step), width=0.012)
    axes[row, 6].set_title(columns[6], fontsize=6.5, pad=2)
    extras = [f"+ AU{clip['distractor_action_units']} (distractor)"] if clip["distractor_action_units"] else []
    extras += ["+ blink"] if clip["blink"] else []
    axes[row, 0].set_ylabel("\n".join([class_name, f"AU {clip['action_units']}"] + extras), fontsize=6.5)
  for ax in axes.ravel():
    ax.set_xticks([])
    ax.set_yticks([])
  fig.suptitle(f"synthetic_me: subject {subject.subject_id}, {config.size}x{config.size}, "
               f"{config.fps:g} fps, peak motion {config.amplitude_px:g} px", fontsize=8)
  fig.tight_layout(pad=0.3, h_pad=0.4, w_pad=0.2, rect=(0, 0, 1, 0.95))
  fig.canvas.draw()
  rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3]
  plt.close(fig)
  # A 256-colour palette keeps the noisy frames' PNG small (~200 KB, not ~550).
  Image.fromarray(rgb).quantize(256, method=Image.Quantize.MEDIANCUT,
                                dither=Image.Dither.NONE).save(path, optimize=True)


def main(argv: Optional[Sequence[str]] = None) -> None:
  """Command-line entry point (`python -m mer_jax.synthetic --help`)."""
  parser = argparse.ArgumentParser(prog="python -m mer_jax.synthetic", description=__doc__.split("\n")[0])
  commands = parser.add_subparsers(dest="command", required=True)
  strip = commands.add_parser("strip", help="write a PNG strip of one subject's clips")
  strip.add_argument("--config", default="default", choices=sorted(PRESETS))
  strip.add_argument("--out", required=True, help="output PNG path")
  strip.add_argument("--subject", type=int, default=0, help="subject index")
  strip.add_argument("--seed", type=int, default=None, help="override the preset's seed")
  strip.add_argument("--gain", type=float, default=20.0, help="apex-onset difference gain")
  args = parser.parse_args(argv)
  config = PRESETS[args.config]
  if args.seed is not None:
    config = dataclasses.replace(config, seed=args.seed)
  write_strip(args.out, config, subject_index=args.subject, difference_gain=args.gain)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
