r"""Re-scoring a finished LOSO spotting run with other peak parameters, no retraining.

  python -m mer_jax.spotting.rescore --workdir=DIR --out=FILE.json --threshold=0.6
  python -m mer_jax.spotting.rescore --workdir=DIR --out=FILE.json --peaks_from=GRID.json
  python -m mer_jax.spotting.rescore --workdir=DIR --out=GRID.json --grid      # dev runs only
  python -m mer_jax.spotting.rescore --workdir=D1,D2,D3 --out=GRID.json --grid  # dev, 3 seeds

Every LOSO fold of `mer_jax.spotting.train` stores its held-out videos'
per-frame probabilities (`folds/<subject>/predictions.json`, rounded as
`train.stored_probabilities` rounds them, the numbers its intervals were found
on). Re-scoring finds the intervals in them again with other
`peaks.PeakParams`, classifies each new interval with the fold's own
recogniser (its checkpoint; the frames come from the feature cache) and pools
the folds as the trainer does (`train.loso_results`): with the run's own
parameters it reproduces the run's results.json.

`--grid` scores the `GRID` below by spotting F1 alone (no recognition, so
NumPy only and seconds) and picks the parameters with the highest overall F1;
ties go to the earlier grid point (the grid lists the values chosen before it,
`peaks.FIRST_DEV_CHOICE`, first). It is meant for a dev instance
(`preset=cas_like_dev`): parameters chosen there are then applied to the test
run with `--peaks_from`, so no choice is made on a test fold. With several
dev workdirs (one config, other training seeds) `--grid` picks the point with
the highest mean F1 over them and re-scores each. Flags not given
(and fields a `--peaks_from` file lacks) keep the run's own values;
`--drop_by_duration=true|false` sets the duration rule of `peaks.PeakParams`.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import sys
from typing import Any, Mapping, Optional, Sequence

import ml_collections
import numpy as np

from mer_jax import checkpoints
from mer_jax import workdir as workdir_lib
from mer_jax.spotting import codecs
from mer_jax.spotting import data as data_lib
from mer_jax.spotting import metrics
from mer_jax.spotting import peaks as peaks_lib
from mer_jax.spotting import train

# The dev grid, with `peaks.FIRST_DEV_CHOICE` (the values before this grid) first, so ties
# keep them. The first grid (threshold 0.5-0.8 x min_length_s 0.1-0.2 x smooth_s 0.1-0.2,
# a priori first) chose smooth_s = min_length_s = 0.2 s; at that point the dev run's errors
# were mostly one expression cut into pieces (module docstring of `peaks`), so this grid
# adds hysteresis and wider merge gaps: 3 x 4 x 2 x 2 x 3 x 2 = 288 points; nms_overlap
# keeps its a-priori value.
GRID: Mapping[str, tuple[float, ...]] = {
    "threshold": (0.5, 0.6, 0.7),
    "low_threshold": (1.0, 0.4, 0.3, 0.2),
    "smooth_s": (0.2, 0.1),
    "min_length_s": (0.2, 0.15),
    "merge_gap_s": (0.1, 0.2, 0.3),
    "drop_by_duration": (True, False),
}
RESULTS_FORMAT = "mer_jax.spotting_rescore/1"


class NotAFinishedRunError(ValueError):
  """The workdir is not a finished LOSO run of `mer_jax.spotting.train` (the message says why)."""


@dataclasses.dataclass
class FinishedRun:
  """What a finished LOSO spotting workdir holds.

  Attributes:
    workdir: its path.
    config: the run's config (config.json).
    results: its results.json.
    folds: {fold: {video_id: {"probabilities": (T, 3) float64, "intervals": [dict]}}}
      of the LOSO folds (fold "all" has no held-out videos and is left out).
  """
  workdir: str
  config: Any
  results: dict
  folds: dict


def load_run(workdir: str) -> FinishedRun:
  """Reads a finished LOSO spotting workdir; `NotAFinishedRunError` names the path at fault."""
  wd = workdir_lib.Workdir(workdir)
  hint = ("; re-scoring needs a finished run of python -m mer_jax.spotting.train "
          "--config=configs/spotting.py --workdir=DIR (with loso=true)")
  if not os.path.isdir(workdir):
    raise NotAFinishedRunError(f"{workdir!r} is not a directory{hint}")
  if not os.path.isfile(wd.config_json):
    raise NotAFinishedRunError(f"{wd.config_json} does not exist: {workdir!r} is not a "
                               f"spotting workdir{hint}")
  config = ml_collections.ConfigDict(workdir_lib.read_json(wd.config_json))
  if "peaks" not in config or "features" not in config or "train" not in config:
    raise NotAFinishedRunError(f"{wd.config_json} is not a spotting config (no 'peaks', "
                               f"'features' or 'train'){hint}")
  if not config.train.get("loso", True):
    raise NotAFinishedRunError(f"{wd.config_json}: the run trained fold 'all' only "
                               f"(train.loso=false), there are no held-out predictions{hint}")
  if not os.path.isfile(wd.results_json):
    raise NotAFinishedRunError(f"{wd.results_json} does not exist: the run in {workdir!r} has "
                               "not finished (rerun its training command to resume it)")
  results = workdir_lib.read_json(wd.results_json)
  if not isinstance(results, dict) or "spotting" not in results or "run_identity" not in results:
    raise NotAFinishedRunError(f"{wd.results_json} is not the results of a spotting run{hint}")
  folds = {}
  for fold in wd.fold_names():
    if fold == train.FINAL_FOLD:
      continue
    path = wd.predictions_json(fold)
    if not os.path.isfile(path):
      raise NotAFinishedRunError(f"{path} does not exist: fold {fold!r} has no stored "
                                 f"predictions{hint}")
    data = workdir_lib.read_json(path)
    if not isinstance(data, dict) or data.get("format") != train.FOLD_FORMAT:
      raise NotAFinishedRunError(f"{path}: not a spotting fold's predictions (format "
                                 f"{data.get('format') if isinstance(data, dict) else None!r}, "
                                 f"expected {train.FOLD_FORMAT!r})")
    if data.get("run_identity") != results["run_identity"]:
      raise NotAFinishedRunError(f"{path}: made under run identity {data.get('run_identity')!r},"
                                 f" {wd.results_json} under {results['run_identity']!r}")
    videos = {}
    for video_id, record in data["videos"].items():
      probabilities = np.asarray(record.get("probabilities", []), np.float64)
      if probabilities.ndim != 2 or probabilities.shape[1] != 3:
        raise NotAFinishedRunError(f"{path}: video {video_id!r} has no (T, 3) per-frame "
                                   f"probabilities (shape {probabilities.shape})")
      videos[video_id] = {"probabilities": probabilities, "intervals": record["intervals"]}
    folds[fold] = videos
  if len(folds) != results.get("num_folds"):
    raise NotAFinishedRunError(f"{workdir!r} holds {len(folds)} LOSO folds with predictions "
                               f"({sorted(folds)}), its results.json says "
                               f"{results.get('num_folds')}")
  return FinishedRun(os.fspath(workdir), config, results, folds)


def load_videos(run: FinishedRun, data_dir: Optional[str] = None) -> dict[str, data_lib.Video]:
  """The run's videos (truths, frames) from the feature cache (`data_dir`, default the run's:
  `train.feature_cache_dir`), with the codec copies it scored.

  Raises:
    NotAFinishedRunError: the videos are not those the run was scored on.
  """
  config = ml_collections.ConfigDict(run.config.to_dict())
  if data_dir is not None:
    config.dataset["data_dir" if train.is_synthetic(config) else "features_dir"] = data_dir
  source = train.source_name(config)
  videos, dataset = train.dataset_videos(config)
  if dataset != run.results["dataset"]:
    raise NotAFinishedRunError(
        f"{run.workdir!r} was scored on dataset {run.results['dataset']}, {source} now gives "
        f"{dataset} (the generator, the records or the feature settings changed since): its "
        "stored predictions do not belong to these videos")
  by_id = {v.video_id: v for v in videos}
  copies, copy_datasets = train.codec_copies(config, train.eval_codecs(config))
  for codec, identity in copy_datasets.items():
    stored = run.results.get("codecs", {}).get(codec, {}).get("dataset")
    if identity != stored:
      raise NotAFinishedRunError(
          f"{run.workdir!r} scored its {codec} copies on dataset {stored}, they now give "
          f"{identity} (the codec build or the feature settings changed since)")
  by_id.update({v.video_id: v for v in copies})
  missing = sorted({vid for fold in run.folds.values() for vid in fold} - set(by_id))
  if missing:
    raise NotAFinishedRunError(f"{run.workdir!r} holds predictions of videos {missing} that "
                               f"{source} does not have")
  return by_id


def run_params(run: FinishedRun) -> peaks_lib.PeakParams:
  """The peak parameters the run was scored with (`train.peak_params`: a run made before a
  field existed gets the behaviour from before it, so its own parameters reproduce its
  results.json)."""
  return train.peak_params(run.config)


def spotting_scores(run: FinishedRun, videos: Mapping[str, data_lib.Video],
                    params: peaks_lib.PeakParams) -> metrics.SpottingResult:
  """Pooled spotting P/R/F1 (by type and overall) of the lossless originals with `params`
  (codec copies are left out); no recognition needed."""
  truths, predicted = {}, {}
  for fold in run.folds.values():
    for video_id, record in fold.items():
      if codecs.codec_of(video_id):
        continue  # peak parameters are chosen on the lossless originals
      v = videos[video_id]
      truths[video_id] = v.truths
      predicted[video_id] = peaks_lib.find_intervals(record["probabilities"], v.fps, params)
  return metrics.evaluate_spotting(truths, predicted)


def grid_search(run: FinishedRun, videos: Mapping[str, data_lib.Video],
                grid: Mapping[str, Sequence[float]] = GRID,
                base: Optional[peaks_lib.PeakParams] = None) -> tuple[list[dict], dict]:
  """Scores every grid point by spotting F1; returns (rows, chosen parameters).

  Rows follow `itertools.product` over `grid` in its order; the chosen point
  has the highest overall F1, the earliest on ties. Fields not in `grid` keep
  `base`'s values (default the run's own).
  """
  rows = [{"peaks": dataclasses.asdict(params), **_scores_row(run, videos, params)}
          for params in _grid_points(grid, base or run_params(run))]
  best = max(range(len(rows)), key=lambda n: (rows[n]["overall"]["f1"], -n))
  return rows, rows[best]["peaks"]


def grid_search_runs(runs: Sequence[FinishedRun], videos: Sequence[Mapping[str, data_lib.Video]],
                     grid: Mapping[str, Sequence[float]] = GRID,
                     base: Optional[peaks_lib.PeakParams] = None) -> tuple[list[dict], dict]:
  """`grid_search` over several runs of one dev instance (other training seeds).

  Each point is scored on every run (`videos[i]` are `runs[i]`'s); the chosen
  point has the highest mean overall F1 over the runs (ties: the earliest), so
  one seed's luck weighs less in the choice. Rows: {"peaks", "mean_f1",
  "per_run": [{"workdir", "overall", "per_type", "macro_f1"}]}.

  Raises:
    ValueError: the runs were made with different configs or on different data.
  """
  first = runs[0]
  for run in runs[1:]:
    if run.results["dataset"] != first.results["dataset"]:
      raise ValueError(f"{run.workdir!r} was scored on {run.results['dataset']}, "
                       f"{first.workdir!r} on {first.results['dataset']}: a joint grid needs "
                       "runs of one instance")
    if run_params(run) != run_params(first):
      raise ValueError(f"{run.workdir!r} and {first.workdir!r} have different peak "
                       "parameters: a joint grid needs runs of one config (other seeds)")
  rows = []
  for params in _grid_points(grid, base or run_params(first)):
    per_run = [{"workdir": run.workdir, **_scores_row(run, v, params)}
               for run, v in zip(runs, videos)]
    rows.append({"peaks": dataclasses.asdict(params), "per_run": per_run,
                 "mean_f1": float(np.mean([r["overall"]["f1"] for r in per_run]))})
  best = max(range(len(rows)), key=lambda n: (rows[n]["mean_f1"], -n))
  return rows, rows[best]["peaks"]


def _grid_points(grid: Mapping[str, Sequence[float]], base: peaks_lib.PeakParams):
  """`base` with each combination of `grid`'s values, in `itertools.product` order."""
  unknown = sorted(set(grid) - {f.name for f in dataclasses.fields(peaks_lib.PeakParams)})
  if unknown:
    raise ValueError(f"grid fields {unknown} are not PeakParams fields")
  for values in itertools.product(*grid.values()):
    yield dataclasses.replace(base, **dict(zip(grid, values)))


