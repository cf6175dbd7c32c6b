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

  def __post_init__(self):
    for name, minimum in (("num_subjects", 1), ("clips_per_class_per_subject", 1),
                          ("num_frames", 3), ("size", 32), ("supersample", 1),
                          ("seed", 0)):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"SyntheticConfig.{name} must be an integer >= {minimum}, got {value!r}")
    for name in ("fps", "amplitude_px", "min_duration_s", "max_duration_s", "mask_threshold"):
      value = getattr(self, name)
      if not (isinstance(value, (int, float)) and math.isfinite(value)):
        raise ValueError(f"SyntheticConfig.{name} must be a finite number, got {value!r}")
    if self.fps <= 0:
      raise ValueError(f"SyntheticConfig.fps must be > 0, got {self.fps}")
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
    # The same clips' setting about 3x fainter (nuisances scaled alike, except
    # sensor noise, which does not depend on the motion).
    "low_amplitude": SyntheticConfig(
        amplitude_px=0.25,
        nuisances=Nuisances(head_translation_px=0.15, head_rotation_deg=0.1,
                            distractor_amplitude_px=0.15)),
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
                config: Optional[SyntheticConfig] = None, **params) -> dict:
  """Renders one micro-expression clip of `subject`.

  Args:
    subject: from `make_subjects`.
    class_name: one of `schema.CLASS_NAMES`.
    rng: source of all randomness; equal generator states give equal clips.
      Timing, expression shape and nuisances use separate child streams, so
      the nuisances' distribution does not depend on the class.
    config: renderer settings (default `SyntheticConfig()`); dataset-size
      fields are ignored.
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
  timing_rng, expression_rng, nuisance_rng, noise_rng = rng.spawn(4)

  neutral = render_neutral(subject, size, config.supersample)
  lm = face_landmarks(subject, size)
  onset, apex, offset = _draw_timing(timing_rng, config)
  profile = temporal_profile(num_frames, onset, apex, offset)

  aus = CLASS_ACTION_UNITS[class_name]
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
  video *= gain.astype(np.float32)[:, None, None, None]
  if nuis.noise_std > 0:
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
