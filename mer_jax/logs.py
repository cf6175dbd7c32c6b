"""Log hygiene for command-line tools."""

from absl import logging


class _DropLibraryInfo:
  """absl log filter: drops INFO records of Orbax (several lines per checkpoint save)."""

  def filter(self, record) -> bool:
    return record.levelno >= logging.converter.STANDARD_WARNING or "/orbax/" not in record.pathname


def quiet_library_logs() -> None:
  """Keeps warnings and errors of every library but drops Orbax's INFO chatter."""
  handler = logging.get_absl_handler()
  if not any(isinstance(f, _DropLibraryInfo) for f in handler.filters):
    handler.addFilter(_DropLibraryInfo())
