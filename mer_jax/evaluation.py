"""Evaluation pooled over LOSO folds: accuracy, UF1, UAR, reports.

UF1 and UAR follow the MEGC2019 protocol: true/false positives and false
negatives are summed over **all folds' predictions pooled together**, then
  F1_c  = 2 TP_c / (2 TP_c + FP_c + FN_c),  UF1 = mean_c F1_c,
  Rec_c = TP_c / n_c,                        UAR = mean_c Rec_c.
They are never averaged per fold. A class absent from both the ground truth and
the predictions has F1 and recall undefined and is left out of the means (and
reported as null), as scikit-learn does with `labels=` the present classes.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from mer_jax import schema
from mer_jax import workdir as workdir_lib


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
  """`(num_classes, num_classes)` int64 counts; rows are true, columns predicted classes."""
  y_true = np.asarray(y_true, np.int64)
  y_pred = np.asarray(y_pred, np.int64)
  if y_true.shape != y_pred.shape:
    raise ValueError(f"y_true and y_pred differ in shape: {y_true.shape} vs {y_pred.shape}")
  for name, y in (("y_true", y_true), ("y_pred", y_pred)):
    if y.size and (y.min() < 0 or y.max() >= num_classes):
      raise ValueError(f"{name} has labels outside [0, {num_classes}): {sorted(set(y.tolist()))}")
  cm = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(cm, (y_true, y_pred), 1)
  return cm


def scores_from_confusion(cm: np.ndarray,
                          class_names: Sequence[str] = schema.CLASS_NAMES) -> dict[str, Any]:
  """Accuracy, UF1, UAR and per-class F1/recall/support from a confusion matrix."""
  cm = np.asarray(cm, np.int64)
  tp = np.diag(cm).astype(np.float64)
  fp = cm.sum(axis=0) - tp
  fn = cm.sum(axis=1) - tp
  support = cm.sum(axis=1)
  present = (support + cm.sum(axis=0)) > 0
  with np.errstate(divide="ignore", invalid="ignore"):
    f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
    recall = np.where(support > 0, tp / np.maximum(support, 1), 0.0)
  total = int(cm.sum())
  per_class = {
      name: {
          "f1": float(f1[c]) if present[c] else None,
          "recall": float(recall[c]) if support[c] > 0 else None,
          "support": int(support[c]),
      } for c, name in enumerate(class_names)
  }
  recall_classes = support > 0
  return {
      "num_samples": total,
      "accuracy": float(tp.sum() / total) if total else float("nan"),
      "uf1": float(f1[present].mean()) if present.any() else float("nan"),
      "uar": float(recall[recall_classes].mean()) if recall_classes.any() else float("nan"),
      "per_class": per_class,
      "confusion_matrix": cm.tolist(),
  }


def pooled_report(predictions: Iterable[Mapping[str, Any]],
                  class_names: Sequence[str] = schema.CLASS_NAMES) -> dict[str, Any]:
  """Scores predictions pooled over folds, overall and per dataset.

  Args:
    predictions: records with at least `label` (int), `prediction` (int) and
      `dataset` (str), one per test clip, from every fold.

  Returns:
    `{"overall": scores, "per_dataset": {name: scores}}` where scores are as in
    `scores_from_confusion`. Per-dataset scores restrict the pooled predictions
    to that dataset (the MEGC2019 composite convention).
  """
  predictions = list(predictions)
  num_classes = len(class_names)

  def score(records):
    cm = confusion_matrix([r["label"] for r in records], [r["prediction"] for r in records],
                          num_classes)
    return scores_from_confusion(cm, class_names)

  datasets = sorted({r["dataset"] for r in predictions})
  return {
      "overall": score(predictions),
      "per_dataset": {d: score([r for r in predictions if r["dataset"] == d]) for d in datasets},
  }


def markdown_table(report: Mapping[str, Any], title: str = "LOSO results") -> str:
  """A Markdown table of UF1/UAR/accuracy overall and per dataset, plus per-class scores."""
  lines = [f"## {title}", "", "| split | samples | UF1 | UAR | accuracy |", "|---|---|---|---|---|"]
  rows = [("all (pooled)", report["overall"])]
  if len(report["per_dataset"]) > 1:
    rows += list(report["per_dataset"].items())
  for name, s in rows:
    lines.append(f"| {name} | {s['num_samples']} | {s['uf1']:.4f} | {s['uar']:.4f} | "
                 f"{s['accuracy']:.4f} |")
  lines += ["", "| class | support | F1 | recall |", "|---|---|---|---|"]
  fmt = lambda v: "n/a" if v is None else f"{v:.4f}"
  for name, c in report["overall"]["per_class"].items():
    lines.append(f"| {name} | {c['support']} | {fmt(c['f1'])} | {fmt(c['recall'])} |")
  return "\n".join(lines) + "\n"


def save_confusion_png(cm: np.ndarray, path: str,
                       class_names: Sequence[str] = schema.CLASS_NAMES,
                       title: str = "Confusion matrix (pooled over folds)") -> None:
  """Writes the confusion matrix as an annotated PNG (rows true, columns predicted)."""
  import matplotlib  # Lazy: plotting is only needed at the end of a run.
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  cm = np.asarray(cm)
  fig, ax = plt.subplots(figsize=(1.4 * len(class_names) + 1.5, 1.2 * len(class_names) + 1.2))
  ax.imshow(cm, cmap="Blues")
  ax.set_xticks(range(len(class_names)), class_names, rotation=30)
  ax.set_yticks(range(len(class_names)), class_names)
  ax.set_xlabel("predicted")
  ax.set_ylabel("true")
  ax.set_title(title, fontsize=9)
  threshold = cm.max() / 2 if cm.size else 0
  for i in range(cm.shape[0]):
    for j in range(cm.shape[1]):
      ax.text(j, i, str(cm[i, j]), ha="center", va="center",
              color="white" if cm[i, j] > threshold else "black")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def megc_prediction_log(predictions: Iterable[Mapping[str, Any]],
                        class_names: Sequence[str] = schema.CLASS_NAMES) -> str:
  """The MEGC submission log: a `<dataset> <subject>` header per fold, then `video gt pred` lines."""
  by_fold: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
  for r in predictions:
    by_fold.setdefault((r["dataset"], r["subject"]), []).append(r)
  lines = []
  for (dataset, subject), records in sorted(by_fold.items()):
    lines.append(f"{dataset} {subject}")
    for r in sorted(records, key=lambda r: r["clip_id"]):
      lines.append(f"{r['clip_id']} {class_names[r['label']]} {class_names[r['prediction']]}")
  return "\n".join(lines) + "\n"


def write_reports(run_dir: "workdir_lib.Workdir", predictions: Sequence[Mapping[str, Any]], *,
                  extra: Optional[Mapping[str, Any]] = None,
                  class_names: Sequence[str] = schema.CLASS_NAMES) -> dict[str, Any]:
  """Writes results.json, results.md, confusion_matrix.png and megc_predictions.txt.

  Args:
    run_dir: the run directory (`mer_jax.workdir.Workdir`, or a path).

  Returns the results dict written to results.json.
  """
  if isinstance(run_dir, str):
    run_dir = workdir_lib.Workdir(run_dir)
  report = pooled_report(predictions, class_names)
  results = {"class_names": list(class_names), **report, **dict(extra or {}),
             "predictions": sorted(predictions, key=lambda r: (r["dataset"], r["clip_id"]))}
  run_dir.write_text(run_dir.results_json, json.dumps(results, indent=2, sort_keys=True) + "\n")
  run_dir.write_text(run_dir.results_md, markdown_table(report))
  run_dir.write_text(run_dir.megc_log, megc_prediction_log(predictions, class_names))
  save_confusion_png(np.asarray(report["overall"]["confusion_matrix"]), run_dir.confusion_png,
                     class_names)
  return results
