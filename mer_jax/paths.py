"""One rule for every command that writes files: outputs never clobber inputs.

The magnification CLI, the optical-flow CLI, reports and weight conversion all
take input and output paths from the user. A typo (`in.avi in.avi`), a
symbolic link or a `./x/../x` spelling must never make a command overwrite the
file it reads, and an existing output is replaced only when the user says so.
`check_output_path` is the shared check; it uses the standard library only so
light command-line modules can import it without JAX.
"""

from __future__ import annotations

import os
from typing import Iterable, Union

PathLike = Union[str, os.PathLike]


class OutputPathError(ValueError):
  """An output path that would overwrite an input or an existing output."""


def _resolved(path: PathLike) -> str:
  # realpath follows every symbolic link (also in the parents) and folds
  # `..` after resolving the links, as the OS does; normcase makes the
  # comparison case-insensitive where the file system is (Windows).
  return os.path.normcase(os.path.realpath(os.fspath(path)))


def same_file(a: PathLike, b: PathLike) -> bool:
  """True if `a` and `b` name the same file (after links, `..`, hard links)."""
  if _resolved(a) == _resolved(b):
    return True
  try:
    return os.path.samefile(a, b)  # Hard links and bind mounts.
  except OSError:  # One of them does not exist (yet): not the same file.
    return False


def check_output_path(output: PathLike, inputs: Iterable[PathLike], *, overwrite: bool,
                      what: str = "--out") -> str:
  """Refuses an output path that is an input or an existing output.

  Args:
    output: the file or folder the command is about to write.
    inputs: the files or folders the command reads (and any other output of
      the same command that must not coincide with `output`).
    overwrite: whether an existing `output` may be replaced (the command's
      explicit `--overwrite` flag).
    what: the argument's name as the user typed it, used in messages.

  Returns:
    `output` as a string.

  Raises:
    OutputPathError: `output` is, or resolves to (symbolic link, `..`, hard
      link), one of `inputs`, lies inside an input folder or contains an
      input; or it exists (a
      file, a link, or a non-empty folder) and `overwrite` is False. The
      message is one line naming `what` and both paths.
  """
  output = os.fspath(output)
  if not output:
    raise OutputPathError(f"{what}: empty path")
  for source in inputs:
    source = os.fspath(source)
    if same_file(output, source):
      raise OutputPathError(
          f"{what} {output!r} is the input {source!r} (after resolving links and '..'): "
          "writing it would destroy the input; choose another path")
    out, src = _resolved(output), _resolved(source)
    if os.path.isdir(source) and os.path.commonpath([out, src]) == src:
      raise OutputPathError(
          f"{what} {output!r} lies inside the input folder {source!r}: choose a path outside it")
    if os.path.commonpath([out, src]) == out:
      # Replacing a folder (e.g. a checkpoint directory) would remove the input in it.
      raise OutputPathError(
          f"{what} {output!r} is a folder that contains the input {source!r}: choose a path "
          "that does not")
  if os.path.lexists(output) and not overwrite:
    if os.path.isdir(output) and not os.path.islink(output):
      if os.listdir(output):
        raise OutputPathError(
            f"{what} {output!r} is a folder that is not empty: pass --overwrite to replace "
            "its files, or choose another path")
    else:
      raise OutputPathError(
          f"{what} {output!r} already exists: pass --overwrite to replace it, or choose "
          "another path")
  return output
