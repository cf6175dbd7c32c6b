"""The run directory: every path in it, atomic writes, and the run's identity.

Layout (process 0 writes everything):

  config.json                      the resolved config (for people and `gradcam_report`)
  run_identity.json                what the results depend on (see `RunIdentity`)
  folds/<fold>/checkpoints/        Orbax checkpoints of the fold's train state
  folds/<fold>/layer_selection.json  the fold's Grad-CAM choice of l_s (policy II/III "auto")
  folds/<fold>/predictions.json    the fold's test predictions; marks it done
  results.json, results.md         pooled scores, per class, per dataset
  confusion_matrix.png, megc_predictions.txt, timing.json
  gradcam/                         `mer_jax.gradcam_report` output
  superseded/<UTC time>/           an earlier run moved aside (`resume_mismatch="move_aside"`)
  events.out.tfevents.*            TensorBoard scalars

Every module that reads or writes a run directory asks a `Workdir` for the path.

**Run identity.** A workdir belongs to one run: the config fields that change
results (all but `RESULT_INSENSITIVE_FIELDS`), the dataset (name, version and
a fingerprint of its records) and the package version. `claim` refuses a rerun
whose identity differs, naming the fields, before any compute, unless asked to
move the earlier run aside; each fold's predictions file carries the digest of
the identity it was made under, and `read_fold_predictions` checks it (and the
fold name and clip ids) before the fold is pooled.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import shutil
from typing import Any, Mapping, Optional, Sequence

# Config fields that do not change what a run computes: paths, logging cadence,
# cluster set-up and this module's own switch. Everything else is identity.
# Where the data lives and how fast it is read or logged; never what a model sees (the Grain
# stream is the same with any number of workers or threads, tests/test_grain_pipeline.py).
RESULT_INSENSITIVE_FIELDS = ("dataset.data_dir", "dataset.manual_dir", "dataset.build_if_missing",
                             "dataset.features_dir",
                             "log_every_steps", "resume_mismatch", "input.num_workers",
                             "input.num_threads", "input.cache_records",
                             "input.resident_max_mib")  # a memory limit, not a setting
RESULT_INSENSITIVE_PREFIXES = ("distributed.",)
RESUME_MISMATCH_RULES = ("refuse", "move_aside")
PREDICTIONS_FORMAT = "mer_jax.fold_predictions/1"


class WorkdirMismatchError(ValueError):
  """The workdir holds a run with another identity (or a predictions file that does not fit)."""


def atomic_write_text(path: str, text: str) -> None:
  """Writes `text` to `path` so that a killed process never leaves a half file."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp.{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def read_json(path: str) -> Any:
  """The JSON content of `path`; a ValueError names the file if it is not valid JSON."""
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: not valid JSON ({e}); the file is damaged (a truncated write?)"
                     ) from e
  except IsADirectoryError as e:
    raise ValueError(f"{path} is a directory, expected a JSON file") from e


def flat_fields(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """`{"a": {"b": 1}}` -> `{"a.b": 1}`; tuples become lists (JSON's view of a config)."""
  result: dict[str, Any] = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, Mapping):
      result.update(flat_fields(value, f"{name}."))
    else:
      result[name] = json.loads(json.dumps(value, default=_json_default))
  return result


def _json_default(value: Any) -> Any:
  if isinstance(value, (set, frozenset)):
    return sorted(value)
  if hasattr(value, "tolist"):
    return value.tolist()
  return str(value)


def result_fields(config: Any) -> dict[str, Any]:
  """The config's fields that change results (flat, JSON values)."""
  tree = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  return {k: v for k, v in flat_fields(tree).items()
          if k not in RESULT_INSENSITIVE_FIELDS
          and not k.startswith(RESULT_INSENSITIVE_PREFIXES)}


