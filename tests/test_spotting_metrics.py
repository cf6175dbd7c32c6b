"""MEGC spotting and spot-then-recognise metrics on worked examples (computed by hand)."""

import pytest

from mer_jax.spotting import metrics
from mer_jax.spotting.metrics import Interval


def test_iou_counts_inclusive_frames():
  # (10,19) and (15,24): 10 frames each, 15..19 shared = 5, union 10 + 10 - 5 = 15.
  assert metrics.interval_iou((10, 19), (15, 24)) == pytest.approx(1 / 3)
  # (0,9) in (0,19): 10 shared of 20 -> exactly 0.5.
  assert metrics.interval_iou((0, 9), (0, 19)) == 0.5
  # Single frames: the same frame is IoU 1; neighbours do not overlap.
  assert metrics.interval_iou((7, 7), (7, 7)) == 1.0
  assert metrics.interval_iou((7, 7), (8, 8)) == 0.0
  assert metrics.iou_matrix([(10, 19), (0, 9)], [(15, 24)]).ravel().tolist() == pytest.approx(
      [1 / 3, 0.0])


def test_iou_exactly_half_is_a_hit_and_just_below_is_not():
  truth = {"v": [Interval(0, 9)]}
  # (0,19): IoU 10/20 = 0.5 -> hit.
  hit = metrics.evaluate_spotting(truth, {"v": [Interval(0, 19)]})
  assert (hit.overall.tp, hit.overall.fp, hit.overall.fn) == (1, 0, 0)
  # (0,20): IoU 10/21 = 0.476 -> a miss: the prediction is FP, the truth FN.
  miss = metrics.evaluate_spotting(truth, {"v": [Interval(0, 20)]})
  assert (miss.overall.tp, miss.overall.fp, miss.overall.fn) == (0, 1, 1)


def test_hits_misses_double_detections_and_empty_videos_pooled():
  truths = {
      # A: a micro truth detected twice, a macro truth missed, a stray macro prediction.
      "A": [Interval(10, 19, "micro"), Interval(100, 139, "macro")],
      "B": [],                            # no truth, no prediction: adds nothing
      "C": [],                            # no truth, one prediction: 1 micro FP
      "D": [Interval(50, 59, "micro")],   # truth, no prediction (absent below): 1 micro FN
  }
  predictions = {
      # (12,21) vs (10,19): 8 shared / 12 = 0.667; (11,20): 9 / 11 = 0.818.
      # Greedy by IoU: (11,20) takes the truth, (12,21) is a double detection -> FP.
      "A": [Interval(12, 21, "micro"), Interval(11, 20, "micro"), Interval(300, 320, "macro")],
      "B": [],
      "C": [Interval(5, 10, "micro")],
  }
  result = metrics.evaluate_spotting(truths, predictions)
  # micro: TP 1 (A), FP 1 (A double) + 1 (C) = 2, FN 1 (D).
  micro = result.per_type["micro"]
  assert (micro.tp, micro.fp, micro.fn) == (1, 2, 1)
  assert micro.precision == pytest.approx(1 / 3)      # 1 / (1 + 2)
  assert micro.recall == pytest.approx(1 / 2)         # 1 / (1 + 1)
  assert micro.f1 == pytest.approx(0.4)               # 2 / (2 + 2 + 1)
  # macro: TP 0, FP 1 (300..320), FN 1 (100..139).
  macro = result.per_type["macro"]
  assert (macro.tp, macro.fp, macro.fn) == (0, 1, 1)
  assert macro.f1 == 0.0
  # overall = sum of types: TP 1, FP 3, FN 2 -> P 1/4, R 1/3, F1 2/7.
  overall = result.overall
  assert (overall.tp, overall.fp, overall.fn) == (1, 3, 2)
  assert (overall.precision, overall.recall) == pytest.approx((0.25, 1 / 3))
  assert overall.f1 == pytest.approx(2 / 7)
  # macro_f1: mean of the per-type F1 (both types have truths): (0.4 + 0) / 2.
  assert result.macro_f1 == pytest.approx(0.2)
  assert result.per_video["B"]["micro"] == metrics.Counts(0, 0, 0)
  assert result.per_video["D"]["micro"] == metrics.Counts(0, 0, 1)
  assert result.as_dict()["overall"]["f1"] == pytest.approx(2 / 7)


def test_one_prediction_over_two_truths_matches_one():
  # (0,19) has IoU 10/20 = 0.5 with both (0,9) and (10,19): a tie, the earlier
  # truth wins; the other truth stays unmatched.
  match = metrics.match_intervals([(0, 19)], [(10, 19), (0, 9)])
  assert match.pairs == ((0, 1, 0.5),)
  assert match.false_negatives == (0,) and match.false_positives == ()


def test_matching_is_one_to_one_by_highest_iou():
  # P0 (0,9): IoU 1 with T0 (0,9), 10/12 with T1 (0,11); P1 (0,11): 10/12 with T0, 1 with T1.
  # Greedy by IoU pairs P0-T0 and P1-T1 (both 1.0), never P0 with two truths.
  match = metrics.match_intervals([(0, 9), (0, 11)], [(0, 9), (0, 11)])
  assert match.pairs == ((0, 0, 1.0), (1, 1, 1.0))


def test_types_are_scored_separately():
  # Same frames, wrong type: a micro FP and a macro FN when scoring by type ...
  truths = {"v": [Interval(0, 39, "macro", label="positive")]}
  predictions = {"v": [Interval(0, 39, "micro", label="positive")]}
  by_type = metrics.evaluate_spotting(truths, predictions)
  assert by_type.per_type["micro"] == metrics.Counts(0, 1, 0)
  assert by_type.per_type["macro"] == metrics.Counts(0, 0, 1)
  assert by_type.macro_f1 == 0.0  # only macro has a truth; its F1 is 0
  # ... while spot-then-recognise matches across types: one TP.
  strs = metrics.evaluate_spot_then_recognise(truths, predictions)
  assert strs.spotting == metrics.Counts(1, 0, 0)
  assert strs.strs == 1.0


