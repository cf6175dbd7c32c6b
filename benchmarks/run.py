"""One entry point for every mer_jax benchmark and its peers, in one run.

    python -m benchmarks.run --suite all --out results.json
    python -m benchmarks.run --suite train,inference --model resnet50_lstm:2x8x112 \
        --model small --out /tmp/r.json
    python -m benchmarks.run --suite all --device gpu --half_precision --out gpu.json

Suites (comma-separated, or "all"):
  train      the trainer's train step (`mer_jax.steps.compile_steps`, shard_map on a
             `--num_devices` mesh) per `--model`: compile time, median step
             time, clips/s, frames/s, XLA FLOPs, achieved FLOP/s, MFU; and the
             PyTorch peer (`benchmarks.torch_peer`) at the same shape.
  inference  the trainer's eval step (model.apply in eval mode, jitted), same.
  magnify    `benchmarks.magnify_bench.run` (JAX vs NumPy/OpenCV, copy floor).
  flow       `benchmarks.flow_bench.run` (batched JAX TV-L1 vs OpenCV's TV-L1, same parameters).
  input      synthetic_me records -> device-ready batches (`benchmarks.input_bench`),
             against the train step's consumption (goal >= 2x).
  scaling    the train step on 1, 2, 4, 8 devices, one process each, fixed
             per-device batch (`benchmarks.train_bench.scaling`).

Writes the JSON to `--out` and a Markdown summary next to it (same name,
`.md`), and prints the summary. Every argument is checked before any compute,
including that each selected suite's module imports here (a suite missing a
dependency is refused by name). No suite needs TensorFlow. `--xla_flags`
appends XLA flags for the JAX side (for example to try XLA CPU settings
against the PyTorch peer); they are recorded in the JSON.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import subprocess
import sys
import time
from typing import Any, Optional, Sequence

SUITES = ("train", "inference", "magnify", "flow", "input", "scaling")
# The module each suite runs, imported only when the suite is selected: a suite whose needs are
# missing here (OpenCV contrib, the records' readers, ...) is refused by name before any compute,
# and the others run (none of them needs TensorFlow).
SUITE_MODULES = {
    "train": "benchmarks.train_bench", "inference": "benchmarks.train_bench",
    "magnify": "benchmarks.magnify_bench", "flow": "benchmarks.flow_bench",
    "input": "benchmarks.input_bench", "scaling": "benchmarks.train_bench",
}
DEFAULT_MODELS = ("resnet50_lstm:2x8x112", "small")
TINY_MODELS = ("tiny_resnet_lstm",)  # Has a PyTorch twin; also feeds the input suite.


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 2)[2])
  parser.add_argument("--suite", default="all",
                      help=f"comma-separated subset of {','.join(SUITES)}, or 'all'")
  parser.add_argument("--out", default="results.json", help="JSON output path (the Markdown "
                      "summary goes next to it with a .md suffix)")
  parser.add_argument("--device", choices=("auto", "cpu", "gpu", "tpu"), default="auto",
                      help="JAX platform to run on (auto: JAX's default backend); torch uses "
                      "CUDA for 'gpu' when it sees it")
  parser.add_argument("--half_precision", action="store_true",
                      help="bfloat16 compute (parameters float32), as config.half_precision; "
                      "MFU then uses the bf16 peak")
  parser.add_argument("--model", action="append", default=None, metavar="NAME[:BxNxS]",
                      help="model and shape (batch x frames x square size) for train/inference; "
                      f"repeatable; default {' '.join(DEFAULT_MODELS)}; models: resnet50_lstm, "
                      "small, tiny, tiny_resnet_lstm; without a shape, the model's default")
  parser.add_argument("--num_devices", type=int, default=1,
                      help="devices the train/inference/input batch is split over")
  parser.add_argument("--repeats", type=int, default=5, help="timed repeats (median reported)")
  parser.add_argument("--warmup", type=int, default=2, help="untimed calls before timing")
  parser.add_argument("--peer", action=argparse.BooleanOptionalAction, default=True,
                      help="also time the PyTorch peer")
  parser.add_argument("--torch_threads", type=int, default=None,
                      help="torch intra-op threads (default: the cores XLA uses)")
  parser.add_argument("--magnify_sizes", default=None, metavar="BxTxHxW[,...]",
                      help="magnify suite sizes (default 4x64x112x112; 'all' for "
                      "magnify_bench.SIZES)")
  parser.add_argument("--input_model", default=None, metavar="NAME[:BxNxS]",
                      help="model/shape whose input config the input suite feeds (default: "
                      "'small' at its default shape, or the first --model)")
  parser.add_argument("--input_config", choices=("tiny", "default"), default="default",
                      help="synthetic_me builder config to build for the input suite")
  parser.add_argument("--data_dir", default=None,
                      help="TFDS data_dir with synthetic_me already built (default: build "
                      "into a temporary directory)")
  parser.add_argument("--input_batches", type=int, default=20, help="timed input batches")
  parser.add_argument("--scaling_model", default=None,
                      help="model of the scaling suite (default: small; tiny with --tiny)")
  parser.add_argument("--scaling_devices", default="1,2,4,8",
                      help="comma-separated device counts for the scaling suite")
  parser.add_argument("--scaling_per_device_batch", type=int, default=4,
                      help="clips per device in the scaling suite (fixed)")
  parser.add_argument("--xla_flags", default=None, metavar="FLAGS",
                      help="extra XLA flags for the JAX side, appended to $XLA_FLAGS before JAX "
                      "starts (e.g. '--xla_cpu_multi_thread_eigen=true'); checked in a "
                      "throwaway process first, recorded in the JSON; the scaling suite's "
                      "processes inherit them")
  parser.add_argument("--tiny", action="store_true",
                      help="tiny models, shapes and data, 1 repeat (smoke test)")
  return parser


def _parse_suites(text: str, parser: argparse.ArgumentParser) -> list[str]:
  names = [s.strip() for s in text.split(",") if s.strip()]
  if names == ["all"]:
    return list(SUITES)
  unknown = [s for s in names if s not in SUITES]
  if unknown or not names:
    parser.error(f"--suite: unknown suite(s) {unknown or [text]}; choose from "
                 f"{','.join(SUITES)} or 'all'")
  return [s for s in SUITES if s in names]  # Canonical order.


def _parse_model(text: str, parser: argparse.ArgumentParser, flag: str):
  from benchmarks import train_bench  # pylint: disable=import-outside-toplevel
  name, _, shape_text = text.partition(":")
  if name not in train_bench.model_configs():
    parser.error(f"{flag}: unknown model {name!r}; choose from "
                 f"{sorted(train_bench.model_configs())}")
  try:
    shape = train_bench.parse_shape(shape_text) if shape_text else train_bench.DEFAULT_SHAPES[name]
  except ValueError as e:
    parser.error(f"{flag} {text!r}: {e}")
  return name, shape


def _parse_ints(text: str, parser: argparse.ArgumentParser, flag: str) -> list[int]:
  try:
    values = [int(v) for v in text.split(",") if v.strip()]
  except ValueError:
    values = []
  if not values or min(values) < 1:
    parser.error(f"{flag}: expected comma-separated positive integers, got {text!r}")
  return values


def _select_devices(device: str, parser: argparse.ArgumentParser):
  """The JAX devices of the requested platform; a parser error if there are none."""
  import jax  # pylint: disable=import-outside-toplevel
  if device == "auto":
    return jax.devices()
  try:
    devices = jax.devices(device)
  except RuntimeError as e:
    parser.error(f"--device {device}: no {device.upper()} visible to JAX on this machine "
                 f"(default backend: {jax.default_backend()}): {e}")
  if not devices:
    parser.error(f"--device {device}: no {device.upper()} devices")
  return devices


def _apply_xla_flags(extra: str, parser: argparse.ArgumentParser) -> None:
  """Appends `extra` to $XLA_FLAGS for this process, after checking XLA accepts them.

  XLA reads its flags once, when JAX starts its backend, and aborts the process on an unknown
  flag; so the flags are tried in a throwaway process first, and refused if this process has
  already started JAX.
  """
  flags = " ".join(f for f in (os.environ.get("XLA_FLAGS", ""), extra.strip()) if f)
  if "jax" in sys.modules:
    from jax._src import xla_bridge  # pylint: disable=import-outside-toplevel
    if xla_bridge.backends_are_initialized():
      parser.error("--xla_flags: JAX has already started in this process, so XLA would ignore "
                   "the flags; run `python -m benchmarks.run ...` as a fresh process")
  env = dict(os.environ, XLA_FLAGS=flags)
  probe = subprocess.run([sys.executable, "-c", "import jax; jax.devices()"], env=env,
                         capture_output=True, text=True, timeout=300, check=False)
  if probe.returncode != 0:
    parser.error(f"--xla_flags {extra!r}: XLA refused them (exit {probe.returncode}):\n"
                 f"{probe.stderr.strip()[-1500:]}")
  os.environ["XLA_FLAGS"] = flags


def _import_suites(suites: Sequence[str], parser: argparse.ArgumentParser) -> None:
  """Imports each selected suite's module; a parser error naming what it lacks if one fails."""
  for suite in suites:
    module = SUITE_MODULES[suite]
    try:
      importlib.import_module(module)
    except Exception as e:  # pylint: disable=broad-except
      missing = e.name if isinstance(e, ImportError) else None
      parser.error(f"--suite {suite}: {module} cannot be imported here "
                   f"({type(e).__name__}: {e})"
                   + (f"; it needs {missing!r}" if missing else "")
                   + ". Install what it needs (the GPU recipe in docs/gpu.md lists the wheels) "
                   f"or leave {suite!r} out of --suite")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  """Parses and validates every argument (shapes, device, counts) before any compute."""
  parser = build_parser()
  args = parser.parse_args(argv)
  args.suites = _parse_suites(args.suite, parser)
  if args.xla_flags:
    _apply_xla_flags(args.xla_flags, parser)
  _import_suites(args.suites, parser)
  for flag in ("repeats", "num_devices", "input_batches", "scaling_per_device_batch"):
    if getattr(args, flag) < 1:
      parser.error(f"--{flag} must be >= 1, got {getattr(args, flag)}")
  if args.warmup < 0:
    parser.error(f"--warmup must be >= 0, got {args.warmup}")
  if args.torch_threads is not None and args.torch_threads < 1:
    parser.error(f"--torch_threads must be >= 1, got {args.torch_threads}")
  if args.tiny:
    args.repeats, args.warmup = 1, 1
  default_models = TINY_MODELS if args.tiny else DEFAULT_MODELS
  args.models = [_parse_model(m, parser, "--model") for m in (args.model or default_models)]
  input_default = "tiny_resnet_lstm" if args.tiny else "small"
  args.input_target = _parse_model(args.input_model or input_default, parser, "--input_model")
  args.scaling_target = _parse_model(args.scaling_model or ("tiny" if args.tiny else "small"),
                                     parser, "--scaling_model")
  args.scaling_counts = _parse_ints(args.scaling_devices, parser, "--scaling_devices")
  if args.tiny:
    args.input_config = "tiny"
    if args.scaling_devices == parser.get_default("scaling_devices"):
      args.scaling_counts = [1, 2]
    if args.scaling_per_device_batch == parser.get_default("scaling_per_device_batch"):
      args.scaling_per_device_batch = 1
  args.magnify_shapes = None
  if args.magnify_sizes and args.magnify_sizes != "all":
    args.magnify_shapes = []
    for text in args.magnify_sizes.split(","):
      try:
        size = tuple(int(v) for v in text.lower().split("x"))
      except ValueError:
        size = ()
      if len(size) != 4 or min(size) < 1:
        parser.error(f"--magnify_sizes: {text!r} must be BxTxHxW with positive sizes")
      args.magnify_shapes.append(size)
  if args.data_dir and not os.path.isdir(args.data_dir):
    parser.error(f"--data_dir {args.data_dir!r} is not a directory")
  out_dir = os.path.dirname(os.path.abspath(args.out))
  if not os.path.isdir(out_dir):
    parser.error(f"--out: directory {out_dir!r} does not exist")

  from benchmarks import train_bench  # pylint: disable=import-outside-toplevel
  args.devices = _select_devices(args.device, parser)
  if args.num_devices > len(args.devices):
    parser.error(f"--num_devices {args.num_devices}: only {len(args.devices)} "
                 f"{args.devices[0].platform} device(s) visible (on CPU set "
                 "JAX_NUM_CPU_DEVICES before starting)")
  checks = []
  if {"train", "inference"} & set(args.suites):
    checks += [(name, shape, args.num_devices) for name, shape in args.models]
  if "input" in args.suites:
    checks.append((*args.input_target, args.num_devices))
    if args.input_target[1].num_frames < 2:
      parser.error("--input_model: the input pipeline needs num_frames >= 2")
  if "scaling" in args.suites:
    name, shape = args.scaling_target
    checks.append((name, train_bench.Shape(args.scaling_per_device_batch, shape.num_frames,
                                           shape.image_size), 1))
  for name, shape, devices in checks:
    try:
      train_bench.check_shape(name, shape, devices)
    except ValueError as e:
      parser.error(str(e))
  return args