@dataclasses.dataclass(frozen=True)
class RunIdentity:
  """What a run's results depend on.

  Attributes:
    config: `result_fields(config)`.
    dataset: `{"name", "version", "split", "fingerprint"}`, or None before the
      dataset has been read.
    package_version: `mer_jax.__version__`.
  """
  config: Mapping[str, Any]
  dataset: Optional[Mapping[str, Any]]
  package_version: str

  def to_json(self) -> dict[str, Any]:
    return {"config": dict(self.config), "dataset": dict(self.dataset) if self.dataset else None,
            "package_version": self.package_version}

  @property
  def digest(self) -> str:
    """A short hash of the whole identity (stored in every fold's predictions file)."""
    text = json.dumps(self.to_json(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]

  def differences(self, other: "RunIdentity") -> list[str]:
    """Human-readable differences `field: theirs -> ours`, sorted by field.

    Dataset fields are compared only when both identities have a dataset.
    """
    diffs = []
    mine, theirs = dict(self.config), dict(other.config)
    for key in sorted(mine.keys() | theirs.keys()):
      if mine.get(key, "<absent>") != theirs.get(key, "<absent>"):
        diffs.append(f"config.{key}: {theirs.get(key, '<absent>')!r} -> "
                     f"{mine.get(key, '<absent>')!r}")
    if self.dataset and other.dataset:
      for key in sorted(set(self.dataset) | set(other.dataset)):
        if self.dataset.get(key) != other.dataset.get(key):
          diffs.append(f"dataset {key}: {other.dataset.get(key)!r} -> {self.dataset.get(key)!r}")
    if self.package_version != other.package_version:
      diffs.append(f"mer_jax version: {other.package_version!r} -> {self.package_version!r}")
    return diffs

  @classmethod
  def from_json(cls, data: Mapping[str, Any]) -> "RunIdentity":
    return cls(config=dict(data["config"]), dataset=data.get("dataset"),
               package_version=str(data["package_version"]))


def config_identity(config: Any) -> RunIdentity:
  """The identity of a run of `config`, without the dataset part."""
  from mer_jax import __version__  # pylint: disable=import-outside-toplevel
  return RunIdentity(config=result_fields(config), dataset=None, package_version=__version__)


class Workdir:
  """Paths of one run directory, atomic writes, and the run identity check."""

  def __init__(self, root: str):
    if os.path.exists(root) and not os.path.isdir(root):
      raise ValueError(f"workdir {root!r} exists and is a file, not a directory")
    self.root = root

  # ---- paths -------------------------------------------------------------------------------
  def path(self, *parts: str) -> str:
    return os.path.join(self.root, *parts)

  @property
  def config_json(self) -> str:
    return self.path("config.json")

  @property
  def identity_json(self) -> str:
    return self.path("run_identity.json")

  @property
  def results_json(self) -> str:
    return self.path("results.json")

  @property
  def results_md(self) -> str:
    return self.path("results.md")

  @property
  def timing_json(self) -> str:
    return self.path("timing.json")

  @property
  def confusion_png(self) -> str:
    return self.path("confusion_matrix.png")

  @property
  def megc_log(self) -> str:
    return self.path("megc_predictions.txt")

  @property
  def gradcam_dir(self) -> str:
    return self.path("gradcam")

  def fold_dir(self, fold: str) -> str:
    return self.path("folds", fold)

  def checkpoints_dir(self, fold: str) -> str:
    return os.path.abspath(self.path("folds", fold, "checkpoints"))

  def predictions_json(self, fold: str) -> str:
    return self.path("folds", fold, "predictions.json")

  def layer_selection_json(self, fold: str) -> str:
    return self.path("folds", fold, "layer_selection.json")

  def fold_names(self) -> list[str]:
    """Folds that have a directory, sorted."""
    folds = self.path("folds")
    return sorted(os.listdir(folds)) if os.path.isdir(folds) else []

  # ---- writing -----------------------------------------------------------------------------
  def write_text(self, path: str, text: str) -> None:
    atomic_write_text(path, text)

  def write_json(self, path: str, value: Any, *, indent: int = 2, sort_keys: bool = True) -> None:
    atomic_write_text(path, json.dumps(value, indent=indent, sort_keys=sort_keys) + "\n")

  def write_config(self, config: Any) -> None:
    text = (config.to_json_best_effort(indent=2, sort_keys=True) if hasattr(
        config, "to_json_best_effort") else json.dumps(config, indent=2, sort_keys=True))
    atomic_write_text(self.config_json, text + "\n")

  # ---- identity ----------------------------------------------------------------------------
  def recorded_identity(self) -> Optional[RunIdentity]:
    """The identity this workdir was claimed with, or None for a new workdir.

    A workdir written before identities existed (config.json only) yields its
    config part, so a changed config is still caught.
    """
    if os.path.exists(self.identity_json):
      data = read_json(self.identity_json)
      try:
        return RunIdentity.from_json(data)
      except (KeyError, TypeError) as e:
        raise ValueError(f"{self.identity_json}: not a run identity ({e})") from e
    if os.path.exists(self.config_json):
      return RunIdentity(config=result_fields(read_json(self.config_json)), dataset=None,
                         package_version="<unrecorded>")
    return None

  def has_run(self) -> bool:
    """True when an earlier run left anything this run could mix with."""
    return any(os.path.exists(p) for p in (self.identity_json, self.config_json,
                                           self.results_json, self.path("folds")))

  def differences(self, identity: RunIdentity,
                  recorded: Optional[RunIdentity] = None) -> list[str]:
    """How `identity` differs from the run recorded here ([] for a new or the same run)."""
    recorded = recorded or self.recorded_identity()
    if recorded is None:
      # Folds or results without any record of what produced them cannot be trusted.
      return (["no run_identity.json or config.json beside the earlier run's files"]
              if self.has_run() else [])
    diffs = identity.differences(recorded)
    if recorded.package_version == "<unrecorded>":
      diffs = [d for d in diffs if not d.startswith("mer_jax version")]
    return diffs

  def claim(self, identity: RunIdentity, *, on_mismatch: str = "refuse") -> None:
    """Checks that this workdir holds no run of another identity, then records `identity`.

    Call once with the config part (before any data is touched) and again with
    the dataset part. An identical identity resumes. A different one raises
    `WorkdirMismatchError` naming the differing fields, unless `on_mismatch` is
    "move_aside": then the earlier run's files move to `superseded/<UTC time>/`
    (never deleted) and this run starts afresh.
    """
    if on_mismatch not in RESUME_MISMATCH_RULES:
      raise ValueError(f"config.resume_mismatch must be one of {RESUME_MISMATCH_RULES}, got "
                       f"{on_mismatch!r}")
    recorded = self.recorded_identity()
    diffs = self.differences(identity, recorded)
    if diffs:
      if on_mismatch == "refuse":
        listed = "\n  ".join(diffs[:20]) + (f"\n  ... and {len(diffs) - 20} more"
                                             if len(diffs) > 20 else "")
        raise WorkdirMismatchError(
            f"workdir {self.root!r} holds a run with a different identity:\n  {listed}\n"
            "Its finished folds would be pooled with this run's. Use a new --workdir, rerun "
            "with the earlier settings, or pass --config.resume_mismatch=move_aside to move the "
            "earlier run to superseded/ inside the workdir (nothing is deleted).")
      moved = self.move_aside()
      from absl import logging  # pylint: disable=import-outside-toplevel
      logging.warning("workdir %s: run identity changed (%s); the earlier run was moved to %s",
                      self.root, "; ".join(diffs[:5]), moved)
    os.makedirs(self.root, exist_ok=True)
    merged = identity
    if identity.dataset is None and recorded is not None and not diffs:
      merged = dataclasses.replace(identity, dataset=recorded.dataset)
    self.write_json(self.identity_json, merged.to_json())

  def move_aside(self) -> str:
    """Moves every entry of the workdir (but `superseded/`) to `superseded/<UTC time>/`."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    target = self.path("superseded", stamp)
    os.makedirs(target)
    for name in sorted(os.listdir(self.root)):
      if name != "superseded":
        shutil.move(self.path(name), os.path.join(target, name))
    return target

  # ---- fold predictions --------------------------------------------------------------------
  def write_fold_predictions(self, fold: str, identity_digest: str,
                             predictions: Sequence[Mapping[str, Any]]) -> None:
    """Writes a fold's predictions with its name, clip ids and run identity digest."""
    self.write_json(self.predictions_json(fold), {
        "format": PREDICTIONS_FORMAT, "fold": fold, "run_identity": identity_digest,
        "clip_ids": sorted(p["clip_id"] for p in predictions),
        "predictions": list(predictions)}, indent=1, sort_keys=False)

  def read_fold_predictions(self, fold: str, identity_digest: str,
                            expected_clip_ids: Sequence[str]) -> Optional[list[dict]]:
    """A finished fold's predictions, verified; None when the fold has not finished.

    Raises:
      WorkdirMismatchError: naming the file, when it is not this fold's, was
        made under another run identity, or does not hold exactly one
        prediction for each of `expected_clip_ids`.
    """
    path = self.predictions_json(fold)
    if not os.path.lexists(path):
      return None
    redo = (f" Delete {self.fold_dir(fold)!r} to train fold {fold} again, or use a new "
            "--workdir.")
    try:
      data = read_json(path)
    except (ValueError, OSError) as e:
      raise WorkdirMismatchError(f"{e}.{redo}") from e
    if not isinstance(data, dict) or data.get("format") != PREDICTIONS_FORMAT:
      raise WorkdirMismatchError(f"{path}: not a mer_jax fold predictions file (expected an "
                                 f"object with format {PREDICTIONS_FORMAT!r}).{redo}")
    if data.get("fold") != fold:
      raise WorkdirMismatchError(f"{path}: holds the predictions of fold "
                                 f"{data.get('fold')!r}, not of fold {fold!r}.{redo}")
    if data.get("run_identity") != identity_digest:
      raise WorkdirMismatchError(f"{path}: made under run identity {data.get('run_identity')!r}, "
                                 f"this run is {identity_digest!r}.{redo}")
    predictions = data.get("predictions")
    if not isinstance(predictions, list):
      raise WorkdirMismatchError(f"{path}: 'predictions' is not a list.{redo}")
    ids = sorted(str(p.get("clip_id")) for p in predictions if isinstance(p, dict))
    expected = sorted(expected_clip_ids)
    if ids != expected or sorted(data.get("clip_ids") or []) != expected:
      missing = sorted(set(expected) - set(ids))
      extra = sorted(set(ids) - set(expected))
      raise WorkdirMismatchError(
          f"{path}: the predictions do not cover the held-out clips of fold {fold} exactly once "
          f"({len(ids)} predictions for {len(expected)} clips; missing {missing[:5]}, unexpected "
          f"{extra[:5]}).{redo}")
    for p in predictions:
      if not {"label", "prediction", "dataset", "subject", "probabilities"} <= set(p):
        raise WorkdirMismatchError(f"{path}: prediction of clip {p.get('clip_id')!r} lacks "
                                   f"fields.{redo}")
    return predictions
