"""Config arguments: `--config=configs/default.py:head=bilstm,tier=low_amplitude`.

Following big_vision, a config file's `get_config(arg)` receives the text
after the colon and turns it into typed values with `parse_arg`. Switching a
model part by argument also resets that part's arguments, which a single
`--config.model.temporal_head=...` override cannot do.
"""

from __future__ import annotations

import difflib
from typing import Any, Optional

import ml_collections

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _convert(key: str, text: str, default: Any) -> Any:
  if isinstance(default, bool):
    lowered = text.lower()
    if lowered in _TRUE:
      return True
    if lowered in _FALSE:
      return False
    raise ValueError(f"config argument {key}={text!r}: expected a boolean ({_TRUE[1]}/"
                     f"{_FALSE[1]})")
  if isinstance(default, int):
    try:
      return int(text)
    except ValueError as e:
      raise ValueError(f"config argument {key}={text!r}: expected an integer") from e
  if isinstance(default, float):
    try:
      return float(text)
    except ValueError as e:
      raise ValueError(f"config argument {key}={text!r}: expected a number") from e
  return text


def parse_arg(arg: Optional[str], *, lazy: bool = False, **defaults: Any
              ) -> ml_collections.ConfigDict:
  """Parses `"key=value,key2=value2"` (or bare `"flag"` for a boolean) into typed values.

  Args:
    arg: the config argument (None or "" for all defaults).
    lazy: accept keys not in `defaults` (as strings) instead of refusing them.
    **defaults: every known key with its default; the default's type is the
      value's type (bool, int, float or str).

  Raises:
    ValueError: an unknown key (naming the closest known ones) or a value of
      the wrong type.
  """
  result = ml_collections.ConfigDict(dict(defaults))
  if not arg:
    return result
  for item in arg.split(","):
    item = item.strip()
    if not item:
      continue
    key, sep, text = item.partition("=")
    key = key.strip()
    if key not in defaults:
      if not lazy:
        close = difflib.get_close_matches(key, list(defaults), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"unknown config argument {key!r}{hint}; known: {sorted(defaults)}")
      result[key] = text
      continue
    if not sep:
      if not isinstance(defaults[key], bool):
        raise ValueError(f"config argument {key!r} needs a value ({key}=...)")
      result[key] = True
      continue
    result[key] = _convert(key, text.strip(), defaults[key])
  return result
