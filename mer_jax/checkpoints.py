"""A fold's Orbax checkpoints: create, save failing fast, restore falling back.

* `create_manager`: keeps the latest two checkpoints, or with validation
  selection the best two by validation UF1. The directory is probed for
  writing first, so a read-only or missing parent fails at once, naming it.
* `save`: surfaces an earlier asynchronous write error before writing again
  (Orbax saves in a background thread), so a failing disk stops the run at the
  next save with the path named instead of training on.
* `restore_latest`: the newest checkpoint that restores; an unreadable one
  (truncated, emptied) is logged and the previous good step is used.
* the data iterator's state (`input_pipeline.TrainIterator.get_state`) is saved
  beside the train state as the item `data`, with Grain's own Orbax handler
  (one JSON file per process), and read back by `restore_data_state`.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional

from absl import logging
import grain
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
  """A checkpoint cannot be written or no checkpoint of a fold can be read."""


def create_manager(directory: str, *, validation_selection: bool) -> ocp.CheckpointManager:
  """The fold's manager over `directory` (created if needed)."""
  directory = os.path.abspath(directory)
  try:
    os.makedirs(directory, exist_ok=True)
    probe = os.path.join(directory, f".write_probe.{os.getpid()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise CheckpointError(f"cannot write checkpoints to {directory}: {e}") from e
  options = ocp.CheckpointManagerOptions(
      max_to_keep=2,
      best_fn=(lambda m: m["validation_uf1"]) if validation_selection else None,
      best_mode="max",
      keep_checkpoints_without_metrics=not validation_selection,
      create=True, enable_async_checkpointing=True)
  return ocp.CheckpointManager(directory, options=options)


def _raise_write_error(manager: ocp.CheckpointManager, error: BaseException) -> None:
  raise CheckpointError(f"writing a checkpoint to {manager.directory} failed: {error}. "
                        "The run stops here; free space or fix permissions, then rerun the "
                        "same command to resume from the last good checkpoint.") from error


class _DataState:
  """A data iterator's state as Grain's checkpoint handler saves and restores it.

  The handler calls `get_state()` (bytes) on save and `set_state(bytes)` then
  `start_prefetch()` on restore. A snapshot is saved rather than the live
  iterator because the device prefetcher reads ahead of the training loop:
  the state to keep is the one after the last batch trained on.
  """

  def __init__(self, state: Optional[dict] = None):
    self.state = state

  def get_state(self) -> bytes:
    return json.dumps(self.state).encode()

  def set_state(self, state: bytes) -> None:
    self.state = json.loads(state)

  def start_prefetch(self) -> None:
    pass


def save(manager: ocp.CheckpointManager, step: int, state: Any,
         metrics: Optional[dict] = None, data_state: Optional[dict] = None) -> None:
  """Saves the host `state` at `step` (asynchronously), after surfacing earlier write errors.

  `data_state` (JSON-able, e.g. `input_pipeline.DevicePrefetcher.data_state`)
  is saved as the item `data`, one file per process.
  """
  items = {"state": ocp.args.StandardSave(state)}
  if data_state is not None:
    items["data"] = grain.checkpoint.CheckpointSave(_DataState(data_state))
  try:
    manager.check_for_errors()
    manager.save(step, args=ocp.args.Composite(**items), metrics=metrics)
  except (OSError, ValueError, RuntimeError) as e:
    _raise_write_error(manager, e)


def wait(manager: ocp.CheckpointManager) -> None:
  """Waits for pending saves; a failed one raises `CheckpointError` naming the directory."""
  try:
    manager.wait_until_finished()
    manager.check_for_errors()
  except (OSError, ValueError, RuntimeError) as e:
    _raise_write_error(manager, e)


def restore(manager: ocp.CheckpointManager, step: int, target: Any) -> Any:
  """The state saved at `step`, restored into the structure of host `target`."""
  return manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(target)))["state"]


def restore_data_state(manager: ocp.CheckpointManager, step: int) -> Optional[dict]:
  """The data iterator state saved at `step`, or None if that checkpoint has none.

  Checkpoints written before the state was saved (or by a run without a
  stateful iterator) have none; the caller then reopens the stream at `step`.
  """
  if not os.path.isdir(os.path.join(os.fspath(manager.directory), str(step), "data")):
    return None
  holder = _DataState()
  manager.restore(step, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(holder)))
  return holder.state


def restore_latest(manager: ocp.CheckpointManager, target: Any) -> tuple[Optional[Any], int]:
  """`(state, step)` of the newest readable checkpoint, or `(None, 0)` if there is none.

  A checkpoint that fails to restore is skipped with a warning naming it and
  the next older one is tried.

  Raises:
    CheckpointError: checkpoints exist but none restores (naming the steps to delete).
  """
  steps = sorted(manager.all_steps(), reverse=True)
  failures = []
  for step in steps:
    try:
      state = restore(manager, step, target)
    except Exception as e:  # pylint: disable=broad-except  (tensorstore, pytree, OS errors)
      failures.append(step)
      logging.warning("checkpoint step %d in %s cannot be restored (%s: %s); trying the "
                      "previous one", step, manager.directory, type(e).__name__,
                      str(e).splitlines()[0][:200] if str(e) else "")
      continue
    if failures:
      logging.warning("resumed from step %d in %s; unreadable newer step(s) %s are ignored "
                      "and will be overwritten", step, manager.directory, failures)
    return state, step
  if failures:
    raise CheckpointError(
        f"no checkpoint in {manager.directory} can be restored (steps {failures}); delete "
        f"those step folders to train the fold from the start")
  return None, 0
