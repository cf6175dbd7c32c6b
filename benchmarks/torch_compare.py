r"""mer_jax vs PyTorch on one model and shape, timed in alternating rounds (train and inference).

    python -m benchmarks.torch_compare --model resnet50_lstm:2x8x112 --rounds 5 \
        --steps_per_round 2 --out /tmp/torch_compare.json
    python -m benchmarks.torch_compare ... --xla_flags="--xla_cpu_use_thunk_runtime=false"

Both sides are prepared first (mer_jax: the trainer's own compiled steps from
`benchmarks.train_bench.prepare`; PyTorch: `benchmarks.torch_peer.make_steps`, the same
architecture, loss, clipping and AdamW, `torch.set_num_threads` = the cores). Then each round
times `--steps_per_round` train steps of one side, then of the other (the first side alternates
between rounds), and the same for inference, so a change of machine load hits both alike. The
load average is recorded at the start of every round; the medians over all timed steps and the
ratio torch / mer_jax (> 1: mer_jax faster) are reported. `--xla_flags` are set before JAX
starts (recorded in the JSON).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m benchmarks.torch_compare",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("--model", default="resnet50_lstm:2x8x112", help="NAME:BxNxS")
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--steps_per_round", type=int, default=2)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--threads", type=int, default=os.cpu_count())
  parser.add_argument("--xla_flags", default="")
  parser.add_argument("--out", required=True)
  args = parser.parse_args(argv)
  if args.rounds < 1 or args.steps_per_round < 1:
    parser.error("--rounds and --steps_per_round must be >= 1")
  if args.xla_flags:
    if "jax" in sys.modules:
      parser.error("--xla_flags must be set before JAX starts (run this module directly)")
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + args.xla_flags).strip()

  import jax  # pylint: disable=import-outside-toplevel
  from benchmarks import torch_peer  # pylint: disable=import-outside-toplevel
  from benchmarks import train_bench  # pylint: disable=import-outside-toplevel
  from mer_jax import schema  # pylint: disable=import-outside-toplevel

  name, _, shape_text = args.model.partition(":")
  shape = train_bench.parse_shape(shape_text) if shape_text else train_bench.DEFAULT_SHAPES[name]
  prepared = train_bench.prepare(name, shape, jax.devices()[:1])
  config = prepared.config
  torch_train, torch_infer, torch_model, _ = torch_peer.make_steps(
      config.model, num_classes=schema.NUM_CLASSES, batch=shape.batch,
      num_frames=shape.num_frames, image_size=shape.image_size, device="cpu",
      threads=args.threads, learning_rate=config.learning_rate,
      weight_decay=config.weight_decay, grad_clip_norm=config.grad_clip_norm)

  state = prepared.state

  def jax_train():
    nonlocal state
    state, metrics = prepared.train(state, prepared.batch)
    jax.block_until_ready((state, metrics))

  def jax_infer():
    jax.block_until_ready(prepared.eval(state, prepared.batch))

  def torch_train_mode():
    torch_model.train()
    torch_train()

  def torch_infer_mode():
    torch_model.eval()
    torch_infer()

  sides = {"train": {"mer_jax": jax_train, "torch": torch_train_mode},
           "inference": {"mer_jax": jax_infer, "torch": torch_infer_mode}}
  for suite in sides.values():
    for fn in suite.values():
      for _ in range(args.warmup):
        fn()
  times = {suite: {side: [] for side in fns} for suite, fns in sides.items()}
  loads = []
  for r in range(args.rounds):
    loads.append(os.getloadavg()[0])
    for suite, fns in sides.items():
      order = list(fns) if r % 2 == 0 else list(fns)[::-1]
      for side in order:
        for _ in range(args.steps_per_round):
          began = time.perf_counter()
          fns[side]()
          times[suite][side].append(time.perf_counter() - began)
    print(f"round {r + 1}: load {loads[-1]:.2f}; " + "; ".join(
        f"{suite} {side} {statistics.median(t[side][-args.steps_per_round:]) * 1e3:.0f} ms"
        for suite, t in ((s, times[s]) for s in times) for side in t), flush=True)

  result = {
      "benchmark": "torch_compare", "date": datetime.date.today().isoformat(),
      "device": f"CPU ({platform.processor() or platform.machine()}), {os.cpu_count()} cores",
      "command": " ".join(["python", "-m", "benchmarks.torch_compare"] + list(argv or sys.argv[1:])),
      "model": args.model, "num_parameters": prepared.num_parameters,
      "xla_flags": os.environ.get("XLA_FLAGS", ""), "torch_threads": args.threads,
      "load_average_per_round": loads, "compile_train_s": prepared.compile_train_s,
      "suites": {}}
  for suite, t in times.items():
    jax_s, torch_s = statistics.median(t["mer_jax"]), statistics.median(t["torch"])
    result["suites"][suite] = {"mer_jax_ms": jax_s * 1e3, "torch_ms": torch_s * 1e3,
                               "torch_over_mer_jax": torch_s / jax_s, "times_s": t}
    print(f"{suite}: mer_jax {jax_s * 1e3:.0f} ms, torch {torch_s * 1e3:.0f} ms, "
          f"torch/mer_jax {torch_s / jax_s:.2f}")
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(result, f, indent=2)
  return 0


if __name__ == "__main__":
  sys.exit(main())
