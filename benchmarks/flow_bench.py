"""Benchmark: `mer_jax.flow.tvl1_flow` (jitted, batched) against OpenCV's DualTVL1, same parameters.

    python -m benchmarks.flow_bench --out results.json [--tiny] [--repeats 5]

For each batch (B, H, W) of grey pairs (smooth textures moved by smooth
sub-pixel fields, the micro-expression regime) it reports, all in the same
run: the JAX time per batch (median of `repeats`, after a separately timed
compile, `block_until_ready`) and OpenCV's (`cv2.optflow.DualTVL1OpticalFlow`,
one pair after another as every MER project runs it, on the same pairs as
8-bit images), timed in alternating rounds so background load hits both
alike; pairs/s of each, the speed-up, and both solvers' average endpoint
error against the known field (border of 6 px excluded). The parameters are
OpenCV's defaults for both. `run(...)` returns the same dict for
`benchmarks.run`.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time
from typing import Optional, Sequence

import cv2
import jax
import numpy as np

from benchmarks import hardware
from benchmarks.magnify_bench import _interleaved_medians
from mer_jax import flow as flow_lib

SIZES = ((16, 112, 112), (64, 112, 112), (8, 224, 224))
TINY_SIZES = ((2, 48, 48),)
GOAL_SIZE = (64, 112, 112)
GOAL_SPEEDUP = 5.0
MARGIN = 6  # Border pixels left out of the endpoint error.


def make_pairs(batch: int, size: int, seed: int = 0, max_amplitude: float = 1.0):
  """Textured frames and their warps by smooth fields (amplitudes log-spaced 0.1..max).

  Returns `(frame0, frame1, truth)`: float32 `(B, S, S)` in [0, 1] quantised to
  8 bits (what both solvers see) and `(B, S, S, 2)` displacements with
  `frame0(p) = frame1(p + truth(p))`.
  """
  rng = np.random.default_rng(seed)
  grid_x, grid_y = np.meshgrid(np.arange(size, dtype=np.float32),
                               np.arange(size, dtype=np.float32))
  amplitudes = np.geomspace(0.1, max_amplitude, batch) if batch > 1 else [max_amplitude]
  frame0, frame1, truth = [], [], []
  for amplitude in amplitudes:
    image = np.zeros((size, size), np.float32)
    for sigma, weight in ((1.0, 0.4), (2.5, 0.6), (6.0, 0.8)):
      noise = cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0),
                               sigma)
      image += weight * noise / noise.std()
    image = 0.1 + 0.8 * (image - image.min()) / (image.max() - image.min())
    field = cv2.GaussianBlur(rng.standard_normal((size, size, 2)).astype(np.float32), (0, 0),
                             size / 6)
    field *= amplitude / np.abs(field).max()
    # Exact inversion of q = p + d(p): p = q - d(p) by fixed-point iteration.
    px, py = grid_x, grid_y
    for _ in range(30):
      px = grid_x - cv2.remap(field[..., 0], px, py, cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
      py = grid_y - cv2.remap(field[..., 1], px, py, cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
    moved = cv2.remap(image, px, py, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)
    frame0.append(image)
    frame1.append(np.clip(moved, 0.0, 1.0))
    truth.append(field)
  quantise = lambda x: (np.round(np.stack(x) * 255.0) / 255.0).astype(np.float32)
  return quantise(frame0), quantise(frame1), np.stack(truth)


def opencv_solver(params: flow_lib.TVL1Params):
  return cv2.optflow.DualTVL1OpticalFlow_create(
      tau=params.tau, lambda_=params.lambda_, theta=params.theta, nscales=params.num_scales,
      warps=params.num_warps, epsilon=params.epsilon, innnerIterations=params.inner_iterations,
      outerIterations=params.outer_iterations, scaleStep=params.scale_step, gamma=params.gamma,
      medianFiltering=params.median_filtering)


def opencv_flows(solver, frames0_u8: np.ndarray, frames1_u8: np.ndarray) -> np.ndarray:
  return np.stack([solver.calc(a, b, None) for a, b in zip(frames0_u8, frames1_u8)])


def _epe(flow: np.ndarray, truth: np.ndarray) -> float:
  error = np.linalg.norm(flow - truth, axis=-1)
  return float(error[:, MARGIN:-MARGIN, MARGIN:-MARGIN].mean())


def run(sizes: Optional[Sequence[Sequence[int]]] = None, *, tiny: bool = False,
        repeats: int = 5, peer_repeats: int = 3, chunk_size: Optional[int] = None,
        seed: int = 0) -> dict:
  """Runs the benchmark; returns a JSON-serialisable dict.

  Args:
    sizes: `(B, H, W)` batches of pairs (square frames); default `SIZES`
      (`TINY_SIZES` with `tiny`).
    tiny: small sizes and 2 repeats (smoke test).
    repeats, peer_repeats: timed repetitions of a whole batch (median reported).
    chunk_size: `tvl1_flow`'s chunk_size (None: the whole batch at once).
    seed: seed of the textures and fields.
  """
  if sizes is None:
    sizes = TINY_SIZES if tiny else SIZES
  if tiny:
    repeats, peer_repeats = 2, 1
  params = flow_lib.TVL1Params()
  solver = opencv_solver(params)
  rows = []
  for batch, height, width in sizes:
    if height != width:
      raise ValueError(f"flow_bench sizes are square, got {height}x{width}")
    frame0, frame1, truth = make_pairs(int(batch), int(height), seed)
    u8 = lambda x: np.round(x * 255.0).astype(np.uint8)
    frame0_u8, frame1_u8 = u8(frame0), u8(frame1)
    fn = jax.jit(functools.partial(flow_lib.tvl1_flow, chunk_size=chunk_size,
                                   **params.as_dict()))
    device0, device1 = jax.device_put(frame0), jax.device_put(frame1)
    start = time.perf_counter()
    compiled = fn.lower(device0, device1).compile()
    compile_s = time.perf_counter() - start
    ours = np.asarray(compiled(device0, device1))
    theirs = opencv_flows(solver, frame0_u8, frame1_u8)
    medians = _interleaved_medians(
        {"jax": lambda: compiled(device0, device1).block_until_ready(),
         "opencv": lambda: opencv_flows(solver, frame0_u8, frame1_u8)},
        {"jax": repeats, "opencv": peer_repeats})
    rows.append({
        "batch": int(batch), "height": int(height), "width": int(width),
        "compile_s": compile_s, "jax_s": medians["jax"], "opencv_s": medians["opencv"],
        "jax_pairs_per_s": batch / medians["jax"],
        "opencv_pairs_per_s": batch / medians["opencv"],
        "speedup_vs_opencv": medians["opencv"] / medians["jax"],
        "jax_epe_px": _epe(ours, truth), "opencv_epe_px": _epe(theirs, truth),
        "mean_true_flow_px": float(np.linalg.norm(truth, axis=-1).mean()),
    })
  goal = [r for r in rows if (r["batch"], r["height"], r["width"]) == GOAL_SIZE]
  return {
      "benchmark": "flow",
      "machine": hardware.machine_info(),
      "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
      "device": hardware.device_info(jax.devices()[0]),
      "libraries": {"jax": jax.__version__, "opencv": cv2.__version__, "numpy": np.__version__},
      "params": params.as_dict(), "chunk_size": chunk_size,
      "repeats": repeats, "peer_repeats": peer_repeats,
      "peer": "cv2.optflow.DualTVL1OpticalFlow, one pair at a time, 8-bit grey frames",
      "results": rows,
      "goal": {"size": list(GOAL_SIZE),
               "target": f"speedup_vs_opencv >= {GOAL_SPEEDUP} (CPU); >= 10000 pairs/s on a GPU",
               "met": (goal[0]["speedup_vs_opencv"] >= GOAL_SPEEDUP) if goal else None},
  }


def format_table(result: dict) -> str:
  """Markdown table of `run(...)` results."""
  lines = ["| B,H,W | JAX ms/batch | compile s | OpenCV ms/batch | JAX pairs/s | "
           "OpenCV pairs/s | speed-up | EPE JAX px | EPE OpenCV px |",
           "|---|---|---|---|---|---|---|---|---|"]
  for r in result["results"]:
    lines.append(
        f"| {r['batch']},{r['height']},{r['width']} | {r['jax_s'] * 1e3:.0f} | "
        f"{r['compile_s']:.1f} | {r['opencv_s'] * 1e3:.0f} | {r['jax_pairs_per_s']:.1f} | "
        f"{r['opencv_pairs_per_s']:.1f} | {r['speedup_vs_opencv']:.2f} | "
        f"{r['jax_epe_px']:.4f} | {r['opencv_epe_px']:.4f} |")
  return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default=None, help="JSON output path")
  parser.add_argument("--tiny", action="store_true", help="tiny sizes (smoke test)")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--peer-repeats", type=int, default=3)
  parser.add_argument("--chunk-size", type=int, default=None)
  args = parser.parse_args(argv)
  result = run(tiny=args.tiny, repeats=args.repeats, peer_repeats=args.peer_repeats,
               chunk_size=args.chunk_size)
  print(format_table(result))
  print("goal:", result["goal"])
  if args.out:
    with open(args.out, "w") as f:
      json.dump(result, f, indent=2)


if __name__ == "__main__":
  main()
