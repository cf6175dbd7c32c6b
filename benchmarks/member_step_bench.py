r"""Time per member-step of the fold-parallel program: k members (folds) on d devices.

    JAX_NUM_CPU_DEVICES=2 python -m benchmarks.member_step_bench --data_dir ~/tensorflow_datasets \
        --layouts 1x1,2x2,4x2 --out /tmp/member_step.json

Why the LOSO wall time (`benchmarks/loso_bench.py`) is what it is: a layout `kxd` trains a
chunk of k members on d devices with `fold_parallel.ChunkTrainer` (the demo's motion model
on the `default` tier, its own data, keys and schedules), and the timed span is `--steps`
steps after a warm-up that compiles. Layouts alternate within each round, and each timed span
first waits for a quiet machine (`hardware.wait_for_quiet`: 1-minute load below `--quiet_load`,
at most `--quiet_timeout_s`; a span that started above it is marked `quiet: false`). On a CPU the
figure to compare is ms per member-step: when one member's step already keeps every core
busy (XLA's intra-op threads), two devices cannot make a member-step cheaper.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from typing import Sequence

from benchmarks import hardware


def _trainer(config, folds, index, features, members: int, devices):
  from mer_jax import fold_parallel  # pylint: disable=import-outside-toplevel
  config.parallel_folds = members
  config.fold_devices = len(devices)
  chunk = fold_parallel.plan_chunks(config, folds)[0]
  return fold_parallel.ChunkTrainer(config, chunk, index,
                                     fold_parallel.FlowInputs(features, index, config), devices)


def run(layouts: Sequence[tuple[int, int]], *, data_dir: str, tier: str, steps: int,
        rounds: int, quiet_load: float = hardware.QUIET_LOAD,
        quiet_timeout_s: float = 600.0) -> dict:
  """Median ms per step and per member-step of each layout (members, devices)."""
  import jax  # pylint: disable=import-outside-toplevel
  from benchmarks import loso_bench  # pylint: disable=import-outside-toplevel
  from mer_jax import input_pipeline  # pylint: disable=import-outside-toplevel
  config = loso_bench.make_config(tier, data_dir, "parallel")
  index, features = loso_bench.load_inputs(config)
  folds = input_pipeline.loso_folds(index, folds=config.folds,
                                    num_validation_subjects=config.num_validation_subjects,
                                    seed=config.seed)
  for members, num_devices in layouts:
    if num_devices > jax.device_count() or members > len(folds):
      raise ValueError(f"layout {members}x{num_devices}: this process has "
                       f"{jax.device_count()} device(s) and {len(folds)} fold(s); set "
                       "JAX_NUM_CPU_DEVICES")
  trainers, states = {}, {}
  for members, num_devices in layouts:
    trainer = _trainer(config, folds, index, features, members, jax.devices()[:num_devices])
    state, _ = trainer.train(trainer.place(trainer.initial), 0, 3)  # Compiles.
    trainers[(members, num_devices)], states[(members, num_devices)] = trainer, state
  times = {layout: [] for layout in layouts}
  spans = {layout: [] for layout in layouts}
  step = 3
  for r in range(rounds):
    order = list(layouts) if r % 2 == 0 else list(layouts)[::-1]
    for layout in order:
      jax.block_until_ready(states[layout])
      spans[layout].append(hardware.wait_for_quiet(quiet_load, quiet_timeout_s))
      began = time.perf_counter()
      states[layout], _ = trainers[layout].train(states[layout], step, step + steps)
      jax.block_until_ready(states[layout])
      times[layout].append((time.perf_counter() - began) / steps)
    step += steps
  rows = []
  for (members, num_devices), per_step in times.items():
    ms = statistics.median(per_step) * 1e3
    waits = spans[(members, num_devices)]
    rows.append({"members": members, "devices": num_devices, "ms_per_step": ms,
                 "ms_per_member_step": ms / members, "rounds_ms_per_step":
                 [t * 1e3 for t in per_step],
                 "rounds_load_before": [w["load_before"] for w in waits],
                 "quiet": all(w["quiet"] for w in waits)})
  return {"benchmark": "member_step", "date": datetime.date.today().isoformat(),
          "device": f"{jax.devices()[0].platform}, {jax.device_count()} JAX device(s)",
          "machine": hardware.machine_info(), "tier": tier, "steps_per_round": steps,
          "quiet_load": quiet_load,
          "command": " ".join([os.path.basename(sys.executable), "-m",
                               "benchmarks.member_step_bench"] + sys.argv[1:]),
          "layouts": rows}


def _layouts(text: str) -> list[tuple[int, int]]:
  try:
    pairs = [tuple(int(x) for x in item.split("x")) for item in text.split(",") if item]
  except ValueError:
    pairs = []
  if not pairs or any(len(p) != 2 or min(p) < 1 for p in pairs):
    raise argparse.ArgumentTypeError(f"--layouts: MEMBERSxDEVICES, comma-separated (e.g. "
                                     f"1x1,2x2), got {text!r}")
  return pairs


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m benchmarks.member_step_bench",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("--data_dir", required=True, help="TFDS data dir (built if missing)")
  parser.add_argument("--tier", default="default", help="synthetic_me tier")
  parser.add_argument("--layouts", type=_layouts, default=_layouts("1x1,2x2"),
                      help="MEMBERSxDEVICES, comma-separated")
  parser.add_argument("--steps", type=int, default=100, help="timed steps per round")
  parser.add_argument("--rounds", type=int, default=3)
  hardware.add_quiet_arguments(parser, "span")
  parser.add_argument("--out", required=True, help="JSON output path")
  args = parser.parse_args(argv)
  result = run(args.layouts, data_dir=args.data_dir, tier=args.tier, steps=args.steps,
               rounds=args.rounds, quiet_load=args.quiet_load,
               quiet_timeout_s=args.quiet_timeout_s)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(result, f, indent=2)
  for row in result["layouts"]:
    print(f"{row['members']} member(s) on {row['devices']} device(s): "
          f"{row['ms_per_step']:.2f} ms/step, {row['ms_per_member_step']:.2f} ms/member-step"
          f"{'' if row['quiet'] else ' (NOT quiet: provisional)'}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