# --------------------------------------------------------------------------------------------
# Markdown summary.
# --------------------------------------------------------------------------------------------

def _fmt(value: Any, spec: str = ".3g") -> str:
  return "n/a" if value is None else format(value, spec)


def _step_table(results: dict, suite: str) -> list[str]:
  lines = [f"| model | B x N x S | compile s | step ms | clips/s | frames/s | GFLOP/step | "
           f"GFLOP/s | MFU | torch step ms | mer_jax/torch median (best) |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
  for row in results:
    r = row["mer_jax"][suite]
    peer = row.get("peer", {})
    peer_step = peer[suite]["step_s"] if peer.get("available") else None
    ratio = row.get("ratio_vs_peer", {}).get(suite)
    best = row.get("ratio_vs_peer_best", {}).get(suite)
    s = row["mer_jax"]["shape"]
    mfu = f"{r['mfu'] * 100:.1f}%" if r.get("mfu") is not None else "n/a"
    lines.append(
        f"| {row['model']} | {s['batch']}x{s['num_frames']}x{s['image_size']} | "
        f"{r['compile_s']:.1f} | {r['step_s'] * 1e3:.1f} | {r['clips_per_s']:.3g} | "
        f"{r['frames_per_s']:.3g} | {_fmt(r['flops_per_step'] and r['flops_per_step'] / 1e9)} | "
        f"{_fmt(r['achieved_flops_per_s'] and r['achieved_flops_per_s'] / 1e9)} | {mfu} | "
        f"{_fmt(peer_step and peer_step * 1e3, '.1f')} | {_fmt(ratio, '.2f')} "
        f"({_fmt(best, '.2f')}) |")
  return lines


def summary_markdown(result: dict) -> str:
  """The Markdown summary of one `run` result."""
  m, d = result["machine"], result["device"]
  lines = [f"# mer_jax benchmarks ({result['date']})", "",
           f"Command: `{result['command']}`", "",
           f"Machine: {m['cpu_model']}, {m['usable_cores']} usable cores, "
           f"{m['memory_gib']} GiB; load average (1/5/15 min) at start "
           f"{'/'.join(f'{x:.1f}' for x in m['load_average_1_5_15'] or [])}; "
           f"device {d['platform']} ({d['device_kind']}); jax {result['versions']['jax']}, "
           f"flax {result['versions']['flax']}, torch {result['versions']['torch']}; "
           f"XLA_FLAGS {result['settings'].get('xla_flags') or '(unset)'!r}; "
           f"{'bfloat16' if result['settings'].get('half_precision') else 'float32'}.", ""]
  suites = result["suites"]
  for suite, title in (("train", "Train step"), ("inference", "Inference (eval step)")):
    if suite in suites:
      lines += [f"## {title}", ""] + _step_table(suites[suite], suite) + [""]
  if "train" in suites or "inference" in suites:
    peer = result.get("peer_settings", {})
    lines += [f"Peer: PyTorch, {peer.get('torch_threads')} intra-op threads (XLA's cores: "
              f"{peer.get('xla_cores')}); mer_jax/torch = torch step time / mer_jax step time "
              "(> 1: mer_jax faster), of the medians and (best) of the fastest repeats.", ""]
  if "magnify" in suites:
    from benchmarks import magnify_bench  # pylint: disable=import-outside-toplevel
    lines += ["## Eulerian magnification", "", magnify_bench.format_table(suites["magnify"]),
              "", f"Goal: {suites['magnify']['goal']}", ""]
  if "flow" in suites:
    from benchmarks import flow_bench  # pylint: disable=import-outside-toplevel
    lines += ["## Optical flow (TV-L1)", "", flow_bench.format_table(suites["flow"]), ""]
  if "input" in suites:
    r = suites["input"]
    lines += ["## Input pipeline", "",
              "| dataset | model, B x N x S | examples/s | train step clips/s | ratio (goal >= 2) "
              "| end-to-end clips/s | end-to-end / resident |", "|---|---|---|---|---|---|---|",
              f"| {r['dataset']} | {r['model']}, {r['shape']['batch']}x{r['shape']['num_frames']}"
              f"x{r['shape']['image_size']} | {r['examples_per_s']:.1f} | "
              f"{r['train_clips_per_s']:.1f} | {r['ratio_to_train_step']:.2f} | "
              f"{_fmt(r.get('end_to_end_clips_per_s'), '.1f')} | "
              f"{_fmt(r.get('end_to_end_over_resident'), '.2f')} |", ""]
  if "scaling" in suites:
    r = suites["scaling"]
    lines += ["## Scaling (train step, fixed per-device batch)", "",
              f"{r['model']}, {r['per_device_batch']} clips/device, N={r['num_frames']}, "
              f"{r['image_size']} px; {r['note']}.", "",
              "| devices | global batch | step ms | clips/s | efficiency |",
              "|---|---|---|---|---|"]
    for row in r["rows"]:
      if "skipped" in row:
        lines.append(f"| {row['num_devices']} | skipped: {row['skipped']} | | | |")
      else:
        lines.append(f"| {row['num_devices']} | {row['global_batch']} | "
                     f"{row['step_s'] * 1e3:.1f} | {row['clips_per_s']:.3g} | "
                     f"{row['efficiency']:.2f} |")
    lines.append("")
  return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# The run.
# --------------------------------------------------------------------------------------------

def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
  """Runs the selected suites; returns the JSON-serialisable result."""
  from benchmarks import hardware  # pylint: disable=import-outside-toplevel
  from benchmarks import train_bench  # pylint: disable=import-outside-toplevel

  devices = args.devices[:args.num_devices]
  platform = devices[0].platform
  peer_device = "gpu" if platform == "gpu" else "cpu"
  xla_cores = hardware.usable_cores()
  torch_threads = args.torch_threads or xla_cores
  result: dict[str, Any] = {
      "date": datetime.date.today().isoformat(),
      "command": command,
      "machine": hardware.machine_info(),
      "device": {**hardware.device_info(devices[0]), "used_devices": len(devices)},
      "versions": hardware.library_versions(),
      "settings": {"repeats": args.repeats, "warmup": args.warmup,
                   "half_precision": args.half_precision, "tiny": args.tiny,
                   "xla_flags": os.environ.get("XLA_FLAGS", "")},
      "suites": {},
  }
  suites = result["suites"]
  train_rates: dict[tuple, float] = {}
  prepared_steps: dict[tuple, Any] = {}  # Compiled steps, reused by the input suite.
  timing_suites = [s for s in ("train", "inference") if s in args.suites]
  if timing_suites:
    result["peer_settings"] = {"torch_threads": torch_threads, "xla_cores": xla_cores,
                               "enabled": args.peer,
                               "note": "torch intra-op threads set to the cores XLA's CPU "
                                       "thread pool uses"}
    rows = []
    for name, shape in args.models:
      print(f"[benchmarks] {'+'.join(timing_suites)}: {name} {shape}", file=sys.stderr,
            flush=True)
      prepared = train_bench.prepare(name, shape, devices, half_precision=args.half_precision,
                                     with_eval="inference" in timing_suites)
      jax_result = train_bench.run_model(name, shape, devices, repeats=args.repeats,
                                         warmup=args.warmup, half_precision=args.half_precision,
                                         suites=timing_suites, prepared=prepared)
      prepared_steps[(name, shape)] = prepared
      row: dict[str, Any] = {"model": name, "mer_jax": jax_result}
      if "train" in jax_result:
        train_rates[(name, shape)] = jax_result["train"]["clips_per_s"]
      if args.peer:
        peer = train_bench.run_peer(name, shape, device=peer_device, repeats=args.repeats,
                                    warmup=args.warmup, threads=torch_threads,
                                    half_precision=args.half_precision)
        row["peer"] = peer
        if peer.get("available"):
          row["ratio_vs_peer"] = {s: peer[s]["step_s"] / jax_result[s]["step_s"]
                                  for s in timing_suites}
          # Fastest repeat of each: less sensitive to other processes on the cores.
          row["ratio_vs_peer_best"] = {s: min(peer[s]["times_s"]) / min(jax_result[s]["times_s"])
                                       for s in timing_suites}
      rows.append(row)
    for suite in timing_suites:
      suites[suite] = rows
  if "magnify" in args.suites:
    print("[benchmarks] magnify", file=sys.stderr, flush=True)
    from benchmarks import magnify_bench  # pylint: disable=import-outside-toplevel
    if args.tiny:
      suites["magnify"] = magnify_bench.run(tiny=True, variants=magnify_bench.VARIANTS[:1])
    else:
      sizes = args.magnify_shapes or ([magnify_bench.GOAL_SIZE] if args.magnify_sizes is None
                                      else None)
      suites["magnify"] = magnify_bench.run(sizes=sizes, repeats=args.repeats)
  if "flow" in args.suites:
    print("[benchmarks] flow", file=sys.stderr, flush=True)
    from benchmarks import flow_bench  # pylint: disable=import-outside-toplevel
    suites["flow"] = flow_bench.run(tiny=args.tiny, repeats=args.repeats)
  if "input" in args.suites:
    print("[benchmarks] input", file=sys.stderr, flush=True)
    from benchmarks import input_bench  # pylint: disable=import-outside-toplevel
    name, shape = args.input_target
    suites["input"] = input_bench.run(
        name, shape, devices, builder_config=args.input_config, data_dir=args.data_dir,
        num_batches=args.input_batches, warmup_batches=1 if args.tiny else 3,
        train_clips_per_s=train_rates.get((name, shape)),
        prepared=prepared_steps.get((name, shape)), half_precision=args.half_precision)
  if "scaling" in args.suites:
    print("[benchmarks] scaling", file=sys.stderr, flush=True)
    name, shape = args.scaling_target
    suites["scaling"] = train_bench.scaling(
        name, per_device_batch=args.scaling_per_device_batch, num_frames=shape.num_frames,
        image_size=shape.image_size, device_counts=args.scaling_counts, platform=platform,
        repeats=args.repeats, warmup=args.warmup, half_precision=args.half_precision)
  return result


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
  """Parses `argv`, runs, writes `--out` and its `.md` summary; returns the result."""
  args = parse_args(argv)
  command = "python -m benchmarks.run " + " ".join(
      argv if argv is not None else sys.argv[1:])
  start = time.perf_counter()
  result = run(args, command)
  result["wall_s"] = time.perf_counter() - start
  markdown = summary_markdown(result)
  with open(args.out, "w") as f:
    json.dump(result, f, indent=2, default=str)
    f.write("\n")
  markdown_path = os.path.splitext(args.out)[0] + ".md"
  with open(markdown_path, "w") as f:
    f.write(markdown + "\n")
  print(markdown)
  print(f"wrote {args.out} and {markdown_path}", file=sys.stderr)
  return result


if __name__ == "__main__":
  main()
