r"""Wall time of a complete LOSO run: serial folds vs the device-resident loop vs fold-parallel.

    python -m benchmarks.loso_bench --tiers default,composite --rounds 2 \
        --data_dir /tmp/loso_data --out /tmp/loso.json

Each tier runs `configs/default.py:input=<input>,tier=<tier>` through
`mer_jax.train.train_and_evaluate` (`--input flow`, the default: the README demo's motion
model on cached flow features; `--input frames`: the small CNN on 8-frame 32 x 32 clips) in
up to four modes, each into a fresh workdir:

  serial         one fold at a time, host batches every step (`parallel_folds=1`; frames:
                 Grain decodes and augments each batch), 1 device
  resident       one fold at a time, the device-resident loop (`device_loop=True`: flow
                 features, or every clip's frames decoded once, on the device; batches
                 gathered there), 1 device
  parallel       every fold at once as one program (`parallel_folds=-1`), 1 device
  parallel_2dev  two folds at a time, one per device, the CPU's cores as 2 JAX devices

Each timed run is a fresh process (its own compilation, caches and memory: peak RSS is
recorded). The records and the flow cache are built before any timing (they are shared by
the modes); the timed span is the whole `train_and_evaluate` call: compilation, decoding the
resident frames, every fold, prediction and the reports. Modes alternate within each round (the order rotates between rounds). Before each run
the benchmark waits until the 1-minute load average is below `--quiet_load` (default 1; the
previous run's own load decays with a one-minute time constant), at most `--quiet_timeout_s`;
a run that started above it is marked provisional (`quiet: false`, and in the table). Every
run's pooled UF1/UAR is kept so that the modes can be seen to train the same models. Writes
JSON to `--out` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Sequence

from benchmarks import hardware

# mode -> (CPU devices of its process, config overrides). Each timed run is a fresh process.
MODES = {
    "serial": (1, {"parallel_folds": 1, "device_loop": False}),
    "resident": (1, {"parallel_folds": 1, "device_loop": True}),
    "parallel": (1, {"parallel_folds": -1, "device_loop": False}),
    # One fold per device, two at a time: the CPU's cores as two JAX devices.
    "parallel_2dev": (2, {"parallel_folds": 2, "fold_devices": 2, "device_loop": False}),
}


INPUTS = ("flow", "frames")


def make_config(tier: str, data_dir: str, mode: str, *, folds: Sequence[str] = (),
                num_train_steps: int = 0, input_kind: str = "flow"):
  """`configs/default.py:input=<input_kind>,tier=<tier>` for `mode` (plus smoke-run overrides).

  Tier "tiny" takes the config's small local variant (`:tiny`: small frames, flow and model),
  for smoke runs.
  """
  from configs import default as default_config  # pylint: disable=import-outside-toplevel
  config = default_config.get_config(
      f"input={input_kind}," + ("tiny" if tier == "tiny" else f"tier={tier}"))
  config.dataset.data_dir = data_dir
  for key, value in MODES[mode][1].items():
    config[key] = value
  if folds:
    config.folds = tuple(folds)
  if num_train_steps:
    config.num_train_steps = num_train_steps
    config.checkpoint_every_steps = num_train_steps
    config.warmup_steps = min(config.warmup_steps, num_train_steps - 1)
  return config


def load_inputs(config):
  """The clip index and flow features of `config` (records and flow cache built if missing;
  features None for frame input)."""
  from mer_jax import input_pipeline  # pylint: disable=import-outside-toplevel
  from mer_jax import motion_input  # pylint: disable=import-outside-toplevel
  builder = input_pipeline.prepare_builder(input_pipeline.get_builder(config.dataset),
                                           config.dataset)
  index = input_pipeline.read_clip_index(builder, config.dataset.split)
  if config.input.representation != "flow":
    return index, None
  return index, motion_input.load_flow_features(config, index)


def prepare(config) -> dict:
  """Builds the records and, for flow input, the flow cache (untimed); their sizes."""
  index, features = load_inputs(config)
  sizes = {"clips": len(index), "subjects": len(set(index.subject_key.tolist()))}
  if features is not None:
    sizes["feature_bytes"] = int(features.features.nbytes)
  return sizes


def time_run(tier: str, data_dir: str, mode: str, workdir: str, *, folds: Sequence[str] = (),
             num_train_steps: int = 0, input_kind: str = "flow",
             quiet_load: float = hardware.QUIET_LOAD, quiet_timeout_s: float = 600.0) -> dict:
  """One timed `train_and_evaluate` in a fresh process (its own devices, caches, memory).

  Waits first for a quiet machine (`hardware.wait_for_quiet`; `quiet_load` 0: no wait).
  """
  devices, _ = MODES[mode]
  env = dict(os.environ, JAX_NUM_CPU_DEVICES=str(devices), JAX_PLATFORMS="cpu")
  out_path = workdir + ".json"
  command = [sys.executable, "-m", "benchmarks.loso_bench", "--_one", mode, "--tiers", tier,
             "--data_dir", data_dir, "--out", out_path, "--_workdir", workdir,
             "--folds", ",".join(folds), "--num_train_steps", str(num_train_steps),
             "--input", input_kind]
  quiet = hardware.wait_for_quiet(quiet_load, quiet_timeout_s)
  began = time.perf_counter()
  subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
  seconds = time.perf_counter() - began
  with open(out_path) as f:
    result = json.load(f)
  return {"seconds": seconds, **quiet, **result}


def _one(tier: str, data_dir: str, mode: str, workdir: str, out: str, *, folds, num_train_steps,
         input_kind: str):
  """The child process of `time_run`: the run, its scores and its peak resident memory."""
  import resource  # pylint: disable=import-outside-toplevel
  from mer_jax import train  # pylint: disable=import-outside-toplevel
  config = make_config(tier, data_dir, mode, folds=folds, num_train_steps=num_train_steps,
                       input_kind=input_kind)
  began = time.perf_counter()
  results = train.train_and_evaluate(config, workdir)
  with open(out, "w") as f:
    json.dump({"seconds_in_process": time.perf_counter() - began,
               "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               "uf1": results["overall"]["uf1"], "uar": results["overall"]["uar"],
               "folds": results["num_folds"]}, f)


def run(tiers: Sequence[str], modes: Sequence[str], *, rounds: int, data_dir: str,
        folds: Sequence[str] = (), num_train_steps: int = 0, input_kind: str = "flow",
        quiet_load: float = hardware.QUIET_LOAD, quiet_timeout_s: float = 600.0) -> dict:
  """Every tier x mode x round; medians and speed-ups over `serial`."""
  out = {"benchmark": "loso", "date": datetime.date.today().isoformat(),
         "device": f"CPU ({platform.processor() or platform.machine()}), "
                   f"{os.cpu_count()} cores; JAX devices per mode "
                   f"{ {m: MODES[m][0] for m in modes} }",
         "platform": platform.platform(), "cpu_count": os.cpu_count(),
         "quiet_load": quiet_load, "input": input_kind,
         "command": " ".join([os.path.basename(sys.executable), "-m", "benchmarks.loso_bench"]
                             + sys.argv[1:]), "tiers": {}}
  for tier in tiers:
    sizes = prepare(make_config(tier, data_dir, modes[0], folds=folds,
                                num_train_steps=num_train_steps, input_kind=input_kind))
    runs = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory(prefix=f"loso_{tier}_") as tmp:
      for r in range(rounds):
        order = list(modes[r % len(modes):]) + list(modes[:r % len(modes)])
        for mode in order:
          result = time_run(tier, data_dir, mode, os.path.join(tmp, f"{mode}_{r}"), folds=folds,
                            num_train_steps=num_train_steps, input_kind=input_kind,
                            quiet_load=quiet_load,
                            quiet_timeout_s=quiet_timeout_s)
          runs[mode].append(result)
          print(f"{tier} round {r + 1} {mode}: {result['seconds']:.1f} s, UF1 "
                f"{result['uf1']:.4f} (load {result['load_before']:.2f} after waiting "
                f"{result['waited_s']:.0f} s{'' if result['quiet'] else ', NOT quiet'})",
                flush=True)
    medians = {m: statistics.median(x["seconds"] for x in v) for m, v in runs.items()}
    out["tiers"][tier] = {
        **sizes, "runs": runs, "median_seconds": medians,
        "speedup_over_serial": ({m: medians["serial"] / s for m, s in medians.items()}
                                if "serial" in medians else {})}
  return out


def _load(run: dict) -> str:
  """A run's load before it started, starred when it was not quiet."""
  return f"{run['load_before']:.2f}{'' if run.get('quiet', True) else '*'}"


