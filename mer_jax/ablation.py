r"""Ablation runner: LOSO for several configs, one comparison table.

  python -m mer_jax.ablation --out_dir=/tmp/ablation --suite=synthetic \
      --folds=s00,s01,s02,s03
  python -m mer_jax.ablation --out_dir=DIR \
      --configs=configs/default.py,configs/default.py:head=gru \
      --num_train_steps=100 --set=dataset.data_dir=/tmp/tfds

Each config (a file with `get_config()`, optionally `path:config_string` as for
`mer_jax.main`) runs `train.train_and_evaluate` into `DIR/<config name>/`.
A workdir that already holds `results.json` for the same config is reused
without training; an interrupted one resumes (the trainer resumes folds). A
workdir holding a *different* config is an error, so results of two settings
are never mixed. Then `DIR/ablation.json` and `DIR/ablation.md` get one row
per config: pooled UF1 / UAR / accuracy, parameter count, median training
seconds per step, the folds run, and the differences to the baseline config
(by default the frames-only one: temporal head "mean", no magnification).
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import json
import os
import re
import statistics
import sys
import time
from typing import Any, Mapping, Optional, Sequence

from absl import app
from absl import flags
from absl import logging
import ml_collections

from mer_jax import logs
from mer_jax import workdir as workdir_lib

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Named lists of configs, paths relative to the repository root. The first
# entry of a suite is its baseline.
SUITES = {
    "synthetic": (
        # Order = priority when time is short (the runner resumes where it stopped).
        "configs/default.py",                     # Frames only: mean over frames.
        "configs/default.py:head=lstm",
        "configs/default.py:head=gru",
        "configs/default.py:head=tcn",
        "configs/default.py:head=temporal_softmax",
        "configs/default.py:pool=attention",      # Spatial attention on (mean head).
        "configs/default.py:magnify",             # Eulerian magnification on (mean head).
        "configs/default.py:head=bilstm",
        "configs/default.py:head=ed_tcn",
        "configs/default.py:head=bigru",
    ),
    "synthetic_extra": (
        "configs/default.py",
        "configs/default.py:head=frames",         # Frame-level training (paper Section 3.1).
        "configs/default.py:pool=attention,head=lstm",  # Attention on, LSTM head.
        "configs/default.py:head=lstm",           # Attention off, LSTM head.
    ),
}



@dataclasses.dataclass(frozen=True)
class ConfigSpec:
  """A config file and its optional config string (`path:string`)."""
  path: str
  config_string: Optional[str] = None

  @property
  def name(self) -> str:
    """Workdir / row name: the file stem, plus the config string made path-safe."""
    stem = os.path.splitext(os.path.basename(self.path))[0]
    if not self.config_string:
      return stem
    return f"{stem}-{re.sub(r'[^A-Za-z0-9_.]+', '-', self.config_string).strip('-')}"

  def __str__(self) -> str:
    return f"{self.path}:{self.config_string}" if self.config_string else self.path


def split_config_list(text: str) -> list[str]:
  """Splits `--configs` at commas, except commas inside a config string.

  `"configs/a.py,configs/p.py:bilstm,15,configs/b.py"` -> `["configs/a.py",
  "configs/p.py:bilstm,15", "configs/b.py"]`: a new entry starts only where the
  text after a comma names a `.py` file.
  """
  return [part.strip() for part in re.split(r",(?=[^,:]*\.py(?::|,|$))", text) if part.strip()]


def parse_spec(text: str) -> ConfigSpec:
  """`"path.py"` or `"path.py:config_string"` -> `ConfigSpec`."""
  path, sep, config_string = text.partition(":")
  if not path.endswith(".py"):
    raise ValueError(f"config {text!r}: expected a Python config file 'path.py' or "
                     f"'path.py:config_string'")
  return ConfigSpec(path, config_string if sep else None)


def resolve_path(path: str) -> str:
  """The config file: as given (relative to the working directory), else in the repo."""
  candidates = [path] if os.path.isabs(path) else [path, os.path.join(REPO_ROOT, path)]
  for candidate in candidates:
    if os.path.isfile(candidate):
      return os.path.abspath(candidate)
  raise ValueError(f"config file {path!r} not found (looked in {os.getcwd()} and {REPO_ROOT}); "
                   f"named suites: {sorted(SUITES)}")


def load_config(spec: ConfigSpec) -> ml_collections.ConfigDict:
  """Imports the config file and calls its `get_config([config_string])`.

  Raises:
    ValueError: the file is missing, does not import, has no `get_config`, or
      `get_config` rejects the config string.
  """
  path = resolve_path(spec.path)
  module_spec = importlib.util.spec_from_file_location(f"_ablation_config_{spec.name}", path)
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"config file {path}: cannot import it: {type(e).__name__}: {e}") from e
  if not hasattr(module, "get_config"):
    raise ValueError(f"config file {path} defines no get_config()")
  try:
    config = (module.get_config(spec.config_string) if spec.config_string is not None
              else module.get_config())
  except ValueError as e:
    raise ValueError(f"config {spec}: {e}") from e
  if not isinstance(config, ml_collections.ConfigDict):
    raise ValueError(f"config {spec}: get_config() returned {type(config).__name__}, "
                     "not an ml_collections.ConfigDict")
  return config


def parse_value(text: str) -> Any:
  """A command-line value: a Python literal (`3`, `0.1`, `('s00',)`, `None`) or a string."""
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def apply_overrides(config: ml_collections.ConfigDict, overrides: Mapping[str, Any]) -> None:
  """Sets dotted fields (`"dataset.data_dir"`) in place; unknown fields are errors."""
  for key, value in overrides.items():
    *parents, leaf = key.split(".")
    target = config
    try:
      for parent in parents:
        target = target[parent]
      if leaf not in target:
        raise KeyError(leaf)
      target[leaf] = value
    except KeyError as e:
      raise ValueError(f"override {key}={value!r}: the config has no field {key!r}") from e
    except TypeError as e:
      raise ValueError(f"override {key}={value!r}: {e}") from e


def count_parameters(config: ml_collections.ConfigDict) -> int:
  """Trainable parameters of the config's model (shapes only: nothing is computed)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from clu import parameter_overview  # pylint: disable=import-outside-toplevel
  from mer_jax import schema  # pylint: disable=import-outside-toplevel
  from mer_jax import train_state  # pylint: disable=import-outside-toplevel
  from mer_jax.models import create_model  # pylint: disable=import-outside-toplevel

  model = create_model(train_state.model_config(config), num_classes=schema.NUM_CLASSES)
  size = config.input.image_size
  if config.input.get("representation", "frames") == "flow":
    # A one-frame "clip" of float flow features (mer_jax.motion_input).
    channels = 6 if config.flow.apex_offset else 3
    frames, example = 1, jnp.zeros((1, 1, size, size, channels), jnp.float32)
  else:
    frames = config.input.num_frames
    example = jnp.zeros((1, frames, size, size, 3), jnp.uint8)
  shapes = jax.eval_shape(
      lambda rng: model.init(rng, example, jnp.ones((1, frames), bool), train=False),
      jax.random.key(0))
  return int(parameter_overview.count_parameters(shapes["params"]))