def _scores_row(run: FinishedRun, videos: Mapping[str, data_lib.Video],
                params: peaks_lib.PeakParams) -> dict:
  scores = spotting_scores(run, videos, params)
  return {"overall": scores.overall.as_dict(),
          "per_type": {k: c.as_dict() for k, c in scores.per_type.items()},
          "macro_f1": scores.macro_f1}


def rescore(run: FinishedRun, videos: Mapping[str, data_lib.Video],
            params: peaks_lib.PeakParams) -> dict:
  """The run's results with `params`: intervals found again, recognised by each fold's model.

  Returns the trainer's results.json content (`train.loso_results`) for these
  parameters, plus "rescored_from" (the workdir and the run's own parameters).
  """
  outputs = {}
  for fold, fold_videos in sorted(run.folds.items()):
    predictor, _ = train.load_predictor(run.workdir, fold)
    for video_id, record in sorted(fold_videos.items()):
      v = videos[video_id]
      outputs[video_id] = {"intervals": predictor.intervals(record["probabilities"], v.grey(),
                                                            v.fps, params)}
  every = [videos[vid] for fold in run.folds.values() for vid in fold]
  copy_datasets = {c: r.get("dataset") for c, r in run.results.get("codecs", {}).items()}
  results = train.loso_results(run.config, run.results["dataset"], every, outputs,
                               dataclasses.asdict(params), run.results["run_identity"],
                               copy_datasets)
  results["rescored_from"] = {"workdir": os.path.abspath(run.workdir),
                              "run_peaks": dataclasses.asdict(run_params(run))}
  return results


