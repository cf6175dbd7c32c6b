"""MEGC spotting and spot-then-recognise metrics (NumPy only).

Intervals are `(onset, offset)` pairs of **inclusive** 0-based frame indices
of one video: `(10, 19)` covers the 10 frames 10, 11, ..., 19.

IoU of two intervals A and B (MEGC's frame-set definition):

  |A n B| = max(0, min(A.offset, B.offset) - max(A.onset, B.onset) + 1)
  |A u B| = (A.offset - A.onset + 1) + (B.offset - B.onset + 1) - |A n B|
  IoU     = |A n B| / |A u B|

Hit: a prediction hits a true interval when IoU >= `iou_threshold` (0.5 in
MEGC; exactly 0.5 is a hit).

Matching (one-to-one, per video): every (prediction, truth) pair with
IoU >= threshold is a candidate; candidates are taken greedily by IoU,
highest first (ties: the earlier truth by onset, then offset, then the
earlier prediction by onset, offset, input order), and a pair is kept when
neither its prediction nor its truth is already matched. Kept pairs are true
positives (TP); unmatched predictions are false positives (FP) - so a second
detection of an already matched truth is an FP - and unmatched truths are
false negatives (FN). A prediction overlapping two truths matches at most one.

Pooling: TP, FP and FN are summed over all videos first, then
  precision = TP / (TP + FP), recall = TP / (TP + FN),
  F1 = 2 TP / (2 TP + FP + FN)   (= 2PR / (P + R); 0 when there is no TP),
with 0 for a ratio whose denominator is 0, as the MEGC scripts do.

Spotting by expression type (`evaluate_spotting`, MEGC2020-2022): micro- and
macro-expressions are scored separately - predictions of a type are matched
only to truths of that type - and "overall" sums the per-type TP, FP and FN
before computing P/R/F1 (the pooled, micro-averaged score); `macro_f1` is
the mean of the per-type F1 over the types that have at least one true
interval.

Spot-then-recognise (`evaluate_spot_then_recognise`, MEGC2024-2025 STRS, as
the organisers' STRS script computes it):
* spotting is matched across types (every prediction against every truth of
  the video) and scored as above: F1_spot;
* recognition is scored on the spotted true-positive pairs only: for each
  class c of `classes` (default: every label of the true intervals, all
  videos), one-vs-rest over the TP pairs whose truth label is in `classes`:
  TP_c = pairs with truth c and prediction c, FP_c = prediction c, truth not c,
  FN_c = truth c, prediction not c; P_c, R_c (0 when undefined), F1_c;
* F1_analysis = 2 P R / (P + R) with P = mean_c P_c and R = mean_c R_c (the
  harmonic mean of macro precision and macro recall, not the mean of F1_c);
* STRS = F1_spot x F1_analysis.
UF1 = mean_c F1_c and UAR = mean_c R_c on the same pairs are reported beside
them (the organisers' script prints mean precision as "UAR"; here UAR is the
mean recall, as in MEGC2019). A class with no pair at all scores P = R = 0,
as in the organisers' script.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np

EXPRESSION_TYPES: tuple[str, ...] = ("micro", "macro")
# MEGC's micro-expression limit: an expression lasting at most this long is micro.
MICRO_MAX_SECONDS = 0.5


@dataclasses.dataclass(frozen=True)
class Interval:
  """A true or predicted expression interval of one video.

  Attributes:
    onset, offset: inclusive 0-based frame indices, 0 <= onset <= offset.
    type: expression type, "micro" or "macro".
    label: class name for spot-then-recognise (e.g. "negative"), or None.
    apex: apex frame index, or None (not used by the metrics).
    score: detection confidence, or None (not used by the metrics).
  """
  onset: int
  offset: int
  type: str = "micro"
  label: Optional[str] = None
  apex: Optional[int] = None
  score: Optional[float] = None

  def __post_init__(self):
    for name in ("onset", "offset"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"Interval.{name} must be an integer frame index, got {value!r}")
    if not 0 <= self.onset <= self.offset:
      raise ValueError(
          f"Interval needs 0 <= onset <= offset, got onset={self.onset}, offset={self.offset}")
    if self.type not in EXPRESSION_TYPES:
      raise ValueError(f"Interval.type must be one of {EXPRESSION_TYPES}, got {self.type!r}")

  @property
  def length(self) -> int:
    """Number of frames covered (inclusive)."""
    return self.offset - self.onset + 1


def expression_type(onset: int, offset: int, fps: float,
                    micro_max_seconds: float = MICRO_MAX_SECONDS) -> str:
  """"micro" when the inclusive interval lasts <= `micro_max_seconds`, else "macro".

  The duration of frames onset..offset is (offset - onset) / fps seconds
  (onset to offset frame times), the convention of MEGC's 0.5 s limit
  (15 frames at 30 fps, 100 frames at 200 fps).
  """
  if not fps > 0:
    raise ValueError(f"expression_type: fps must be > 0, got {fps}")
  return "micro" if (offset - onset) / fps <= micro_max_seconds + 1e-9 else "macro"


def interval_iou(a: tuple[int, int] | Interval, b: tuple[int, int] | Interval) -> float:
  """IoU of two inclusive frame intervals (module docstring), in [0, 1]."""
  (a_on, a_off), (b_on, b_off) = (_bounds(a), _bounds(b))
  intersection = max(0, min(a_off, b_off) - max(a_on, b_on) + 1)
  union = (a_off - a_on + 1) + (b_off - b_on + 1) - intersection
  return intersection / union


def iou_matrix(predictions: Sequence[tuple[int, int] | Interval],
               truths: Sequence[tuple[int, int] | Interval]) -> np.ndarray:
  """IoU of every prediction with every truth: float64 (num_predictions, num_truths)."""
  p = np.asarray([_bounds(x) for x in predictions], np.int64).reshape(-1, 2)
  t = np.asarray([_bounds(x) for x in truths], np.int64).reshape(-1, 2)
  intersection = np.maximum(
      0, np.minimum(p[:, None, 1], t[None, :, 1]) - np.maximum(p[:, None, 0], t[None, :, 0]) + 1)
  union = (p[:, 1] - p[:, 0] + 1)[:, None] + (t[:, 1] - t[:, 0] + 1)[None, :] - intersection
  return intersection / np.maximum(union, 1)


def _bounds(x) -> tuple[int, int]:
  if isinstance(x, Interval):
    return x.onset, x.offset
  onset, offset = x
  return int(onset), int(offset)


@dataclasses.dataclass(frozen=True)
class Match:
  """One-to-one matching of a video's predictions to its truths.

  Attributes:
    pairs: (prediction index, truth index, IoU) of the true positives,
      ordered by truth index.
    false_positives: indices of unmatched predictions, increasing.
    false_negatives: indices of unmatched truths, increasing.
  """
  pairs: tuple[tuple[int, int, float], ...]
  false_positives: tuple[int, ...]
  false_negatives: tuple[int, ...]


def match_intervals(predictions: Sequence[tuple[int, int] | Interval],
                    truths: Sequence[tuple[int, int] | Interval], *,
                    iou_threshold: float = 0.5) -> Match:
  """Greedy one-to-one matching by IoU (rule in the module docstring).

  Args:
    predictions: predicted intervals of one video (any order).
    truths: true intervals of the same video (any order).
    iou_threshold: a pair is a candidate when IoU >= this, in (0, 1].

  Returns:
    `Match` with indices into the given sequences.
  """
  if not 0 < iou_threshold <= 1:
    raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
  ious = iou_matrix(predictions, truths)
  p_bounds = [_bounds(x) for x in predictions]
  t_bounds = [_bounds(x) for x in truths]
  candidates = [(-ious[i, j], t_bounds[j], j, p_bounds[i], i)
                for i, j in zip(*np.nonzero(ious >= iou_threshold))]
  used_p, used_t, pairs = set(), set(), []
  for neg_iou, _, j, _, i in sorted(candidates):
    if i in used_p or j in used_t:
      continue
    used_p.add(i)
    used_t.add(j)
    pairs.append((int(i), int(j), float(-neg_iou)))
  pairs.sort(key=lambda pair: pair[1])
  return Match(pairs=tuple(pairs),
               false_positives=tuple(i for i in range(len(predictions)) if i not in used_p),
               false_negatives=tuple(j for j in range(len(truths)) if j not in used_t))


@dataclasses.dataclass(frozen=True)
class Counts:
  """Pooled detection counts and the scores they give (0 when undefined)."""
  tp: int = 0
  fp: int = 0
  fn: int = 0

  def __add__(self, other: "Counts") -> "Counts":
    return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

  @property
  def precision(self) -> float:
    return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

  @property
  def recall(self) -> float:
    return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

  @property
  def f1(self) -> float:
    denominator = 2 * self.tp + self.fp + self.fn
    return 2 * self.tp / denominator if denominator else 0.0

  def as_dict(self) -> dict:
    return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "precision": self.precision,
            "recall": self.recall, "f1": self.f1}


@dataclasses.dataclass(frozen=True)
class SpottingResult:
  """Spotting scores pooled over videos.

  Attributes:
    per_type: expression type -> pooled `Counts` (matching within the type).
    overall: the sum of `per_type` (pooled over types and videos).
    macro_f1: mean per-type F1 over the types with at least one true interval
      (0 when no video has any).
    per_video: video id -> type -> `Counts`, for diagnosis.
  """
  per_type: Mapping[str, Counts]
  overall: Counts
  macro_f1: float
  per_video: Mapping[str, Mapping[str, Counts]]

  def as_dict(self) -> dict:
    """JSON-serialisable summary."""
    return {"overall": self.overall.as_dict(), "macro_f1": self.macro_f1,
            "per_type": {t: c.as_dict() for t, c in self.per_type.items()},
            "per_video": {v: {t: dataclasses.asdict(c) for t, c in per.items()}
                          for v, per in self.per_video.items()}}


def _check_videos(truths: Mapping[str, Sequence[Interval]],
                  predictions: Mapping[str, Sequence[Interval]]) -> None:
  unknown = sorted(set(predictions) - set(truths))
  if unknown:
    raise ValueError(
        f"predictions for video(s) {unknown[:5]}{' ...' if len(unknown) > 5 else ''} that have "
        "no ground-truth entry; give every scored video a truth entry (an empty list when it "
        "holds no expression)")
  for where, mapping in (("truths", truths), ("predictions", predictions)):
    for video, intervals in mapping.items():
      for k, interval in enumerate(intervals):
        if not isinstance(interval, Interval):
          raise ValueError(f"{where}[{video!r}][{k}] must be a spotting.metrics.Interval, got "
                           f"{type(interval).__name__}")


def evaluate_spotting(truths: Mapping[str, Sequence[Interval]],
                      predictions: Mapping[str, Sequence[Interval]], *,
                      iou_threshold: float = 0.5,
                      types: Sequence[str] = EXPRESSION_TYPES) -> SpottingResult:
  """MEGC spotting precision / recall / F1 per expression type and overall.

  Args:
    truths: video id -> true intervals. Every scored video must be present,
      with an empty list when it holds no expression.
    predictions: video id -> predicted intervals; a video of `truths` that is
      missing here has no prediction (its truths are all FN).
    iou_threshold: hit threshold (MEGC: 0.5).
    types: expression types scored (each a member of `EXPRESSION_TYPES`).

  Returns:
    `SpottingResult` (module docstring: matching within each type, TP/FP/FN
    pooled over videos, overall = sum over types).

  Raises:
    ValueError: a prediction for a video without a truth entry, an entry
      that is not an `Interval`, or an unknown type.
  """
  bad = [t for t in types if t not in EXPRESSION_TYPES]
  if bad:
    raise ValueError(f"evaluate_spotting: unknown type(s) {bad}; types are {EXPRESSION_TYPES}")
  _check_videos(truths, predictions)
  per_type = {t: Counts() for t in types}
  per_video = {}
  for video in sorted(truths):
    per_video[video] = {}
    for kind in types:
      video_truths = [x for x in truths[video] if x.type == kind]
      video_predictions = [x for x in predictions.get(video, ()) if x.type == kind]
      match = match_intervals(video_predictions, video_truths, iou_threshold=iou_threshold)
      counts = Counts(len(match.pairs), len(match.false_positives), len(match.false_negatives))
      per_video[video][kind] = counts
      per_type[kind] += counts
  overall = sum(per_type.values(), Counts())
  scored = [c.f1 for c in per_type.values() if c.tp + c.fn > 0]
  return SpottingResult(per_type=per_type, overall=overall,
                        macro_f1=float(np.mean(scored)) if scored else 0.0, per_video=per_video)


@dataclasses.dataclass(frozen=True)
class SpotThenRecogniseResult:
  """Spot-then-recognise scores (MEGC2024-2025).

  Attributes:
    spotting: pooled counts of the type-agnostic matching; F1_spot is
      `spotting.f1`.
    classes: the classes recognition is averaged over.
    per_class: class -> `Counts` one-vs-rest on the spotted TP pairs.
    analysis_precision, analysis_recall: mean over classes of P_c, R_c.
    analysis_f1: 2PR/(P+R) of those means (the F1 that STRS multiplies).
    uf1: mean over classes of F1_c; uar: mean over classes of R_c.
    strs: spotting.f1 * analysis_f1.
    pairs: (video id, truth label, predicted label, IoU) of every spotted TP,
      in video order; pairs whose truth label is not in `classes` are kept
      here but not scored.
  """
  spotting: Counts
  classes: tuple[str, ...]
  per_class: Mapping[str, Counts]
  analysis_precision: float
  analysis_recall: float
  analysis_f1: float
  uf1: float
  uar: float
  strs: float
  pairs: tuple[tuple[str, Optional[str], Optional[str], float], ...]

  def as_dict(self) -> dict:
    """JSON-serialisable summary."""
    return {"strs": self.strs, "spotting": self.spotting.as_dict(),
            "analysis": {"precision": self.analysis_precision, "recall": self.analysis_recall,
                         "f1": self.analysis_f1, "uf1": self.uf1, "uar": self.uar,
                         "per_class": {c: k.as_dict() for c, k in self.per_class.items()}},
            "classes": list(self.classes), "num_spotted_pairs": len(self.pairs)}


def evaluate_spot_then_recognise(truths: Mapping[str, Sequence[Interval]],
                                 predictions: Mapping[str, Sequence[Interval]], *,
                                 classes: Optional[Iterable[str]] = None,
                                 iou_threshold: float = 0.5) -> SpotThenRecogniseResult:
  """Spotting F1, recognition on the spotted intervals, and STRS.

  Args:
    truths: video id -> true intervals with `label` set (class name).
    predictions: video id -> predicted intervals with `label` set.
    classes: the classes recognition is scored over; default every label of
      the true intervals (sorted), as the organisers' script does.
    iou_threshold: hit threshold (MEGC: 0.5).

  Returns:
    `SpotThenRecogniseResult` (definitions in the module docstring).

  Raises:
    ValueError: as `evaluate_spotting`, or a true interval without a label.
  """
  _check_videos(truths, predictions)
  for video, intervals in truths.items():
    for k, interval in enumerate(intervals):
      if interval.label is None:
        raise ValueError(f"truths[{video!r}][{k}] has no label; spot-then-recognise needs "
                         "the class of every true interval")
  if classes is None:
    classes = sorted({x.label for intervals in truths.values() for x in intervals})
  classes = tuple(classes)
  spotting, pairs = Counts(), []
  for video in sorted(truths):
    video_truths, video_predictions = list(truths[video]), list(predictions.get(video, ()))
    match = match_intervals(video_predictions, video_truths, iou_threshold=iou_threshold)
    spotting += Counts(len(match.pairs), len(match.false_positives), len(match.false_negatives))
    pairs += [(video, video_truths[j].label, video_predictions[i].label, iou)
              for i, j, iou in match.pairs]
  scored = [(true, predicted) for _, true, predicted, _ in pairs if true in classes]
  per_class = {}
  for name in classes:
    tp = sum(1 for true, predicted in scored if true == name and predicted == name)
    fp = sum(1 for true, predicted in scored if true != name and predicted == name)
    fn = sum(1 for true, predicted in scored if true == name and predicted != name)
    per_class[name] = Counts(tp, fp, fn)
  if classes:
    precision = float(np.mean([c.precision for c in per_class.values()]))
    recall = float(np.mean([c.recall for c in per_class.values()]))
    uf1 = float(np.mean([c.f1 for c in per_class.values()]))
  else:
    precision = recall = uf1 = 0.0
  analysis_f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
  return SpotThenRecogniseResult(
      spotting=spotting, classes=classes, per_class=per_class, analysis_precision=precision,
      analysis_recall=recall, analysis_f1=analysis_f1, uf1=uf1, uar=recall,
      strs=spotting.f1 * analysis_f1, pairs=tuple(pairs))