def median_seconds_per_step(workdir: str) -> Optional[float]:
  """Median of 1 / steps_per_sec logged by the trainer's progress reports.

  Each value is the mean time per training step over one logging interval of
  the run (data input, the jitted step, checkpointing; the first step of a
  fold, which compiles, is excluded: `metric_writers.FoldProgress`). None if nothing was logged.
  """
  from mer_jax import metric_writers  # pylint: disable=import-outside-toplevel
  rates = metric_writers.read_scalars(workdir).get(metric_writers.STEPS_PER_SEC_TAG, [])
  values = [1.0 / rate for _, rate in rates if rate > 0]
  return statistics.median(values) if values else None


def _read_json(path: str) -> Optional[dict]:
  return workdir_lib.read_json(path) if os.path.exists(path) else None


def run_config(spec: ConfigSpec, config: ml_collections.ConfigDict, out_dir: str,
               run_name: Optional[str] = None, *, train_missing: bool = True
               ) -> Optional[dict]:
  """Trains (or reuses) one config in `out_dir/<run_name or spec.name>`; returns its table row.

  With `train_missing=False` nothing is trained: a workdir without a finished
  run gives None (a workdir of another config is still an error).
  """
  from mer_jax import train  # pylint: disable=import-outside-toplevel

  workdir = os.path.join(out_dir, run_name or spec.name)
  run_dir = workdir_lib.Workdir(workdir)
  differences = run_dir.differences(workdir_lib.config_identity(config))
  if differences:
    raise ValueError(
        f"workdir {workdir} holds a run of a different config ({spec}); refusing to mix "
        "results. Use another --out_dir or delete that workdir. Differences:\n  "
        + "\n  ".join(differences))
  results = _read_json(run_dir.results_json)
  reused = results is not None
  if not reused and not train_missing:
    return None
  if reused:
    logging.info("%s: finished run found in %s, reusing it", spec.name, workdir)
  else:
    logging.info("%s: training in %s", spec.name, workdir)
    results = train.train_and_evaluate(config, workdir)
    if not results:  # Only process 0 writes and returns results.
      results = _read_json(run_dir.results_json)
  timing = _read_json(run_dir.timing_json) or {}
  overall = results["overall"]
  model = config.model
  return {
      "name": spec.name,
      "config": str(spec),
      "encoder": model.encoder,
      "spatial_pool": model.get("spatial_pool", "mean"),
      "temporal_head": model.get("temporal_head", "mean"),
      "temporal_head_kwargs": dict(model.get("temporal_head_kwargs") or {}),
      "magnify": bool(model.get("magnify", None)),
      "num_params": count_parameters(config),
      "seconds_per_step": median_seconds_per_step(workdir),
      "num_train_steps": config.num_train_steps,
      "wall_seconds": timing.get("wall_seconds_this_run"),
      # Test subjects (`dataset/subject`); fold names are the same with "__" for "/".
      "folds": sorted({p["fold"].replace("__", "/", 1) for p in results["predictions"]}),
      "num_samples": overall["num_samples"],
      "uf1": overall["uf1"],
      "uar": overall["uar"],
      "accuracy": overall["accuracy"],
      "per_dataset": {name: {"uf1": s["uf1"], "uar": s["uar"], "num_samples": s["num_samples"]}
                      for name, s in results.get("per_dataset", {}).items()},
      "seed": config.seed,
      "reused": reused,
      "workdir": workdir,
      "_predictions": {(p["dataset"], p["clip_id"]): p["label"] == p["prediction"]
                       for p in results["predictions"]},
  }