def test_strs_reproduces_the_organisers_worked_example():
  # The MEGC STRS metric's README example: five videos, one interval each.
  truths = {"EP02_01f": [Interval(45, 85, "macro", label="happiness")],
            "EP03_02": [Interval(130, 160, "macro", label="others")],
            "EP04_02": [Interval(20, 75, "macro", label="others")],
            "EP01_11f": [Interval(45, 95, "macro", label="repression")],
            "EP02_04f": [Interval(30, 140, "macro", label="repression")]}
  predictions = {"EP02_01f": [Interval(10, 70, "macro", label="happiness")],
                 "EP03_02": [Interval(100, 170, "macro", label="others")],
                 "EP04_02": [Interval(0, 70, "macro", label="others")],
                 "EP01_11f": [Interval(20, 90, "macro", label="happiness")],
                 "EP02_04f": [Interval(70, 140, "macro", label="happiness")]}
  # IoUs: 26/76 = .34 (miss), 31/71 = .44 (miss), 51/76 = .67, 46/76 = .61, 71/111 = .64.
  # Spotting: TP 3, FP 2, FN 2 -> F1 0.6.
  result = metrics.evaluate_spot_then_recognise(truths, predictions)
  assert result.spotting == metrics.Counts(3, 2, 2)
  assert result.spotting.f1 == pytest.approx(0.6)
  # Pairs (truth, prediction): (others, others), (repression, happiness) x 2.
  # Classes {happiness, others, repression}: P = (0 + 1 + 0)/3, R = (0 + 1 + 0)/3.
  assert result.classes == ("happiness", "others", "repression")
  assert result.per_class["happiness"] == metrics.Counts(0, 2, 0)
  assert result.per_class["repression"] == metrics.Counts(0, 0, 2)
  assert result.analysis_f1 == pytest.approx(1 / 3)
  assert result.strs == pytest.approx(0.2)  # 0.6 x 1/3, the README's STRS


def test_analysis_f1_is_the_f1_of_mean_precision_and_recall_not_uf1():
  truths = {"v": [Interval(0, 9, label="a"), Interval(20, 29, label="a"),
                  Interval(40, 49, label="b")]}
  predictions = {"v": [Interval(0, 9, label="a"), Interval(20, 29, label="b"),
                       Interval(40, 49, label="b")]}
  # Pairs (truth, pred): (a,a), (a,b), (b,b).
  # a: TP 1, FP 0, FN 1 -> P 1, R 1/2, F1 2/3.  b: TP 1, FP 1, FN 0 -> P 1/2, R 1, F1 2/3.
  result = metrics.evaluate_spot_then_recognise(truths, predictions)
  assert result.spotting.f1 == 1.0
  assert (result.analysis_precision, result.analysis_recall) == pytest.approx((0.75, 0.75))
  assert result.analysis_f1 == pytest.approx(0.75)   # 2 * .75 * .75 / 1.5
  assert result.uf1 == pytest.approx(2 / 3)          # mean of F1_a, F1_b
  assert result.uar == pytest.approx(0.75)           # mean of R_a, R_b
  assert result.strs == pytest.approx(0.75)
  # A class with no pair at all scores P = R = 0 and pulls the means down.
  with_c = metrics.evaluate_spot_then_recognise(truths, predictions, classes=("a", "b", "c"))
  assert with_c.analysis_f1 == pytest.approx(0.5)    # P = R = (1 + 1/2 + 0)/3
  assert with_c.uf1 == pytest.approx(4 / 9)


def test_spotted_misses_do_not_enter_recognition():
  truths = {"v": [Interval(0, 9, label="a"), Interval(100, 109, label="b")]}
  predictions = {"v": [Interval(0, 9, label="a"), Interval(200, 209, label="b")]}
  result = metrics.evaluate_spot_then_recognise(truths, predictions)
  assert result.spotting == metrics.Counts(1, 1, 1)           # F1 = 2/4 = 0.5
  assert result.per_class["b"] == metrics.Counts(0, 0, 0)     # b was never spotted
  assert result.analysis_f1 == pytest.approx(0.5)             # P = R = (1 + 0)/2
  assert result.strs == pytest.approx(0.25)


def test_expression_type_from_duration():
  assert metrics.expression_type(0, 15, fps=30) == "micro"    # 15/30 = 0.5 s
  assert metrics.expression_type(0, 16, fps=30) == "macro"
  assert metrics.expression_type(0, 100, fps=200) == "micro"
  assert metrics.expression_type(0, 101, fps=200) == "macro"


def test_bad_input_is_named():
  with pytest.raises(ValueError, match=r"video\(s\) \['w'\] that have no ground-truth entry"):
    metrics.evaluate_spotting({"v": []}, {"w": [Interval(0, 1)]})
  with pytest.raises(ValueError, match="onset <= offset"):
    Interval(5, 4)
  with pytest.raises(ValueError, match="type must be one of"):
    Interval(0, 4, "mega")
  with pytest.raises(ValueError, match=r"predictions\['v'\]\[0\] must be a"):
    metrics.evaluate_spotting({"v": []}, {"v": [(0, 4)]})
  with pytest.raises(ValueError, match="has no label"):
    metrics.evaluate_spot_then_recognise({"v": [Interval(0, 4)]}, {})
  with pytest.raises(ValueError, match="iou_threshold"):
    metrics.match_intervals([], [], iou_threshold=0)
