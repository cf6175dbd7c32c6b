"""Command line: magnify a video file or an image folder and write a side-by-side comparison.

    python -m mer_jax.magnify in.mp4 out.mp4 --alpha 10 --low-hz 1 --high-hz 20
    python -m mer_jax.magnify frames_dir/ out_dir --fps 200 --alpha 8 --low-hz 1 --high-hz 20

Writes `out` (video for a video extension, else a PNG folder) and
`out_side_by_side` (input left, magnified right) unless `--side-by-side ""`.
An output that is (or resolves to) the input, or that already exists, is
refused (exit code 2) unless `--overwrite` is given; the input is never
overwritten (`mer_jax.paths.check_output_path`).
"""

from __future__ import annotations

import argparse
import functools
import sys
from typing import Optional, Sequence

import jax
import numpy as np

from mer_jax.magnify import core
from mer_jax import paths
from mer_jax.magnify import video_io


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m mer_jax.magnify", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("input", help="video file or folder of images")
  parser.add_argument("output", help="video file (.mp4, .avi, ...) or folder for PNG frames")
  parser.add_argument("--alpha", type=float, required=True, help="amplification")
  parser.add_argument("--low-hz", type=float, required=True, help="pass band low edge (Hz)")
  parser.add_argument("--high-hz", type=float, required=True, help="pass band high edge (Hz)")
  parser.add_argument("--fps", type=float, default=None,
                      help="frame rate (required for an image folder; default: from the file)")
  parser.add_argument("--method", choices=core.METHODS, default="gaussian")
  parser.add_argument("--temporal-filter", choices=core.TEMPORAL_FILTERS, default="ideal")
  parser.add_argument("--levels", type=int, default=None, help="pyramid depth (default: auto)")
  parser.add_argument("--lambda-c", type=float, default=16.0)
  parser.add_argument("--chrom-attenuation", type=float, default=0.1)
  parser.add_argument("--reference-compat", action="store_true",
                      help="reproduce the reference MATLAB code's half-gain ideal filter")
  parser.add_argument("--side-by-side", default=None,
                      help="comparison output (default: OUTPUT_side_by_side; '' to skip)")
  parser.add_argument("--overwrite", action="store_true",
                      help="replace existing outputs (never the input)")
  return parser


def check_paths(args: argparse.Namespace) -> Optional[str]:
  """Checks the output paths before any compute; returns the side-by-side path or None.

  Raises:
    paths.OutputPathError: an output is the input, the two outputs coincide,
      or an output exists and `--overwrite` was not given.
  """
  paths.check_output_path(args.output, [args.input], overwrite=args.overwrite, what="output")
  side_by_side = (video_io.side_by_side_path(args.output) if args.side_by_side is None
                  else args.side_by_side)
  if side_by_side:
    paths.check_output_path(side_by_side, [args.input, args.output], overwrite=args.overwrite,
                            what="--side-by-side")
  return side_by_side or None


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = build_parser().parse_args(argv)
  try:
    side_by_side = check_paths(args)
    frames, fps = video_io.read_frames(args.input, args.fps)
    # One compiled program: much faster than dispatching the ops one by one.
    magnify_fn = jax.jit(functools.partial(
        core.eulerian_magnify, fps=fps, low_hz=args.low_hz, high_hz=args.high_hz,
        alpha=args.alpha, method=args.method, temporal_filter=args.temporal_filter,
        levels=args.levels, lambda_c=args.lambda_c, chrom_attenuation=args.chrom_attenuation,
        reference_compat=args.reference_compat))
    magnified = np.asarray(magnify_fn(frames))
    video_io.write_frames(args.output, magnified, fps)
    if side_by_side:
      video_io.write_frames(side_by_side, np.concatenate([frames, magnified], axis=2), fps)
  except (OSError, ValueError) as error:  # OutputPathError is a ValueError.
    print(f"error: {error}", file=sys.stderr)
    return 2
  print(f"wrote {args.output} ({len(frames)} frames at {fps:g} fps)"
        + (f" and {side_by_side}" if side_by_side else ""))
  return 0


if __name__ == "__main__":
  sys.exit(main())