def aggregate_seeds(rows: Sequence[dict]) -> dict:
  """One row from the same config's runs under several seeds: means, standard deviations.

  Scores are the means over seeds of each seed's pooled LOSO score; `*_std`
  the sample standard deviation (0 for one seed); `per_seed` keeps each
  seed's scores; wall seconds add up. Paired clip counts use the first seed.
  """
  first = dict(rows[0])
  for metric in ("uf1", "uar", "accuracy"):
    values = [r[metric] for r in rows]
    first[metric] = statistics.fmean(values)
    first[f"{metric}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
  datasets = sorted({d for r in rows for d in r["per_dataset"]})
  first["per_dataset"] = {}
  for name in datasets:
    entry = {}
    for metric in ("uf1", "uar"):
      values = [r["per_dataset"][name][metric] for r in rows if name in r["per_dataset"]]
      entry[metric] = statistics.fmean(values)
      entry[f"{metric}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    first["per_dataset"][name] = entry
  first["seeds"] = [r["seed"] for r in rows]
  first["per_seed"] = [{k: r[k] for k in ("seed", "uf1", "uar", "accuracy", "per_dataset",
                                          "wall_seconds", "workdir")} for r in rows]
  walls = [r["wall_seconds"] for r in rows if r["wall_seconds"] is not None]
  first["wall_seconds"] = sum(walls) if walls else None
  first["workdir"] = os.path.dirname(rows[0]["workdir"])
  first["reused"] = all(r["reused"] for r in rows)
  return first


def default_baseline(rows: Sequence[dict]) -> Optional[str]:
  """The first frames-only row: temporal head "mean", no magnification."""
  for row in rows:
    if row["temporal_head"] == "mean" and not row["magnify"]:
      return row["name"]
  return None


def add_deltas(rows: list[dict], baseline: Optional[str]) -> None:
  """Adds score differences to the baseline row and paired clip counts, in place.

  `clips_won` / `clips_lost`: test clips this config classifies correctly and
  the baseline does not, and the reverse (a paired view of the same folds).
  Rows with other folds than the baseline get no deltas.
  """
  base = next((r for r in rows if r["name"] == baseline), None)
  for row in rows:
    comparable = base is not None and row["folds"] == base["folds"]
    for metric in ("uf1", "uar", "accuracy"):
      row[f"delta_{metric}"] = row[metric] - base[metric] if comparable else None
    if comparable:
      shared = row["_predictions"].keys() & base["_predictions"].keys()
      row["clips_won"] = sum(row["_predictions"][k] and not base["_predictions"][k]
                             for k in shared)
      row["clips_lost"] = sum(base["_predictions"][k] and not row["_predictions"][k]
                              for k in shared)
    else:
      row["clips_won"] = row["clips_lost"] = None


def _fmt(value: Any, digits: int = 3, signed: bool = False) -> str:
  if value is None:
    return "-"
  if isinstance(value, float):
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
  return str(value)


def _with_std(row: Mapping[str, Any], metric: str) -> str:
  value = _fmt(row[metric])
  if row.get(f"{metric}_std") is not None and len(row.get("seeds", ())) > 1:
    value += f" ± {row[f'{metric}_std']:.3f}"
  return value


def markdown_report(rows: Sequence[dict], baseline: Optional[str], protocol: Mapping[str, Any]
                    ) -> str:
  """The ablation table in Markdown (mean ± standard deviation over seeds when several ran)."""
  lines = ["# Ablation", ""]
  lines += [f"- {key}: {value}" for key, value in protocol.items()]
  lines += [f"- baseline for the deltas: `{baseline}`" if baseline else
            "- no baseline (no frames-only config in the run): deltas omitted", ""]
  lines.append("| config | spatial pool | temporal head | magnify | params | s/step | UF1 | UAR "
               "| accuracy | ΔUF1 | ΔUAR | Δacc | clips +/- | wall s | folds |")
  lines.append("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
  for r in rows:
    won_lost = "-" if r["clips_won"] is None else f"+{r['clips_won']}/-{r['clips_lost']}"
    folds = ",".join(f.split("/", 1)[-1] for f in r["folds"])
    lines.append(
        f"| `{r['name']}` | {r['spatial_pool']} | {r['temporal_head']} | "
        f"{'on' if r['magnify'] else 'off'} | {r['num_params']:,} | "
        f"{_fmt(r['seconds_per_step'])} | {_with_std(r, 'uf1')} | {_with_std(r, 'uar')} | "
        f"{_with_std(r, 'accuracy')} | {_fmt(r['delta_uf1'], signed=True)} | "
        f"{_fmt(r['delta_uar'], signed=True)} | {_fmt(r['delta_accuracy'], signed=True)} | "
        f"{won_lost} | {_fmt(r['wall_seconds'], 0)} | {folds} |")
  datasets = sorted({d for r in rows for d in r.get("per_dataset", {})})
  if len(datasets) > 1:
    lines += ["", "Per dataset (pooled over that dataset's folds; UF1 / UAR):", "",
              "| config | " + " | ".join(datasets) + " |",
              "|---|" + "---:|" * len(datasets)]
    for r in rows:
      cells = []
      for name in datasets:
        s = r["per_dataset"].get(name)
        cells.append("-" if s is None else f"{_with_std(s | {'seeds': r.get('seeds', ())}, 'uf1')}"
                     f" / {_with_std(s | {'seeds': r.get('seeds', ())}, 'uar')}")
      lines.append(f"| `{r['name']}` | " + " | ".join(cells) + " |")
  lines += ["", "UF1 / UAR / accuracy: predictions pooled over the folds, scored once"
            + ("; mean ± standard deviation over seeds " + str(protocol.get("seeds"))
               if protocol.get("seeds") else "") + ". s/step: "
            "median over the run's logging intervals of wall seconds per training step. clips "
            "+/-: test clips right here and wrong in the baseline / the reverse. wall s: the "
            "config's last train_and_evaluate call (all its folds unless it resumed).", ""]
  return "\n".join(lines)


def run_ablation(specs: Sequence[ConfigSpec], out_dir: str, *,
                 overrides: Optional[Mapping[str, Any]] = None,
                 baseline: Optional[str] = None,
                 seeds: Optional[Sequence[int]] = None) -> dict:
  """Runs every config and writes `out_dir/ablation.json` and `out_dir/ablation.md`.

  Args:
    specs: the configs, in table order.
    out_dir: one workdir per config is made under it.
    overrides: dotted config fields set in every config before running
      (e.g. `{"folds": ("s00", "s01"), "num_train_steps": 100}`).
    baseline: the row name the deltas refer to; None picks the first
      frames-only config (temporal head "mean", no magnification).
    seeds: run every config once per seed (`config.seed`), each in
      `out_dir/<name>/seed<k>/`, and report means and standard deviations;
      None runs each config once with its own seed, in `out_dir/<name>/`.

  Returns:
    The dict written to ablation.json: `protocol`, `baseline`, `rows` (one per
    config, see `run_config`, plus `delta_uf1`, `delta_uar`, `delta_accuracy`,
    `clips_won`, `clips_lost`).

  Raises:
    ValueError: a config that cannot be loaded, a bad override, two configs
      with the same name, an unknown baseline, or a workdir of another config.
      Every config is loaded and validated before any training starts.
  """
  from mer_jax import config_checks  # pylint: disable=import-outside-toplevel

  if not specs:
    raise ValueError("no configs to run: pass --configs or --suite")
  names = [s.name for s in specs]
  duplicates = sorted({n for n in names if names.count(n) > 1})
  if duplicates:
    raise ValueError(f"configs with the same name (workdir) {duplicates}: rename one")
  if baseline is not None and baseline not in names:
    raise ValueError(f"baseline {baseline!r} is not one of the configs run: {names}")
  configs = []
  for spec in specs:
    config = load_config(spec)
    apply_overrides(config, overrides or {})
    config_checks.validate_config(config, os.path.join(out_dir, spec.name))
    configs.append(config)

  os.makedirs(out_dir, exist_ok=True)
  start = time.time()
  if seeds:
    rows = []
    for spec, config in zip(specs, configs):
      seeded = []
      for seed in seeds:
        run = ml_collections.ConfigDict(config.to_dict())
        run.seed = int(seed)
        seeded.append(run_config(spec, run, os.path.join(out_dir, spec.name), f"seed{seed}"))
      rows.append(aggregate_seeds(seeded))
  else:
    rows = [run_config(spec, config, out_dir) for spec, config in zip(specs, configs)]
  baseline = baseline or default_baseline(rows)
  add_deltas(rows, baseline)
  for row in rows:
    del row["_predictions"]
  first = configs[0]
  protocol = {
      "protocol": "leave-one-subject-out, fixed schedule, predictions pooled over folds",
      "dataset": f"{first.dataset.name}/{first.dataset.builder_config}",
      "folds": sorted({f for r in rows for f in r["folds"]}),
      "num_train_steps": sorted({c.num_train_steps for c in configs}),
      "shared settings (first config)": (
          f"encoder {first.model.encoder} {dict(first.model.encoder_kwargs or {})}, "
          f"input_mode {first.model.get('input_mode', 'rgb')}, N = {first.input.num_frames} "
          f"frames of {first.input.image_size} px, batch {first.batch_size}, "
          f"{first.optimizer} lr {first.learning_rate}"),
      "seeds": list(seeds) if seeds else None,
      "wall_seconds_this_invocation": round(time.time() - start, 1),
      "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
  }
  report = {"protocol": protocol, "baseline": baseline, "rows": rows}
  workdir_lib.atomic_write_text(os.path.join(out_dir, "ablation.json"),
                                json.dumps(report, indent=2) + "\n")
  workdir_lib.atomic_write_text(os.path.join(out_dir, "ablation.md"),
                                markdown_report(rows, baseline, protocol))
  return report


# --------------------------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------------------------

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command-line flags, defined only when this module is the program (so that
  `mer_jax.ablation` and `mer_jax.baselines` can be imported together)."""
  flags.DEFINE_string("out_dir", None, "Directory of the per-config workdirs and the report.")
  flags.DEFINE_string("configs", None, "Comma-separated config files, each 'path.py' or "
                      "'path.py:config_string' (e.g. configs/paper_s32.py:head=bilstm,frames=15).")
  flags.DEFINE_enum("suite", None, sorted(SUITES), "A named list of configs (see SUITES).")
  flags.DEFINE_list("folds", None, "Test subjects to run (config.folds) for every config, "
                    "e.g. s00,s01,s02,s03.")
  flags.DEFINE_integer("num_train_steps", None, "config.num_train_steps for every config.")
  flags.DEFINE_multi_string("set", [], "KEY=VALUE: set a config field in every config, e.g. "
                            "--set=dataset.data_dir=/tmp/tfds (values are Python literals or "
                            "strings). Repeatable.")
  flags.DEFINE_string("baseline", None, "Row name the deltas refer to (default: the first "
                      "frames-only config).")
  flags.DEFINE_list("seeds", None, "Run every config once per seed (e.g. 0,1,2) and report the "
                    "mean and standard deviation over seeds.")
  flags.mark_flag_as_required("out_dir")


def specs_from_flags() -> list[ConfigSpec]:
  """The configs named by --suite and --configs (suite first)."""
  entries = list(SUITES[FLAGS.suite]) if FLAGS.suite else []
  entries += split_config_list(FLAGS.configs) if FLAGS.configs else []
  return [parse_spec(entry) for entry in entries]


def overrides_from_flags() -> dict[str, Any]:
  """--set, --folds and --num_train_steps as dotted field overrides."""
  overrides = {}
  for item in FLAGS.set:
    key, sep, value = item.partition("=")
    if not sep or not key:
      raise app.UsageError(f"--set expects KEY=VALUE, got {item!r}")
    overrides[key.strip()] = parse_value(value)
  if FLAGS.folds:
    overrides["folds"] = tuple(FLAGS.folds)
  if FLAGS.num_train_steps is not None:
    overrides["num_train_steps"] = FLAGS.num_train_steps
  return overrides


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
  logs.quiet_library_logs()
  seeds = [int(s) for s in FLAGS.seeds] if FLAGS.seeds else None
  report = run_ablation(specs_from_flags(), FLAGS.out_dir, overrides=overrides_from_flags(),
                        baseline=FLAGS.baseline, seeds=seeds)
  print(markdown_report(report["rows"], report["baseline"], report["protocol"]))


if __name__ == "__main__":
  define_flags()
  app.run(main)
