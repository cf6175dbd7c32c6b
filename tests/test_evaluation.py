"""Pooled LOSO metrics equal scikit-learn's; reports are written and readable."""

import json
import os

import numpy as np
import pytest
from sklearn import metrics as skm

from mer_jax import evaluation


def _random_predictions(seed, n=300, datasets=("casme2", "samm", "smic")):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 3, n)
  # Predictions correlated with labels so scores are neither 0 nor chance.
  preds = np.where(rng.random(n) < 0.5, labels, rng.integers(0, 3, n))
  return [{"clip_id": f"c{i:04d}", "subject": f"sub{i % 7}", "dataset": datasets[i % len(datasets)],
           "label": int(l), "prediction": int(p)} for i, (l, p) in enumerate(zip(labels, preds))]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pooled_scores_equal_sklearn(seed):
  records = _random_predictions(seed)
  y = [r["label"] for r in records]
  p = [r["prediction"] for r in records]
  report = evaluation.pooled_report(records)["overall"]
  assert report["uf1"] == pytest.approx(skm.f1_score(y, p, average="macro"), abs=1e-12)
  assert report["uar"] == pytest.approx(skm.recall_score(y, p, average="macro"), abs=1e-12)
  assert report["accuracy"] == pytest.approx(skm.accuracy_score(y, p), abs=1e-12)
  np.testing.assert_array_equal(report["confusion_matrix"], skm.confusion_matrix(y, p))
  per_class_f1 = skm.f1_score(y, p, average=None)
  for c, name in enumerate(("negative", "positive", "surprise")):
    assert report["per_class"][name]["f1"] == pytest.approx(per_class_f1[c], abs=1e-12)


def test_per_dataset_scores_restrict_pooled_predictions():
  records = _random_predictions(3)
  report = evaluation.pooled_report(records)
  for name, scores in report["per_dataset"].items():
    subset = [r for r in records if r["dataset"] == name]
    y = [r["label"] for r in subset]
    p = [r["prediction"] for r in subset]
    assert scores["num_samples"] == len(subset)
    assert scores["uf1"] == pytest.approx(skm.f1_score(y, p, average="macro"), abs=1e-12)


def test_pooling_differs_from_per_fold_averaging():
  # Two folds, each missing a class: pooled UF1 is not the mean of per-fold UF1s.
  fold_a = [(0, 0), (0, 0), (1, 0)]
  fold_b = [(2, 2), (1, 1), (1, 2)]
  records = [{"clip_id": f"{i}", "subject": "a" if i < 3 else "b", "dataset": "d",
              "label": y, "prediction": p} for i, (y, p) in enumerate(fold_a + fold_b)]
  pooled = evaluation.pooled_report(records)["overall"]["uf1"]
  y = [r["label"] for r in records]
  p = [r["prediction"] for r in records]
  assert pooled == pytest.approx(skm.f1_score(y, p, average="macro"))
  per_fold = np.mean([evaluation.pooled_report(records[:3])["overall"]["uf1"],
                      evaluation.pooled_report(records[3:])["overall"]["uf1"]])
  assert abs(pooled - per_fold) > 1e-3


def test_absent_class_left_out_of_means():
  records = [{"clip_id": "a", "subject": "s", "dataset": "d", "label": 0, "prediction": 0},
             {"clip_id": "b", "subject": "s", "dataset": "d", "label": 1, "prediction": 0}]
  scores = evaluation.pooled_report(records)["overall"]
  assert scores["per_class"]["surprise"]["f1"] is None
  y, p = [0, 1], [0, 0]
  assert scores["uf1"] == pytest.approx(skm.f1_score(y, p, labels=[0, 1], average="macro"))


def test_bad_labels_are_named():
  with pytest.raises(ValueError, match="y_pred has labels outside"):
    evaluation.confusion_matrix([0, 1], [0, 5], 3)


def test_write_reports(tmp_path):
  records = _random_predictions(4, n=30)
  results = evaluation.write_reports(str(tmp_path), records, extra={"protocol": "LOSO"})
  for name in ("results.json", "results.md", "confusion_matrix.png", "megc_predictions.txt"):
    assert os.path.getsize(tmp_path / name) > 0
  with open(tmp_path / "results.json") as f:
    assert json.load(f)["overall"]["uf1"] == pytest.approx(results["overall"]["uf1"])
  log = (tmp_path / "megc_predictions.txt").read_text().splitlines()
  assert log[0] == "casme2 sub0"
  assert len([l for l in log if l.count(" ") == 2]) == 30
  assert "| all (pooled) | 30 |" in (tmp_path / "results.md").read_text()