def markdown(result: dict) -> str:
  lines = [f"LOSO wall time, {result.get('input', 'flow')} input ({result['device']}, "
           f"{result['date']}); load before each run "
           f"(* : not below {result.get('quiet_load', hardware.QUIET_LOAD)}, provisional)", "",
           "| tier | folds | mode | median s | x serial | UF1 per run | peak RSS MiB | load before |",
           "|---|---|---|---|---|---|---|---|"]
  for tier, t in result["tiers"].items():
    for mode, runs in t["runs"].items():
      lines.append(
          f"| {tier} | {runs[0]['folds']} | {mode} | {t['median_seconds'][mode]:.1f} | "
          f"{t['speedup_over_serial'].get(mode, float('nan')):.2f} | "
          f"{', '.join('%.4f' % x['uf1'] for x in runs)} | "
          f"{max(x['peak_rss_mib'] for x in runs):.0f} | "
          f"{', '.join(_load(x) for x in runs)} |")
  return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m benchmarks.loso_bench",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("--tiers", default="default", help="synthetic_me tiers, comma-separated")
  parser.add_argument("--modes", default=",".join(MODES), help=f"subset of {','.join(MODES)}")
  parser.add_argument("--rounds", type=int, default=1)
  parser.add_argument("--data_dir", required=True, help="TFDS data dir (built if missing)")
  parser.add_argument("--folds", default="", help="smoke runs: test subjects, comma-separated")
  parser.add_argument("--num_train_steps", type=int, default=0, help="smoke runs: fewer steps")
  parser.add_argument("--input", default="flow", choices=INPUTS,
                      help="flow: the demo's motion model; frames: the small CNN on clips")
  hardware.add_quiet_arguments(parser, "run")
  parser.add_argument("--out", required=True, help="JSON output path")
  parser.add_argument("--_one", default="", help=argparse.SUPPRESS)  # Child: one timed run.
  parser.add_argument("--_workdir", default="", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  folds = [f for f in args.folds.split(",") if f]
  if args._one:  # pylint: disable=protected-access
    _one(args.tiers, args.data_dir, args._one, args._workdir, args.out, folds=folds,  # pylint: disable=protected-access
         num_train_steps=args.num_train_steps, input_kind=args.input)
    return 0
  modes = [m for m in args.modes.split(",") if m]
  unknown = [m for m in modes if m not in MODES]
  if unknown or not modes:
    parser.error(f"--modes: unknown {unknown}; choose from {sorted(MODES)}")
  if args.rounds < 1:
    parser.error("--rounds must be >= 1")
  result = run([t for t in args.tiers.split(",") if t], modes, rounds=args.rounds,
               data_dir=args.data_dir, folds=folds,
               num_train_steps=args.num_train_steps, input_kind=args.input,
               quiet_load=args.quiet_load,
               quiet_timeout_s=args.quiet_timeout_s)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(result, f, indent=2)
  print(markdown(result))
  return 0


if __name__ == "__main__":
  sys.exit(main())
