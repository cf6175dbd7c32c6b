"""Model parts by name: the one table that maps config names to Flax classes.

A clip classifier (`mer_jax.models.mer_model.MERModel`) is composed of parts:

  magnifier (optional) -> per-frame encoder -> spatial pool -> temporal head -> classifier

The config names each part and passes its keyword arguments (the Flax fields
of the part's class; a field left out keeps the default written on the class):

    config.model.encoder = "small_cnn"
    config.model.encoder_kwargs = {"widths": (32, 64, 128)}

Part contracts (shapes; B = batch, N = frames per clip):

* encoder:       `(B*N, H, W, 3) float -> (B*N, h, w, C)` feature map;
                 `__call__(x, *, train: bool)`. Flow encoders take
                 `(B*N, S, S, 3 or 6)` (u, v, strain) and declare
                 `input_modes = ("flow",)`.
* spatial pool:  `(B*N, h, w, C) -> (B*N, D)`; `__call__(x, *, train: bool)`.
                 Attention pools `sow` their maps into the "intermediates" collection.
* temporal head: `(B, N, D), mask (B, N) bool -> (B, D_out)` clip features, or
                 `(B, N, D_out)` per-frame features when `per_frame = True` is a
                 class attribute (frame-level training, seed paper Section 3.1);
                 `__call__(x, mask, *, train: bool)`. Padded frames (mask False)
                 must not change the output.

Part modules import nothing from each other except the masked-sequence leaf
(`mer_jax.models.sequence`); this module imports them all and is the only
place names are bound. Another project adds its own part with `register`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

from mer_jax.models import attention
from mer_jax.models import motion
from mer_jax.models import pooling
from mer_jax.models import recurrent
from mer_jax.models import resnet
from mer_jax.models import small_cnn
from mer_jax.models import tcn

ENCODERS: dict[str, type] = {
    "small_cnn": small_cnn.SmallCNN,
    "resnet": resnet.ResNet,
    "resnet18": resnet.ResNet18,
    "resnet34": resnet.ResNet34,
    "resnet50": resnet.ResNet50,
    # Optical-flow input (config.model.input_mode = "flow"; docs/motion_models.md).
    "ststnet": motion.STSTNet,
    "off_apexnet": motion.OffApexNet,
    "flow_resnet": motion.FlowResNet,
    "identity": motion.Identity,
}
SPATIAL_POOLS: dict[str, type] = {
    "mean": pooling.SpatialMeanPool,
    "max": pooling.SpatialMaxPool,
    "grid": pooling.SpatialGridPool,
    "flatten": pooling.SpatialFlatten,
    "attention": attention.SpatialAttentionPool,
}
TEMPORAL_HEADS: dict[str, type] = {
    "mean": pooling.TemporalMeanPool,
    "frames": pooling.PerFrame,
    "temporal_softmax": attention.TemporalSoftmaxHead,
    "rnn": recurrent.RecurrentHead,
    "lstm": recurrent.LSTMHead,
    "gru": recurrent.GRUHead,
    "bilstm": recurrent.BiLSTMHead,
    "bigru": recurrent.BiGRUHead,
    "tcn": tcn.TCNHead,
    "ed_tcn": tcn.EDTCNHead,
}

KINDS: dict[str, dict[str, type]] = {
    "encoder": ENCODERS, "spatial_pool": SPATIAL_POOLS, "temporal_head": TEMPORAL_HEADS}

# Fields a config never sets: Flax bookkeeping, and the compute dtype, which the
# trainer passes (config.half_precision).
_NOT_CONFIGURABLE = frozenset({"parent", "name", "dtype"})


def register(kind: str, name: str, cls: type) -> type:
  """Adds a part class under `name` (for parts defined outside mer_jax); returns `cls`."""
  registry = _registry(kind)
  if name in registry and registry[name] is not cls:
    raise ValueError(f"{kind} {name!r} is already registered as {registry[name]!r}")
  registry[name] = cls
  return cls


def _registry(kind: str) -> dict[str, type]:
  if kind not in KINDS:
    raise ValueError(f"unknown part kind {kind!r}; expected one of {sorted(KINDS)}")
  return KINDS[kind]


def part_class(kind: str, name: str) -> type:
  """The class registered as `name` for `kind`; a ValueError lists the registered names."""
  registry = _registry(kind)
  if name not in registry:
    raise ValueError(
        f"unknown {kind} {name!r} (config.model.{kind}); registered: {sorted(registry)}")
  return registry[name]


def part_defaults(kind: str, name: str) -> dict[str, Any]:
  """Every configurable field of part `name` with the default written on its class.

  Configs start a part's kwargs from this, so each default is written once (on
  the Flax field) and every field can still be set from the command line
  (`--config.model.temporal_head_kwargs.hidden_size=64`) under a locked config.
  """
  result = {}
  for field in dataclasses.fields(part_class(kind, name)):
    if field.name in _NOT_CONFIGURABLE or not field.init:
      continue
    if field.default is not dataclasses.MISSING:
      result[field.name] = field.default
    elif field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
      result[field.name] = field.default_factory()  # type: ignore[misc]
  return result


def check_part_kwargs(kind: str, name: str, kwargs: Optional[Mapping[str, Any]]) -> None:
  """Raises a ValueError naming `config.model.<kind>_kwargs` keys that part `name` lacks."""
  fields = {f.name for f in dataclasses.fields(part_class(kind, name))}
  unknown = sorted(set(kwargs or {}) - fields)
  if unknown:
    allowed = sorted(fields - {"parent", "name"})
    raise ValueError(
        f"config.model.{kind}_kwargs: {kind} {name!r} has no argument(s) {unknown}; it "
        f"accepts {allowed}. To switch a part, name it in the config argument (for example "
        f"--config=configs/default.py:{_ARG_NAMES[kind]}={name}), which resets its arguments to "
        "the part's own defaults.")


_ARG_NAMES = {"encoder": "encoder", "spatial_pool": "pool", "temporal_head": "head"}


def build_part(kind: str, name: str, kwargs: Optional[Mapping[str, Any]] = None,
               *, dtype: Any = None) -> Any:
  """Instantiates the registered part `name` of `kind` with `kwargs`.

  `dtype` (the compute dtype) is passed only to parts that declare a `dtype`
  field. Unknown names and unknown keyword arguments raise a ValueError that
  lists what is available.
  """
  cls = part_class(kind, name)
  check_part_kwargs(kind, name, kwargs)
  kwargs = dict(kwargs or {})
  if dtype is not None and "dtype" in {f.name for f in dataclasses.fields(cls)}:
    kwargs.setdefault("dtype", dtype)
  return cls(**kwargs)


def available() -> dict[str, list[str]]:
  """Names registered for each part kind (for error messages and docs)."""
  return {kind: sorted(registry) for kind, registry in KINDS.items()}
