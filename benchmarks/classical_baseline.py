"""Classical baseline: Farneback onset->apex flow + optical strain, logistic regression, LOSO.

    python -m benchmarks.classical_baseline --tier composite [--data_dir DIR] [--out r.json]

The yardstick the `synthetic_me` tiers are calibrated against (issue 14): per
clip, OpenCV's Farneback optical flow from the onset frame to the apex frame
(both converted to grey and resized to 112x112 first, so that the three
setups of `composite` share one feature space), the optical strain
sqrt(u_x^2 + v_y^2 + 0.5 (u_y + v_x)^2) with forward differences, the three
maps area-pooled to 14x14 (588 features), standardised, and a multinomial
logistic regression (C=1, class-balanced weights: the composite is 57 %
negative) trained leave-one-subject-out. Subjects are keyed
`dataset/subject`. UF1 and UAR are pooled over all folds'
predictions (`mer_jax.evaluation.pooled_report`), overall and per dataset.

Onset and apex are the record's `onset` and `apex` fields: for a record whose
`apex_source` is "midpoint" (the SMIC-like part of `composite`, which has no
apex annotation) that is the middle frame (onset + offset) // 2 of the
annotated onset..offset. The rule is applied by the dataset builder, stored in
`apex_source`, and counted in this script's output (`apex_sources`).

Nothing here is tuned per tier: the baseline is fixed, the tiers' knobs are
calibrated against it (on `composite_dev`, reported once on `composite`).

Dependencies: scikit-learn (a test dependency of mer_jax, `pip install -e
.[test]`) for the logistic regression; OpenCV for the flow.

`--source render` renders the clips with `mer_jax.synthetic` instead of
reading built records (the same pixels, no TFDS build; used while tuning the
tier's knobs). The default reads the built TFDS records, building them into
`--data_dir` first if they are missing.
"""

from __future__ import annotations

import argparse
import collections
import json
import time
from typing import Iterable, Iterator, Mapping, Optional, Sequence

import cv2
import numpy as np

from mer_jax import evaluation
from mer_jax import schema

FLOW_SIZE = 112   # frames are resized to FLOW_SIZE x FLOW_SIZE before the flow
GRID = 14         # u, v and strain are area-pooled to GRID x GRID
# Farneback parameters (OpenCV's documented example values): pyramid scale,
# levels, window, iterations, poly_n, poly_sigma, flags.
FARNEBACK = (0.5, 3, 15, 3, 5, 1.2, 0)


def _grey(frame: np.ndarray) -> np.ndarray:
  """uint8 (H, W, 3) RGB -> uint8 (FLOW_SIZE, FLOW_SIZE) grey."""
  grey = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
  if grey.shape != (FLOW_SIZE, FLOW_SIZE):
    shrink = grey.shape[0] > FLOW_SIZE
    grey = cv2.resize(grey, (FLOW_SIZE, FLOW_SIZE),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
  return grey


def clip_features(onset_frame: np.ndarray, apex_frame: np.ndarray) -> np.ndarray:
  """Pooled onset->apex Farneback flow and optical strain of one clip.

  Args:
    onset_frame, apex_frame: uint8 (H, W, 3) RGB, any size (resized to
      FLOW_SIZE x FLOW_SIZE).

  Returns:
    (3 * GRID * GRID,) float32: u, v (pixels of a FLOW_SIZE frame) and strain,
    each area-pooled to GRID x GRID.
  """
  if onset_frame.shape != apex_frame.shape or onset_frame.ndim != 3:
    raise ValueError(f"clip_features: onset and apex frames must be equal (H, W, 3) arrays, got "
                     f"{onset_frame.shape} and {apex_frame.shape}")
  flow = cv2.calcOpticalFlowFarneback(_grey(onset_frame), _grey(apex_frame), None, *FARNEBACK)
  u, v = flow[..., 0], flow[..., 1]
  # Forward differences, the last row/column repeated so shapes stay (S, S).
  dx = lambda f: np.diff(f, axis=1, append=f[:, -1:])
  dy = lambda f: np.diff(f, axis=0, append=f[-1:, :])
  strain = np.sqrt(dx(u) ** 2 + dy(v) ** 2 + 0.5 * (dy(u) + dx(v)) ** 2)
  pool = lambda f: cv2.resize(f, (GRID, GRID), interpolation=cv2.INTER_AREA).ravel()
  return np.concatenate([pool(u), pool(v), pool(strain)]).astype(np.float32)


def _record(example: Mapping[str, object], onset_frame, apex_frame) -> dict:
  text = lambda v: v.decode() if isinstance(v, bytes) else str(v)
  return {"clip_id": text(example["clip_id"]), "subject": text(example["subject"]),
          "dataset": text(example["dataset"]), "label": int(example["label"]),
          "apex_source": text(example["apex_source"]),
          "features": clip_features(onset_frame, apex_frame)}


def records_from_tfds(tier: str, data_dir: Optional[str]) -> Iterator[dict]:
  """Features of every clip of the built `synthetic_me/<tier>` records (built if missing)."""
  import data_builders.synthetic_me as synthetic_me  # pylint: disable=import-outside-toplevel
  from mer_jax import input_pipeline  # pylint: disable=import-outside-toplevel

  names = [c.name for c in synthetic_me.Builder.BUILDER_CONFIGS]
  if tier not in names:
    raise ValueError(f"--tier {tier!r} is not a synthetic_me config; choose one of {names}")
  builder = synthetic_me.Builder(config=tier, data_dir=data_dir)
  if not builder.is_prepared():
    print(f"building synthetic_me/{tier} into {builder.data_dir} ...", flush=True)
    start = time.perf_counter()
    builder.download_and_prepare()
    print(f"built synthetic_me/{tier} in {time.perf_counter() - start:.0f} s", flush=True)
  source = input_pipeline.records(builder, "train")  # ArrayRecord by index, frames encoded.
  for i in range(len(source)):
    example = source[i]
    onset, apex = input_pipeline.decode_frames(
        example["frames"], [int(example["onset"]), int(example["apex"])])
    yield _record(example, onset, apex)


def records_from_renderer(tier: str) -> Iterator[dict]:
  """Features of every clip of `tier`, rendered by `mer_jax.synthetic` (no TFDS)."""
  from mer_jax import synthetic  # pylint: disable=import-outside-toplevel

  if tier in synthetic.COMPOSITE_PRESETS:
    clips = synthetic.generate_composite(synthetic.COMPOSITE_PRESETS[tier])
  elif tier in synthetic.PRESETS:
    clips = synthetic.generate_dataset(synthetic.PRESETS[tier])
  else:
    raise ValueError(f"--tier {tier!r} is not a synthetic preset; choose one of "
                     f"{sorted(synthetic.PRESETS) + sorted(synthetic.COMPOSITE_PRESETS)}")
  for _, example in clips:
    frames = example["frames"]
    yield _record(example, frames[example["onset"]], frames[example["apex"]])


def loso_predict(features: np.ndarray, labels: np.ndarray, groups: Sequence[str]) -> np.ndarray:
  """Leave-one-group-out predictions of the standardised logistic regression.

  Args:
    features: (N, D) float.
    labels: (N,) int class indices.
    groups: (N,) subject keys; each distinct key is held out once.

  Returns:
    (N,) int predictions, each from the model that did not see its group.
  """
  from sklearn import linear_model, pipeline, preprocessing  # pylint: disable=import-outside-toplevel

  groups = np.asarray(groups)
  if len(set(groups.tolist())) < 2:
    raise ValueError("loso_predict needs at least two subjects")
  predictions = np.full(len(labels), -1, np.int64)
  for group in sorted(set(groups.tolist())):
    test = groups == group
    model = pipeline.make_pipeline(
        preprocessing.StandardScaler(),
        linear_model.LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000))
    model.fit(features[~test], labels[~test])
    predictions[test] = model.predict(features[test])
  return predictions


