"""Command line: TV-L1 flow of two images, or cached flow features of a whole dataset.

    python -m mer_jax.flow FRAME0 FRAME1 --out flow.png [--overwrite]
    python -m mer_jax.flow dataset synthetic_me/default --out DIR [--data_dir D] [--size 112]

The first form writes a colour-wheel PNG of the flow from FRAME0 to FRAME1
(it never overwrites an input, nor an existing file without --overwrite). The
second computes (u, v, strain) onset->apex and apex->offset for every clip of
a built dataset, batched on the device, into
DIR/<dataset>/<config>/<version>/<key>/{flow.npz,manifest.json}, and reuses
that folder when it exists (see mer_jax/flow/cache.py).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

import numpy as np

from mer_jax import paths
from mer_jax.flow import tvl1


def _add_flow_arguments(parser: argparse.ArgumentParser) -> None:
  defaults = tvl1.TVL1Params()
  group = parser.add_argument_group("TV-L1 parameters (OpenCV DualTVL1 names and defaults)")
  group.add_argument("--tau", type=float, default=defaults.tau)
  group.add_argument("--lambda", dest="lambda_", type=float, default=defaults.lambda_)
  group.add_argument("--theta", type=float, default=defaults.theta)
  group.add_argument("--num-scales", type=int, default=defaults.num_scales)
  group.add_argument("--scale-step", type=float, default=defaults.scale_step)
  group.add_argument("--num-warps", type=int, default=defaults.num_warps)
  group.add_argument("--epsilon", type=float, default=defaults.epsilon)
  group.add_argument("--inner-iterations", type=int, default=defaults.inner_iterations)
  group.add_argument("--outer-iterations", type=int, default=defaults.outer_iterations)
  group.add_argument("--median-filtering", type=int, default=defaults.median_filtering)
  group.add_argument("--gamma", type=float, default=defaults.gamma)


def _params(args) -> tvl1.TVL1Params:
  return tvl1.TVL1Params(
      tau=args.tau, lambda_=args.lambda_, theta=args.theta, num_scales=args.num_scales,
      scale_step=args.scale_step, num_warps=args.num_warps, epsilon=args.epsilon,
      inner_iterations=args.inner_iterations, outer_iterations=args.outer_iterations,
      median_filtering=args.median_filtering, gamma=args.gamma)


def build_pair_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m mer_jax.flow", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("frame0", help="first image (any format OpenCV reads)")
  parser.add_argument("frame1", help="second image, same size")
  parser.add_argument("--out", required=True, help="PNG to write (colour-wheel flow)")
  parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
  parser.add_argument("--max-flow", type=float, default=None,
                      help="magnitude (pixels) drawn fully saturated (default: the largest)")
  parser.add_argument("--save-flow", default=None,
                      help="also save the raw (H, W, 2) flow as .npy (same overwrite rules)")
  _add_flow_arguments(parser)
  return parser


def build_dataset_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m mer_jax.flow dataset", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("dataset", help="built dataset, e.g. synthetic_me/default")
  parser.add_argument("--out", required=True, help="cache root folder")
  parser.add_argument("--data_dir", "--data-dir", dest="data_dir", default=None,
                      help="TFDS data_dir (default: TFDS's)")
  parser.add_argument("--split", default="train")
  parser.add_argument("--size", type=int, default=112, help="frame side S (default 112)")
  parser.add_argument("--strain", default="softnet", help="strain variant (softnet, ststnet, meb)")
  parser.add_argument("--batch-size", type=int, default=16, help="clips per device batch")
  parser.add_argument("--chunk-size", type=int, default=None,
                      help="pairs solved at a time inside a batch (bounds memory)")
  _add_flow_arguments(parser)
  return parser


def _check_output(path: str, inputs: Sequence[str], overwrite: bool, flag: str) -> None:
  """`mer_jax.paths.check_output_path`, plus: the output is a file, never a folder."""
  paths.check_output_path(path, inputs, overwrite=overwrite, what=flag)
  if os.path.isdir(path):
    raise ValueError(f"{flag} {path!r} is a folder, not a file")


def _read_image(path: str) -> np.ndarray:
  import cv2  # pylint: disable=import-outside-toplevel
  if not os.path.isfile(path):
    raise FileNotFoundError(f"input image {path!r} does not exist")
  image = cv2.imread(path, cv2.IMREAD_COLOR)
  if image is None:
    raise ValueError(f"cannot read image {path!r} (not an image format OpenCV reads)")
  return image[..., ::-1].astype(np.float32) / 255.0  # BGR uint8 -> RGB [0, 1]


def main_pair(argv: Sequence[str]) -> int:
  args = build_pair_parser().parse_args(argv)
  from mer_jax.flow import visualize  # pylint: disable=import-outside-toplevel
  try:
    if not args.out.lower().endswith(".png"):
      raise ValueError(f"--out {args.out!r} must be a .png file")
    _check_output(args.out, [args.frame0, args.frame1], args.overwrite, "--out")
    if args.save_flow:
      _check_output(args.save_flow, [args.frame0, args.frame1, args.out], args.overwrite,
                    "--save-flow")
    frame0, frame1 = _read_image(args.frame0), _read_image(args.frame1)
    if frame0.shape != frame1.shape:
      raise ValueError(f"{args.frame1!r} is {frame1.shape[1]}x{frame1.shape[0]}, "
                       f"{args.frame0!r} is {frame0.shape[1]}x{frame0.shape[0]}: "
                       "the two images must have the same size")
    import functools  # pylint: disable=import-outside-toplevel
    import jax  # pylint: disable=import-outside-toplevel
    # One compiled program: much faster than dispatching the pyramid ops one by one.
    solve = jax.jit(functools.partial(tvl1.tvl1_flow, **_params(args).as_dict()))
    flow = np.asarray(solve(frame0, frame1))
    visualize.write_flow_png(args.out, flow, args.max_flow)
    if args.save_flow:
      np.save(args.save_flow, flow)
  except (FileNotFoundError, ValueError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  magnitude = np.hypot(flow[..., 0], flow[..., 1])
  print(f"wrote {args.out} ({flow.shape[1]}x{flow.shape[0]}, |flow| mean "
        f"{magnitude.mean():.3f} px, max {magnitude.max():.3f} px)")
  return 0


def main_dataset(argv: Sequence[str]) -> int:
  args = build_dataset_parser().parse_args(argv)
  from mer_jax.flow import cache  # pylint: disable=import-outside-toplevel
  try:
    result = cache.compute_or_load(
        args.dataset, args.out, data_dir=args.data_dir, split=args.split, size=args.size,
        params=_params(args), strain_variant=args.strain, batch_size=args.batch_size,
        chunk_size=args.chunk_size)
  except (FileNotFoundError, ValueError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  print(f"{'computed' if result.computed else 'reused'} {result.path} "
        f"({len(result)} clips, {result.manifest['size']}x{result.manifest['size']})")
  return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if argv and argv[0] == "dataset":
    return main_dataset(argv[1:])
  return main_pair(argv)


if __name__ == "__main__":
  sys.exit(main())
