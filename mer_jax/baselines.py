r"""The baselines table: every reference method on the synthetic_me tiers, one command.

  python -m mer_jax.baselines --out_dir=/tmp/baselines --doc=docs/baselines.md
  python -m mer_jax.baselines --out_dir=/tmp/baselines --rows=chance_uniform,flow_linear \
      --tiers=default --seeds=0,1,2
  python -m mer_jax.baselines --out_dir=/tmp/baselines --rows=resnet50_lstm   # accelerator
  python -m mer_jax.baselines --out_dir=/tmp/baselines --report_only --doc=docs/baselines.md
  python -m mer_jax.baselines --out_dir=DIR --set=dataset.data_dir=/data/tfds   # any field

Rows (`ROWS`): two chance levels computed from the labels, the onset frame
alone (the no-label-leak check: it must stay at chance), a pixel-difference
linear model, the flow linear model, STSTNet, OFF-ApexNet, our two flow
models, the small CNN on frames and the seed paper's ResNet-50 + LSTM. Every
learned row is a config of `configs/` trained by `mer_jax.train` under the
same LOSO protocol; only `dataset.builder_config` (the tier) and `seed` change
between the cells of a row.

Tiers: the test tiers (`default`, `low_amplitude`, `composite`) and the dev
tiers (`composite_dev`) where the model called "ours" was chosen
(`DEV_CANDIDATES`); choices are never made on a test tier's folds.

Each (tier, row, seed) trains in `OUT_DIR/<tier>/<row>/seed<k>/` (the
`mer_jax.ablation` runner: a finished workdir is reused, an interrupted one
resumes, one holding another config is refused), and `seed<k>.run.json`
beside it records the 1/5/15-minute load averages before and after, because
wall times on a shared machine mean little without them. The report covers
every cell of `ROWS` x tiers, whether or not this invocation trained it: a
cell without a finished run is marked "not run" with its reason and the
command that fills it, never estimated. `--rows` chooses what to train (rows
marked `accelerator` only when named), `--report_only` trains nothing.
`OUT_DIR/baselines.{md,json}` are always written; `--doc` replaces the block
between `BEGIN_MARK` and `END_MARK` of a Markdown file (docs/baselines.md),
`--json` writes the JSON there too.

Execution settings reach every row through `--set`, e.g.
`--set=parallel_folds=-1` where the config has that field.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import statistics
import sys
import time
from typing import Any, Mapping, Optional, Sequence

from absl import app
from absl import flags
from absl import logging
import ml_collections
import numpy as np

from mer_jax import ablation
from mer_jax import evaluation
from mer_jax import logs
from mer_jax import schema
from mer_jax import synthetic
from mer_jax import workdir as workdir_lib


@dataclasses.dataclass(frozen=True)
class Row:
  """One method of the table.

  Attributes:
    key: workdir and `--rows` name.
    title: what the table shows.
    config: `path.py:config_string` trained by `mer_jax.train`; None for the
      rows computed from the labels (chance).
    accelerator: trained only when `--rows` names it (too slow on a CPU).
    note: why it is an accelerator row, shown when it has not run.
  """
  key: str
  title: str
  config: Optional[str] = None
  accelerator: bool = False
  note: str = ""


ROWS = (
    Row("chance_uniform", "chance: uniform random guess"),
    Row("chance_majority", "chance: majority class of the training subjects"),
    Row("onset_only", "onset frame only (small CNN, RGB; must stay at chance)",
        "configs/default.py:input=onset"),
    Row("pixel_linear", "pixel-difference linear (frame - onset, grid 8, one Dense)",
        "configs/default.py:model=pixel_linear"),
    Row("flow_linear", "flow linear (u, v, strain on a 7x7 grid, one Dense)",
        "configs/default.py:input=flow,model=flow_linear"),
    Row("ststnet", "STSTNet", "configs/default.py:input=flow,model=ststnet"),
    Row("off_apexnet", "OFF-ApexNet", "configs/default.py:input=flow,model=off_apexnet"),
    Row("off_apexnet_linear", "ours: OFF-ApexNet streams, one Dense, + apex->offset flow",
        "configs/default.py:input=flow,model=off_apexnet_linear"),
    Row("off_apexnet_std", "ours: the same on standardised flow (fixed scale, per-feature "
        "z-score from the training folds)", "configs/default.py:input=flow,model=off_apexnet_std"),
    Row("off_apexnet_faint", "ours: the same on a smoother TV-L1 flow (lambda 0.02)",
        "configs/default.py:input=flow,model=off_apexnet_faint"),
    Row("flow_resnet", "ours: flow ResNet (median-centred, grid 4)",
        "configs/default.py:input=flow,model=flow_resnet"),
    Row("small_cnn", "small CNN on frames (difference images, N = 8)", "configs/default.py"),
    Row("resnet50_lstm", "ResNet-50 + LSTM on frames (seed paper, Section 3.2)",
        "configs/paper_s32.py:dataset=synthetic,head=lstm,frames=11", accelerator=True,
        note="sized for an accelerator: a ResNet-50 on 11 frames of 112 x 112 per clip, 300 "
             "steps per fold, 16-68 folds per tier"),
)
ROW_BY_KEY = {row.key: row for row in ROWS}
CHANCE_ROWS = ("chance_uniform", "chance_majority")
TEST_TIERS = ("default", "low_amplitude", "composite")
# One dev twin per test tier: the same recipe, other subjects and clips.
DEV_TIERS = ("dev", "low_amplitude_dev", "composite_dev")
# Compared on the dev tiers; the best mean pooled UF1 over them is "ours" on the test tiers.
DEV_CANDIDATES = ("off_apexnet_linear", "off_apexnet_std", "off_apexnet_faint", "flow_resnet")
DEV_ROWS = ("chance_uniform", "chance_majority", "flow_linear") + DEV_CANDIDATES
# The recorded choice (what the dev tiers ranked first when the table was made); the report
# recomputes the ranking from the dev cells and says so when it disagrees.
OURS = "off_apexnet_faint"
def _first_subjects(preset: str, per_setup: int) -> tuple[str, ...]:
  """`dataset/subject` keys of the first `per_setup` subjects of each setup of a composite preset."""
  config = synthetic.COMPOSITE_PRESETS[preset]
  return tuple(f"{subset.name}/{subject.subject_id}"
               for k, subset in enumerate(config.subsets)
               for subject in synthetic.composite_subjects(config, k)[:per_setup])


# The dev protocol's folds where the whole tier costs too much CPU: on composite_dev the
# first 8 subjects of each sub-dataset are the test folds (every subject still trains).
# `--dev_all_folds` tests every subject.
DEV_FOLDS = {"composite_dev": _first_subjects("composite_dev", 8)}
BEGIN_MARK = "<!-- baselines table: generated by python -m mer_jax.baselines; do not edit -->"
END_MARK = "<!-- end of generated baselines table -->"
DEFAULT_SEEDS = (0, 1, 2)
DEFAULT_DEV_SEEDS = (0,)


def parse_rows(text: Optional[str], *, default: Sequence[str]) -> list[str]:
  """`--rows`: comma-separated row keys, "all", or None for `default`.

  Raises:
    ValueError: an unknown row key (naming the known ones).
  """
  if not text:
    return list(default)
  if text == "all":
    return [row.key for row in ROWS]
  keys = [k.strip() for k in text.split(",") if k.strip()]
  unknown = [k for k in keys if k not in ROW_BY_KEY]
  if unknown:
    raise ValueError(f"--rows: unknown row(s) {unknown}; rows are {[r.key for r in ROWS]} "
                     "or 'all'")
  return keys


def parse_tiers(text: Optional[str], *, default: Sequence[str]) -> list[str]:
  """`--tiers` / `--dev_tiers`: comma-separated synthetic_me tiers of configs/default.py."""
  from configs import default as default_config  # pylint: disable=import-outside-toplevel
  if text is None:
    return list(default)
  tiers = [t.strip() for t in text.split(",") if t.strip()]
  unknown = [t for t in tiers if t not in default_config.TIERS]
  if unknown:
    raise ValueError(f"tier(s) {unknown} unknown; synthetic_me tiers are {default_config.TIERS}")
  return tiers


def parse_seeds(text: Optional[str], *, flag: str = "--seeds",
                default: Sequence[int] = DEFAULT_SEEDS) -> list[int]:
  """`--seeds` / `--dev_seeds`: comma-separated integers (at least one), or `default`."""
  if not text:
    return list(default)
  try:
    seeds = [int(s) for s in text.split(",") if s.strip()]
  except ValueError as e:
    raise ValueError(f"{flag}={text!r}: expected comma-separated integers, e.g. 0,1,2") from e
  if not seeds or len(set(seeds)) != len(seeds):
    raise ValueError(f"{flag}={text!r}: give at least one seed, each once")
  return seeds


def parse_sets(items: Sequence[str], flag: str) -> dict[str, Any]:
  """`KEY=VALUE` items (`--set`, `--dev_set`) -> {key: Python literal or string}."""
  overrides = {}
  for item in items:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
      raise ValueError(f"{flag} expects KEY=VALUE, got {item!r}")
    overrides[key.strip()] = ablation.parse_value(value)
  return overrides


# --------------------------------------------------------------------------------------------
# Chance levels, from the labels alone.
# --------------------------------------------------------------------------------------------

def _scores(labels: np.ndarray, predictions: np.ndarray, datasets: np.ndarray) -> dict:
  """Pooled UF1 / UAR overall and per dataset (`evaluation`'s definitions)."""
  def score(mask):
    s = evaluation.scores_from_confusion(evaluation.confusion_matrix(
        labels[mask], predictions[mask], schema.NUM_CLASSES))
    return {"uf1": s["uf1"], "uar": s["uar"], "num_samples": s["num_samples"]}
  everything = np.ones(len(labels), bool)
  return {"overall": score(everything),
          "per_dataset": {d: score(datasets == d) for d in sorted(set(datasets.tolist()))}}


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
  return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def chance_scores(labels: Sequence[int], subject_keys: Sequence[str], datasets: Sequence[str],
                  *, folds: Optional[Sequence[str]] = None, num_draws: int = 2000,
                  seed: int = 0) -> dict[str, dict]:
  """The two chance rows of a tier, under its LOSO folds.

  * "chance_uniform": every clip's prediction drawn uniformly from the
    classes, scored pooled like a model; mean and standard deviation over
    `num_draws` simulated runs (its UAR's expectation is exactly 1/3).
  * "chance_majority": each fold predicts, for every clip of its test
    subject, the most frequent class among the other subjects' clips (ties to
    the lower class index); deterministic, standard deviation 0.

  Args:
    labels: (N,) class indices. subject_keys: (N,) `dataset/subject` (the
      folds). datasets: (N,) dataset names (the per-dataset columns).
    folds: the test subjects (`config.folds`: keys or bare ids) when only
      some folds run; their clips are scored, every other subject trains.

  Returns:
    `{row key: {"uf1", "uf1_std", "uar", "uar_std", "per_dataset":
    {name: {"uf1", "uf1_std", "uar", "uar_std"}}, "method"}}`.
  """
  labels = np.asarray(labels, np.int64)
  keys = np.asarray(subject_keys)
  datasets = np.asarray(datasets)
  if not (len(labels) == len(keys) == len(datasets)) or not len(labels):
    raise ValueError(f"chance_scores: labels, subject_keys and datasets must be equally long "
                     f"and non-empty, got {len(labels)}, {len(keys)}, {len(datasets)}")
  if len(set(keys.tolist())) < 2:
    raise ValueError("chance_scores: LOSO needs at least two subjects")
  if num_draws < 2:
    raise ValueError(f"chance_scores: num_draws must be at least 2, got {num_draws}")

  def summarise(runs: Sequence[dict]) -> dict:
    out = {}
    for metric in ("uf1", "uar"):
      out[metric], out[f"{metric}_std"] = _mean_std([r["overall"][metric] for r in runs])
    out["per_dataset"] = {}
    for name in runs[0]["per_dataset"]:
      entry = {}
      for metric in ("uf1", "uar"):
        entry[metric], entry[f"{metric}_std"] = _mean_std(
            [r["per_dataset"][name][metric] for r in runs])
      out["per_dataset"][name] = entry
    return out

  tested = _fold_mask(keys, folds)
  if not tested.any():
    raise ValueError(f"chance_scores: no clip of the folds {list(folds)[:5]}")
  rng = np.random.default_rng(seed)
  uniform = summarise([_scores(labels[tested],
                               rng.integers(0, schema.NUM_CLASSES, int(tested.sum())),
                               datasets[tested]) for _ in range(num_draws)])
  uniform["method"] = f"uniform random predictions, {num_draws} simulated runs (seed {seed})"
  majority_predictions = np.empty_like(labels)
  for key in sorted(set(keys[tested].tolist())):
    test = keys == key
    counts = np.bincount(labels[~test], minlength=schema.NUM_CLASSES)
    majority_predictions[test] = int(np.argmax(counts))
  majority = summarise([_scores(labels[tested], majority_predictions[tested],
                                datasets[tested])])
  majority["method"] = "per LOSO fold, the training subjects' most frequent class"
  return {"chance_uniform": uniform, "chance_majority": majority}


def tier_index(tier: str, overrides: Mapping[str, Any], *, build: bool):
  """The clip index of `synthetic_me/<tier>` (None if it is not built and `build` is False)."""
  from configs import default as default_config  # pylint: disable=import-outside-toplevel
  from mer_jax import input_pipeline  # pylint: disable=import-outside-toplevel
  config = default_config.get_config()
  dataset_overrides = {k: v for k, v in overrides.items() if k.startswith("dataset.")}
  ablation.apply_overrides(config, {**dataset_overrides, "dataset.builder_config": tier})
  builder = input_pipeline.get_builder(config.dataset)
  if not builder.is_prepared():
    if not build:
      return None
    builder = input_pipeline.prepare_builder(builder, config.dataset)
  return input_pipeline.read_clip_index(builder, config.dataset.split)


def _fold_mask(subject_keys: np.ndarray, folds: Optional[Sequence[str]]) -> np.ndarray:
  """The clips a run with `config.folds = folds` tests on (all clips for None).

  Bare subject ids match in any dataset, as `input_pipeline.loso_folds` allows
  when they are unambiguous.
  """
  keys = np.asarray(subject_keys)
  if not folds:
    return np.ones(len(keys), bool)
  bare = np.array([k.split("/", 1)[-1] for k in keys.tolist()])
  return np.isin(keys, list(folds)) | np.isin(bare, list(folds))


# --------------------------------------------------------------------------------------------
# Learned rows.
# --------------------------------------------------------------------------------------------

def row_config(row: Row, tier: str, overrides: Mapping[str, Any]):
  """The row's config on `tier` with `overrides` (validated; nothing is read or trained)."""
  from mer_jax import config_checks  # pylint: disable=import-outside-toplevel
  spec = ablation.parse_spec(row.config)
  config = ablation.load_config(spec)
  ablation.apply_overrides(config, {**overrides, "dataset.builder_config": tier})
  try:
    config_checks.validate_config(config)
  except ValueError as e:
    raise ValueError(f"row {row.key} ({row.config}) on tier {tier}: {e}") from e
  return spec, config


def cell_command(row: str, tier: str, seeds: Sequence[int], out_dir: str,
                 overrides: Mapping[str, Any]) -> str:
  """The command that fills one (tier, row) cell."""
  sets = "".join(" " + _shell_word(f"--set={k}={v!r}") for k, v in overrides.items())
  return (f"python -m mer_jax.baselines --out_dir={out_dir} --rows={row} --tiers={tier} "
          f"--dev_tiers= --seeds={','.join(str(s) for s in seeds)}{sets}")


def _shell_word(text: str) -> str:
  """`text` as one shell word, in double quotes when that suffices (readable in the docs)."""
  if shlex.quote(text) == text:
    return text
  if not any(c in text for c in '"$`\\!'):
    return f'"{text}"'
  return shlex.quote(text)


def _load_record(path: str) -> Optional[dict]:
  return workdir_lib.read_json(path) if os.path.exists(path) else None


def learned_cell(row: Row, tier: str, seeds: Sequence[int], out_dir: str,
                 overrides: Mapping[str, Any], *, train_missing: bool) -> dict:
  """Trains (when asked) and reads one (tier, row) cell over `seeds`.

  Returns a cell: status "done" (scores over the seeds that finished, with
  `seeds`, `per_seed`, `loads`), or status "not_run" with a reason.
  """
  spec, config = row_config(row, tier, overrides)
  cell_dir = os.path.join(out_dir, tier, row.key)
  runs, loads, mismatched = [], [], []
  for seed in seeds:
    seeded = ml_collections.ConfigDict(config.to_dict())
    seeded.seed = int(seed)
    record_path = os.path.join(cell_dir, f"seed{seed}.run.json")
    load_before, start = os.getloadavg(), time.time()
    try:
      result = ablation.run_config(spec, seeded, cell_dir, f"seed{seed}",
                                   train_missing=train_missing)
    except ValueError as e:
      if train_missing or "holds a run of a different config" not in str(e):
        raise
      # Reading only: a run of another config is reported, not mixed in.
      mismatched.append(f"seed{seed}: {str(e).splitlines()[-1].strip()}")
      continue
    if result is None:
      continue
    if not result["reused"]:
      workdir_lib.atomic_write_text(record_path, json.dumps({
          "tier": tier, "row": row.key, "seed": seed, "config": row.config,
          "overrides": {k: repr(v) for k, v in overrides.items()},
          "start_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)),
          "wall_seconds": round(time.time() - start, 1),
          "loadavg_before": [round(x, 2) for x in load_before],
          "loadavg_after": [round(x, 2) for x in os.getloadavg()],
          "cpu_count": os.cpu_count()}, indent=1) + "\n")
    record = _load_record(record_path)
    if record:
      loads += [record["loadavg_before"][0], record["loadavg_after"][0]]
    del result["_predictions"]
    runs.append(result)
  if not runs:
    reason = row.note if row.accelerator else "no finished run in the output directory yet"
    if mismatched:
      reason = ("its workdirs hold runs of another config (" + "; ".join(mismatched)
                + "); use another --out_dir")
    return {"status": "not_run", "reason": reason,
            "command": cell_command(row.key, tier, seeds, out_dir, overrides)}
  cell = ablation.aggregate_seeds(runs)
  cell.update(status="done", seeds_requested=list(seeds), loads=loads,
              wall_seconds_per_seed=_mean_or_none([r["wall_seconds"] for r in runs]))
  if len(runs) < len(seeds):
    cell["missing_seeds_command"] = cell_command(row.key, tier, seeds, out_dir, overrides)
  return cell


def _mean_or_none(values: Sequence[Optional[float]]) -> Optional[float]:
  values = [v for v in values if v is not None]
  return statistics.fmean(values) if values else None


# --------------------------------------------------------------------------------------------
# The report.
# --------------------------------------------------------------------------------------------

def _pm(cell: Mapping[str, Any], metric: str) -> str:
  value = cell.get(metric)
  if value is None:
    return "-"
  text = f"{value:.3f}"
  one_seed = cell.get("seeds") is not None and len(cell["seeds"]) == 1
  if cell.get(f"{metric}_std") is not None and not one_seed:
    text += f" ± {cell[f'{metric}_std']:.3f}"
  return text


def _seed_note(cell: Mapping[str, Any]) -> str:
  seeds = cell.get("seeds")
  if seeds is None:
    return ""
  return f" (n={len(seeds)})" if len(seeds) != 3 else ""


def _cell_text(cell: Optional[Mapping[str, Any]], notes: dict, row: str, tier: str) -> str:
  """A table cell; a "not run" cell adds its tier to the note of (row, reason)."""
  if cell is None:
    return "-"
  if cell["status"] == "not_run":
    # Tiers share a note when their commands differ only in the tier.
    command = cell["command"].replace(f"--tiers={tier} ", "--tiers={tiers} ")
    note = notes.setdefault((row, cell["reason"], command),
                            {"number": len(notes) + 1, "tiers": [], "command": command})
    note["tiers"].append(tier)
    return f"not run [{note['number']}]"
  return f"{_pm(cell, 'uf1')} / {_pm(cell, 'uar')}{_seed_note(cell)}"


def _note_lines(notes: Mapping[tuple[str, str], dict]) -> list[str]:
  """"n. row on tiers: not run: reason; command: `...`", one command for all its tiers."""
  lines = []
  for (row, reason, _), note in sorted(notes.items(), key=lambda item: item[1]["number"]):
    command = note["command"].replace("--tiers={tiers} ", f"--tiers={','.join(note['tiers'])} ")
    tiers = ", ".join(f"`{t}`" for t in note["tiers"])
    lines.append(f"{note['number']}. {row} on {tiers}: not run: {reason}; command: `{command}`")
  return lines


def _tier_table(cells: Mapping[tuple[str, str], dict], rows: Sequence[str],
                tiers: Sequence[str], ours: Optional[str], notes: dict) -> list[str]:
  lines = ["| method | params | " + " | ".join(f"`{t}` UF1 / UAR" for t in tiers) + " |",
           "|---|---:|" + "---|" * len(tiers)]
  for key in rows:
    row = ROW_BY_KEY[key]
    params = next((c["num_params"] for t in tiers
                   if (c := cells.get((t, key))) and c.get("num_params") is not None), None)
    title = row.title + (" **(ours, chosen on dev)**" if key == ours else "")
    texts = [_cell_text(cells.get((t, key)), notes, key, t) for t in tiers]
    lines.append(f"| {title} `{key}` | {'-' if params is None else f'{params:,}'} | "
                 + " | ".join(texts) + " |")
  return lines


def markdown_report(cells: Mapping[tuple[str, str], dict], *, rows: Sequence[str],
                    tiers: Sequence[str], dev_rows: Sequence[str] = (),
                    dev_tiers: Sequence[str] = (), ours: Optional[str] = OURS,
                    protocol: Optional[Mapping[str, Any]] = None) -> str:
  """The generated block of docs/baselines.md.

  `cells[(tier, row)]`: status "done" with `uf1`, `uar` (and `*_std`),
  `per_dataset`, optional `seeds`, `num_params`, `wall_seconds_per_seed`,
  `loads`; or status "not_run" with `reason` and `command`. Absent cells
  show "-".
  """
  notes: dict[tuple[str, str], dict] = {}
  lines = [BEGIN_MARK, ""]
  for key, value in (protocol or {}).items():
    lines.append(f"- {key}: {value}")
  lines += ["", "### Test tiers: LOSO pooled UF1 / UAR, mean ± std over seeds", ""]
  lines += _tier_table(cells, rows, tiers, ours, notes)
  composite = [t for t in tiers if t.startswith("composite")]
  for tier in composite:
    datasets = sorted({d for (t, _), c in cells.items() if t == tier and c["status"] == "done"
                       for d in c.get("per_dataset", {})})
    if not datasets:
      continue
    lines += ["", f"Per sub-dataset on `{tier}` (UF1, mean ± std over seeds):", "",
              "| method | " + " | ".join(f"`{d}`" for d in datasets) + " |",
              "|---|" + "---|" * len(datasets)]
    for key in rows:
      cell = cells.get((tier, key))
      if not cell or cell["status"] != "done":
        continue
      lines.append(f"| `{key}` | " + " | ".join(
          _pm(cell["per_dataset"][d], "uf1") if d in cell["per_dataset"] else "-"
          for d in datasets) + " |")
  if dev_tiers:
    lines += ["", "### Dev tiers (where `ours` was chosen): pooled UF1 / UAR", ""]
    lines += _tier_table(cells, dev_rows, dev_tiers, ours, notes)
  timed = [(t, k, c) for (t, k), c in cells.items()
           if c["status"] == "done" and c.get("wall_seconds_per_seed") is not None]
  if timed:
    lines += ["", "Wall time per seed (the trainer's `wall_seconds_this_run`, all folds) and "
              "the 1-minute load average before / after each run on this machine:", "",
              "| tier | method | seeds | wall s per seed | load averages |",
              "|---|---|---|---:|---|"]
    order = {t: i for i, t in enumerate(list(tiers) + list(dev_tiers))}
    rank = {k: i for i, k in enumerate(list(rows) + list(dev_rows))}
    for tier, key, cell in sorted(timed, key=lambda x: (order.get(x[0], 99), rank.get(x[1], 99))):
      loads = cell.get("loads") or []
      lines.append(f"| `{tier}` | `{key}` | {','.join(str(s) for s in cell.get('seeds') or [])} "
                   f"| {cell['wall_seconds_per_seed']:.0f} | "
                   f"{' '.join(f'{x:.1f}' for x in loads) if loads else 'not recorded'} |")
  if notes:
    lines += ["", "Not run:", ""] + _note_lines(notes)
  missing = [(t, k, c) for (t, k), c in cells.items() if c.get("missing_seeds_command")]
  if missing:
    lines += ["", "Cells with fewer seeds than asked (the n shown); to complete them:", ""]
    lines += [f"- {k} on `{t}`: `{c['missing_seeds_command']}`" for t, k, c in missing]
  lines += ["", END_MARK]
  return "\n".join(lines) + "\n"


def replace_block(text: str, block: str, *, path: str = "document") -> str:
  """`text` with the part from BEGIN_MARK to END_MARK replaced by `block` (appended if absent)."""
  if BEGIN_MARK not in text:
    if END_MARK in text:
      raise ValueError(f"{path}: has the end mark of the generated table but not its begin mark")
    return text.rstrip("\n") + "\n\n" + block
  head, _, rest = text.partition(BEGIN_MARK)
  if END_MARK not in rest:
    raise ValueError(f"{path}: the generated table's end mark {END_MARK!r} is missing")
  _, _, tail = rest.partition(END_MARK)
  return head + block.rstrip("\n") + tail


def dev_ranking(cells: Mapping[tuple[str, str], dict],
                dev_tiers: Sequence[str]) -> list[tuple[str, float]]:
  """`DEV_CANDIDATES` with every dev tier done, by mean pooled UF1 over the dev tiers, best first.

  Candidates missing a dev tier are left out (a partial mean would compare
  unlike things).
  """
  ranking = []
  for key in DEV_CANDIDATES:
    done = [cells.get((t, key)) for t in dev_tiers]
    if dev_tiers and all(c and c["status"] == "done" for c in done):
      ranking.append((key, statistics.fmean(c["uf1"] for c in done)))
  return sorted(ranking, key=lambda item: -item[1])


def dev_best_per_tier(cells: Mapping[tuple[str, str], dict],
                      dev_tiers: Sequence[str]) -> dict[str, str]:
  """`{dev tier: the candidate with the best pooled UF1 there}` (tiers with a finished candidate).

  A tier-specific choice: the model to use on that dev tier's test twin when
  one model for all tiers is not wanted (e.g. faint motion).
  """
  best = {}
  for tier in dev_tiers:
    done = [(cells[(tier, k)]["uf1"], k) for k in DEV_CANDIDATES
            if cells.get((tier, k), {}).get("status") == "done"]
    if done:
      best[tier] = max(done, key=lambda item: item[0])[1]
  return best


def _ranking_text(ranking: Sequence[tuple[str, float]], dev_tiers: Sequence[str]) -> str:
  """The ranking, with a warning when every dev tier ranks and the recorded `OURS` is not first."""
  if not ranking:
    return "not available (no candidate has finished every dev tier)"
  text = ", ".join(f"`{k}` {v:.3f}" for k, v in ranking)
  if set(dev_tiers) != set(DEV_TIERS):
    return text + f" (over {list(dev_tiers)} only; the choice uses all of {list(DEV_TIERS)})"
  if ranking[0][0] != OURS:
    text += (f". WARNING: the recorded choice `{OURS}` is not first; set baselines.OURS to "
             f"`{ranking[0][0]}` and rerun the test tiers' `ours` row")
  return text


def run_baselines(out_dir: str, *, tiers: Sequence[str], rows: Sequence[str],
                  dev_tiers: Sequence[str] = DEV_TIERS, dev_rows: Sequence[str] = DEV_ROWS,
                  train_rows: Sequence[str] = (), seeds: Sequence[int] = DEFAULT_SEEDS,
                  dev_seeds: Sequence[int] = DEFAULT_DEV_SEEDS,
                  overrides: Optional[Mapping[str, Any]] = None,
                  dev_overrides: Optional[Mapping[str, Any]] = None,
                  dev_folds: Optional[Mapping[str, Sequence[str]]] = None,
                  chance_draws: int = 2000, train: bool = True) -> dict:
  """Trains the asked cells, reads every finished one, writes `out_dir/baselines.{md,json}`.

  Args:
    tiers / dev_tiers: test and dev tiers; rows / dev_rows: the rows shown
      for each. train_rows: the learned rows to train (others are only read).
    seeds / dev_seeds: the seeds of a test / dev cell.
    overrides: config fields set in every learned row; dev_overrides: set on
      the dev tiers only, on top.
    dev_folds: `{dev tier: test subjects}` where a dev tier tests a subset of
      its subjects (default `DEV_FOLDS`; `{}` every subject).
    train: False reads finished runs only (chance rows are computed when the
      tier's records exist).

  Returns:
    `{"protocol", "cells": [{"tier", "row", ...cell}]}` as written to baselines.json.
  """
  test_overrides = dict(overrides or {})
  dev_only = dict(dev_overrides or {})
  dev_folds = DEV_FOLDS if dev_folds is None else dict(dev_folds)

  def tier_overrides(tier: str) -> dict:
    if tier not in dev_tiers:
      return test_overrides
    folds = {"folds": tuple(dev_folds[tier])} if tier in dev_folds else {}
    return {**test_overrides, **folds, **dev_only}

  tier_seeds = lambda tier: dev_seeds if tier in dev_tiers else seeds
  cells: dict[tuple[str, str], dict] = {}
  # Validate every learned config on every tier before any compute.
  plan = [(t, k) for t in dev_tiers for k in dev_rows] + [(t, k) for t in tiers for k in rows]
  for tier, key in plan:
    if ROW_BY_KEY[key].config:
      row_config(ROW_BY_KEY[key], tier, tier_overrides(tier))
  os.makedirs(out_dir, exist_ok=True)
  start = time.time()
  for tier in list(dev_tiers) + list(tiers):
    shown = dev_rows if tier in dev_tiers else rows
    overrides = tier_overrides(tier)
    if any(k in CHANCE_ROWS for k in shown):
      index = tier_index(tier, overrides, build=train)
      for key in CHANCE_ROWS:
        if index is None:
          cells[(tier, key)] = {"status": "not_run", "reason": "the tier's records are not built",
                                "command": cell_command(key, tier, tier_seeds(tier), out_dir,
                                                        overrides)}
        else:
          scores = chance_scores(index.label, index.subject_key, index.dataset,
                                 folds=overrides.get("folds"), num_draws=chance_draws)
          cells[(tier, key)] = {"status": "done", **scores[key]}
    for key in shown:
      row = ROW_BY_KEY[key]
      if row.config is None:
        continue
      logging.info("baselines: %s on %s", key, tier)
      cells[(tier, key)] = learned_cell(row, tier, tier_seeds(tier), out_dir, overrides,
                                        train_missing=train and key in train_rows)
  ranking = dev_ranking(cells, dev_tiers)
  protocol = {
      "protocol": "leave-one-subject-out over `dataset/subject`, fixed schedule (last step), "
                  "predictions pooled over all folds, then scored (UF1, UAR)",
      "seeds": list(seeds),
      "dev seeds": list(dev_seeds),
      **({"dev folds": "; ".join(f"{t}: the {len(f)} test subjects {', '.join(f)}"
                                 for t, f in dev_folds.items() if t in dev_tiers)}
         if any(t in dev_tiers for t in dev_folds) else {}),
      **({"dev tiers only": ", ".join(f"{k}={v!r}" for k, v in dev_only.items())}
         if dev_only else {}),
      "ours": f"`{OURS}`, chosen by mean pooled UF1 over the dev tiers {list(DEV_TIERS)} among "
              f"{list(DEV_CANDIDATES)}; no choice was made on a test tier's folds",
      "dev ranking (mean pooled UF1 over the dev tiers)": _ranking_text(ranking, dev_tiers),
      "best candidate per dev tier": ", ".join(
          f"`{t}` {k}" for t, k in dev_best_per_tier(cells, dev_tiers).items()) or "none yet",
      "command": " ".join(["python -m mer_jax.baselines"] + sys.argv[1:]),
      "wall_seconds_this_invocation": round(time.time() - start, 1),
  }
  report = {"protocol": protocol,
            "cells": [{"tier": t, "row": k, **c} for (t, k), c in cells.items()]}
  workdir_lib.atomic_write_text(os.path.join(out_dir, "baselines.json"),
                                json.dumps(report, indent=1, default=str) + "\n")
  markdown = markdown_report(cells, rows=rows, tiers=tiers, dev_rows=dev_rows,
                             dev_tiers=dev_tiers, protocol=protocol)
  workdir_lib.atomic_write_text(os.path.join(out_dir, "baselines.md"), markdown)
  report["markdown"] = markdown
  return report


# --------------------------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------------------------

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command-line flags, defined only when this module is the program (so that
  `mer_jax.ablation` and `mer_jax.baselines` can be imported together)."""
  flags.DEFINE_string("out_dir", None, "Directory of the runs (OUT_DIR/<tier>/<row>/seed<k>/) and "
                      "of baselines.md / baselines.json.")
  flags.DEFINE_string("rows", None, "Rows to train, comma-separated (see ROWS), or 'all'. Default: "
                      "every row except the accelerator ones. The report shows every row.")
  flags.DEFINE_string("tiers", None, f"Test tiers (default {','.join(TEST_TIERS)}).")
  flags.DEFINE_string("dev_tiers", None, f"Dev tiers (default {','.join(DEV_TIERS)}; empty: none).")
  flags.DEFINE_string("seeds", None, "Seeds per learned cell of a test tier (default 0,1,2).")
  flags.DEFINE_string("dev_seeds", None, "Seeds per learned cell of a dev tier (default 0).")
  flags.DEFINE_bool("dev_all_folds", False, "Test every subject of the dev tiers (default: "
                    "DEV_FOLDS' subsets where set).")
  flags.DEFINE_multi_string("set", [], "KEY=VALUE: a config field set in every learned row, e.g. "
                            "--set=dataset.data_dir=/data/tfds. Repeatable.")
  flags.DEFINE_multi_string("dev_set", [], "KEY=VALUE set on the dev tiers only, after --set "
                            "(e.g. a subset of folds). Repeatable.")
  flags.DEFINE_bool("report_only", False, "Train nothing: the report from finished runs.")
  flags.DEFINE_integer("chance_draws", 2000, "Simulated runs of the uniform-chance row.")
  flags.DEFINE_string("doc", None, "Markdown file whose generated block is replaced "
                      "(docs/baselines.md).")
  flags.DEFINE_string("json", None, "Also write the JSON report here (docs/baselines.json).")
  flags.mark_flag_as_required("out_dir")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
  logs.quiet_library_logs()
  try:
    train_rows = parse_rows(FLAGS.rows, default=[r.key for r in ROWS if not r.accelerator])
    tiers = parse_tiers(FLAGS.tiers, default=TEST_TIERS)
    dev_tiers = parse_tiers(FLAGS.dev_tiers, default=DEV_TIERS)
    seeds = parse_seeds(FLAGS.seeds)
    dev_seeds = parse_seeds(FLAGS.dev_seeds, flag="--dev_seeds", default=DEFAULT_DEV_SEEDS)
    overrides = parse_sets(FLAGS.set, "--set")
    dev_overrides = parse_sets(FLAGS.dev_set, "--dev_set")
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  report = run_baselines(FLAGS.out_dir, tiers=tiers, rows=[r.key for r in ROWS],
                         dev_tiers=dev_tiers, train_rows=train_rows, seeds=seeds,
                         dev_seeds=dev_seeds, overrides=overrides, dev_overrides=dev_overrides,
                         dev_folds={} if FLAGS.dev_all_folds else None,
                         chance_draws=FLAGS.chance_draws,
                         train=not FLAGS.report_only)
  if FLAGS.doc:
    with open(FLAGS.doc) as f:
      text = f.read()
    workdir_lib.atomic_write_text(FLAGS.doc, replace_block(text, report["markdown"],
                                                          path=FLAGS.doc))
  if FLAGS.json:
    workdir_lib.atomic_write_text(FLAGS.json, json.dumps(
        {k: v for k, v in report.items() if k != "markdown"}, indent=1, default=str) + "\n")
  print(report["markdown"])


if __name__ == "__main__":
  define_flags()
  app.run(main)