def _summary(results: dict) -> dict:
  return {"peaks": results["peaks"], "overall": results["spotting"]["overall"],
          "per_type": {k: {m: c[m] for m in ("tp", "fp", "fn", "f1")}
                       for k, c in results["spotting"]["per_type"].items()},
          "strs": results["spot_then_recognise"]["strs"],
          **({"codecs": train.codec_summary(results)} if results.get("codecs") else {})}


def _boolean(text: str) -> bool:
  """A command-line boolean: true/false, 1/0, yes/no (any case)."""
  value = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(
      str(text).strip().lower())
  if value is None:
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
  return value


def params_from_file(path: str) -> dict:
  """Peak parameters from a `--grid` output ("chosen") or a results JSON ("peaks")."""
  data = workdir_lib.read_json(path)
  fields = {f.name for f in dataclasses.fields(peaks_lib.PeakParams)}
  for key in ("chosen", "peaks"):
    if isinstance(data, dict) and isinstance(data.get(key), dict):
      unknown = sorted(set(data[key]) - fields)
      if unknown:
        raise ValueError(f"{path}: {key!r} holds {unknown}, which are not PeakParams fields")
      return dict(data[key])
  raise ValueError(f"{path}: holds neither 'chosen' (a --grid output) nor 'peaks' (a results "
                   "JSON) peak parameters")