def evaluate(records: Iterable[dict]) -> dict:
  """LOSO over `dataset/subject` keys; pooled UF1/UAR overall and per dataset."""
  records = list(records)
  if not records:
    raise ValueError("evaluate: no clips")
  features = np.stack([r["features"] for r in records])
  labels = np.array([r["label"] for r in records], np.int64)
  groups = [f"{r['dataset']}/{r['subject']}" for r in records]
  predictions = loso_predict(features, labels, groups)
  report = evaluation.pooled_report(
      {"label": int(l), "prediction": int(p), "dataset": r["dataset"]}
      for l, p, r in zip(labels, predictions, records))
  report["num_subjects"] = len(set(groups))
  report["apex_sources"] = dict(collections.Counter(r["apex_source"] for r in records))
  return report


def _summary(report: Mapping[str, object]) -> str:
  lines = [f"{'split':<20} {'clips':>5} {'UF1':>6} {'UAR':>6} {'acc':>6}"]
  rows = [("all (pooled)", report["overall"])] + list(report["per_dataset"].items())
  for name, s in rows:
    lines.append(f"{name:<20} {s['num_samples']:>5} {s['uf1']:>6.3f} {s['uar']:>6.3f} "
                 f"{s['accuracy']:>6.3f}")
  return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> dict:
  """Command-line entry point; returns the report it prints."""
  parser = argparse.ArgumentParser(prog="python -m benchmarks.classical_baseline",
                                   description=__doc__.split("\n")[0])
  parser.add_argument("--tier", default="composite", help="synthetic_me config, e.g. composite")
  parser.add_argument("--data_dir", default=None, help="TFDS data dir (default: TFDS's)")
  parser.add_argument("--source", choices=("records", "render"), default="records",
                      help="read the built TFDS records (default) or render the clips directly")
  parser.add_argument("--out", default=None, help="write the report as JSON here")
  args = parser.parse_args(argv)
  start = time.perf_counter()
  records = (records_from_tfds(args.tier, args.data_dir) if args.source == "records"
             else records_from_renderer(args.tier))
  records = list(records)
  features_s = time.perf_counter() - start
  report = evaluate(records)
  report.update(tier=args.tier, source=args.source, features_s=round(features_s, 1),
                total_s=round(time.perf_counter() - start, 1),
                method=(f"Farneback{FARNEBACK} onset->apex at {FLOW_SIZE}x{FLOW_SIZE} grey, "
                        f"u/v/strain area-pooled to {GRID}x{GRID}, StandardScaler + "
                        "LogisticRegression(C=1, class_weight=balanced), LOSO on dataset/subject"))
  print(f"synthetic_me/{args.tier} ({args.source}): {len(records)} clips, "
        f"{report['num_subjects']} subjects, apex sources {report['apex_sources']}, "
        f"{report['total_s']:.0f} s")
  print(_summary(report))
  if args.out:
    with open(args.out, "w") as f:
      json.dump(report, f, indent=1)
  return report


if __name__ == "__main__":
  main()
