"""Registries of model parts, found by name from a config.

A clip classifier (`mer_jax.models.mer_model.MERModel`) is composed of parts:

  magnifier (optional) -> per-frame encoder -> spatial pool -> temporal head -> classifier

Each part kind has a registry. A part is a Flax Linen module class registered
with a decorator; the config names it and passes its keyword arguments:

    config.model.encoder = "small_cnn"
    config.model.encoder_kwargs = {"widths": (32, 64, 128)}

Part contracts (shapes; B = batch, N = frames per clip):

* encoder:       `(B*N, H, W, 3) float -> (B*N, h, w, C)` feature map;
                 `__call__(x, *, train: bool)`.
* spatial pool:  `(B*N, h, w, C) -> (B*N, D)`; `__call__(x, *, train: bool)`.
                 Attention pools `sow` their maps into the "intermediates" collection.
* temporal head: `(B, N, D), mask (B, N) bool -> (B, D_out)` clip features, or
                 `(B, N, D_out)` per-frame features when `per_frame = True` is a
                 class attribute (frame-level training, seed paper Section 3.1);
                 `__call__(x, mask, *, train: bool)`. Padded frames (mask False)
                 must not change the output.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional

ENCODERS: dict[str, type] = {}
SPATIAL_POOLS: dict[str, type] = {}
TEMPORAL_HEADS: dict[str, type] = {}

_KINDS = {"encoder": ENCODERS, "spatial_pool": SPATIAL_POOLS, "temporal_head": TEMPORAL_HEADS}


def _register(kind: str) -> Callable[[str], Callable[[type], type]]:
  registry = _KINDS[kind]

  def register(name: str) -> Callable[[type], type]:
    def decorator(cls: type) -> type:
      if name in registry and registry[name] is not cls:
        raise ValueError(f"{kind} {name!r} is already registered as {registry[name]!r}")
      registry[name] = cls
      return cls
    return decorator
  return register


register_encoder = _register("encoder")
register_spatial_pool = _register("spatial_pool")
register_temporal_head = _register("temporal_head")


def _ensure_builtin_parts_imported() -> None:
  # Importing the part modules registers them. Done lazily so that importing
  # the registry alone stays cheap and free of import cycles.
  from mer_jax.models import parts  # noqa: F401


def build_part(kind: str, name: str, kwargs: Optional[Mapping[str, Any]] = None,
               *, dtype: Any = None) -> Any:
  """Instantiates the registered part `name` of `kind` with `kwargs`.

  `dtype` (the compute dtype) is passed only to parts that declare a `dtype`
  field. Unknown names and unknown keyword arguments raise a ValueError that
  lists what is available.
  """
  _ensure_builtin_parts_imported()
  if kind not in _KINDS:
    raise ValueError(f"unknown part kind {kind!r}; expected one of {sorted(_KINDS)}")
  registry = _KINDS[kind]
  if name not in registry:
    raise ValueError(
        f"unknown {kind} {name!r} (config.model.{kind}); registered: {sorted(registry)}")
  cls = registry[name]
  kwargs = dict(kwargs or {})
  field_names = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(kwargs) - field_names)
  if unknown:
    allowed = sorted(field_names - {"parent", "name"})
    raise ValueError(
        f"config.model.{kind}_kwargs: {kind} {name!r} has no argument(s) {unknown}; "
        f"it accepts {allowed}")
  if dtype is not None and "dtype" in field_names and "dtype" not in kwargs:
    kwargs["dtype"] = dtype
  return cls(**kwargs)


def available() -> dict[str, list[str]]:
  """Names registered for each part kind (for error messages and docs)."""
  _ensure_builtin_parts_imported()
  return {kind: sorted(reg) for kind, reg in _KINDS.items()}