def chosen_params(base: peaks_lib.PeakParams, args: argparse.Namespace) -> peaks_lib.PeakParams:
  """`base` (the run's own), then the `--peaks_from` file's fields, then single flags.

  Fields the file lacks (an output made before a field existed, such as
  `drop_by_duration`) keep the run's own value.
  """
  params = base
  if args.peaks_from:
    params = dataclasses.replace(params, **params_from_file(args.peaks_from))
  overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(peaks_lib.PeakParams)
               if getattr(args, f.name) is not None}
  return dataclasses.replace(params, **overrides)


def build_parser(prog: str = "python -m mer_jax.spotting.rescore") -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0].strip())
  parser.add_argument("--workdir", required=True,
                      help="a finished LOSO spotting workdir; with --grid also several, "
                           "comma-separated (dev runs of one config, other seeds: the point "
                           "with the highest mean F1 is chosen, each run re-scored with it)")
  parser.add_argument("--out", required=True, help="the JSON file to write")
  parser.add_argument("--data_dir", default=None,
                      help="feature cache folder (default: the run's config.dataset.data_dir)")
  parser.add_argument("--grid", action="store_true",
                      help="score the stated grid by spotting F1 and re-score with the best "
                           "point (for dev runs)")
  parser.add_argument("--peaks_from", default=None,
                      help="take the peak parameters from a --grid output or a results JSON")
  for field in dataclasses.fields(peaks_lib.PeakParams):
    is_boolean = field.type in (bool, "bool")
    parser.add_argument(f"--{field.name}", type=_boolean if is_boolean else float, default=None,
                        help=f"PeakParams.{field.name}{' (true/false)' if is_boolean else ''} "
                             "(default: the run's own)")
  return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  workdirs = [w for w in args.workdir.split(",") if w]
  if len(workdirs) > 1 and not args.grid:
    parser.error("several --workdir values need --grid (a joint choice over dev runs)")
  try:
    runs = [load_run(w) for w in workdirs]
    params = chosen_params(run_params(runs[0]), args)
    videos = [load_videos(run, args.data_dir) for run in runs]
    out: dict = {"format": RESULTS_FORMAT}
    if args.grid:
      if len(runs) > 1:
        rows, chosen = grid_search_runs(runs, videos, GRID, params)
        rule = "highest mean overall spotting F1 over the runs; ties: the earlier grid point"
      else:
        rows, chosen = grid_search(runs[0], videos[0], GRID, params)
        rule = "highest overall spotting F1; ties: the earlier grid point"
      out.update(grid={k: list(v) for k, v in GRID.items()}, rule=rule, rows=rows,
                 chosen=chosen)
      params = peaks_lib.PeakParams(**chosen)
    if len(runs) == 1:
      out["results"] = rescore(runs[0], videos[0], params)
    else:
      out["results_per_run"] = {run.workdir: rescore(run, v, params)
                                for run, v in zip(runs, videos)}
  except (ValueError, FileNotFoundError, checkpoints.CheckpointError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  workdir_lib.atomic_write_text(args.out, json.dumps(out, indent=1, sort_keys=True) + "\n")
  summaries = ([out["results"]] if "results" in out else list(out["results_per_run"].values()))
  for results in summaries:
    print(json.dumps(_summary(results), indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
