"""Transfer-learning policies of the seed paper (Bai 2020, Figure 2).

Given a pretrained ResNet encoder and a "specific layer" l_s (picked with
Grad-CAM, `mer_jax.gradcam.select_specific_layer`):

* policy "I":   train the classifier layers only: every encoder parameter is
                frozen; everything that is not the encoder (spatial pool,
                temporal head, classifier) trains.
* policy "II":  freeze the encoder layers before l_s (`l_0 .. l_{s-1}` in
                forward order `conv1, bn1, layer1_0, ...`); train l_s, the
                layers after it, and the head.
* policy "III": drop the encoder layers after l_s (`ResNet.truncate_after`) and
                classify from l_s's pooled feature map; the layers before l_s
                are frozen as in II, l_s and the head train.
* policy "full": train everything (plain fine-tuning), for comparison.

Parameters are frozen with `optax.multi_transform`: frozen leaves get
`optax.set_to_zero()` (no optimizer state, zero updates, bit-identical
values). BatchNorm running statistics are not parameters, so they are frozen
in the model instead: `encoder_kwargs_for_policy` returns the `ResNet` fields
(`frozen_batch_stats` for I, `frozen_stats_before=l_s` for II and III) that
make the frozen layers' BatchNorm normalise with, and never update, their
pretrained statistics even when `train=True`. Put them in
`config.model.encoder_kwargs`.

A stage name as l_s (`"layer3"`) means the whole stage: frozen before its
first block, truncated after its last.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Optional, Sequence

import flax.traverse_util
import jax
import optax

from mer_jax.models import resnet

POLICIES = ("full", "I", "II", "III")
TRAINABLE = "trainable"
FROZEN = "frozen"


def _check_policy(policy: str, specific_layer: Optional[str]) -> str:
  if policy not in POLICIES:
    raise ValueError(f"policy={policy!r} must be one of {POLICIES}")
  if policy in ("II", "III") and not specific_layer:
    raise ValueError(f"policy {policy!r} needs specific_layer (l_s), e.g. 'layer3' or "
                     "'layer3_1'")
  return policy


def _stage_sizes_of(encoder_names: Sequence[str]) -> tuple[int, ...]:
  """Blocks per stage, read off ResNet module names (`layer{s}_{b}`)."""
  sizes: dict[int, int] = {}
  for name in encoder_names:
    match = re.fullmatch(r"layer(\d+)_(\d+)", name)
    if match:
      stage, block = int(match.group(1)), int(match.group(2))
      sizes[stage] = max(sizes.get(stage, 0), block + 1)
    elif name not in resnet.STEM_LAYERS + ("fc",):
      raise ValueError(f"encoder module {name!r} is not a ResNet layer; the transfer "
                       "policies order layers by ResNet names (conv1, bn1, layer1_0, ...)")
  return tuple(sizes[s] for s in sorted(sizes))


def encoder_layer_order(encoder_params: Mapping[str, Any]) -> tuple[str, ...]:
  """The encoder's top-level module names in forward order (`conv1`, `bn1`, ...)."""
  names = list(encoder_params)
  order = resnet.layer_order(_stage_sizes_of(names), include_top=True)
  return tuple(name for name in order if name in names)


def trainable_mask(params: Mapping[str, Any], policy: str,
                   specific_layer: Optional[str] = None, *,
                   encoder_key: Optional[str] = "encoder") -> Any:
  """Labels every parameter `"trainable"` or `"frozen"` under `policy`.

  Args:
    params: a parameter pytree, e.g. a `MERModel`'s (`params["encoder"]
      ["layer2_1"]["conv1"]["kernel"]`, `params["classifier"]`, ...).
    policy: one of `POLICIES`.
    specific_layer: l_s for II and III: a layer (`"layer3_1"`, `"conv1"`) or
      stage (`"layer3"`) name of the encoder.
    encoder_key: the encoder's key in `params`; None when `params` are a bare
      `ResNet` classifier's (then its `fc` plays the classifier).

  Returns:
    A pytree with `params`' structure whose leaves are "trainable"/"frozen".

  Raises:
    ValueError: unknown policy or layer, no encoder in `params`, or (III) an
      encoder that still has layers after l_s (set `truncate_after`).
  """
  _check_policy(policy, specific_layer)
  if encoder_key is not None and encoder_key not in params:
    raise ValueError(f"params have no encoder {encoder_key!r}; top-level keys: {sorted(params)}")
  encoder = params[encoder_key] if encoder_key is not None else params
  order = encoder_layer_order(encoder)
  stage_sizes = _stage_sizes_of(order)
  body = [name for name in order if name != "fc"]  # "fc" of a bare ResNet is the classifier.
  if policy == "full":
    first_trainable = 0
  elif policy == "I":
    first_trainable = len(body)
  else:
    layer = resnet.resolve_layer(specific_layer, stage_sizes, stage_end="first",
                                 argument="specific_layer")
    first_trainable = body.index(layer)
    if policy == "III":
      last = resnet.resolve_layer(specific_layer, stage_sizes, stage_end="last",
                                  argument="specific_layer")
      after = body[body.index(last) + 1:]
      if after:
        raise ValueError(f"policy III with specific_layer={specific_layer!r}: the encoder "
                         f"still has layers {after} after it; build it with "
                         f"truncate_after={specific_layer!r} (encoder_kwargs_for_policy)")
  frozen_modules = set(body[:first_trainable])

  def label(path: tuple[str, ...]) -> str:
    if encoder_key is not None:
      if path[0] != encoder_key:
        return TRAINABLE
      path = path[1:]
    return FROZEN if path[0] in frozen_modules else TRAINABLE

  flat = flax.traverse_util.flatten_dict(params)
  return flax.traverse_util.unflatten_dict({path: label(path) for path in flat})


def make_optimizer_with_policy(tx: optax.GradientTransformation, params: Mapping[str, Any],
                               policy: str, specific_layer: Optional[str] = None, *,
                               encoder_key: Optional[str] = "encoder"
                               ) -> optax.GradientTransformation:
  """Wraps `tx` so that only the policy's trainable parameters change.

  Frozen leaves get `optax.set_to_zero()`: zero updates and no optimizer state,
  so they stay bit-identical. Arguments are as for `trainable_mask`.
  """
  labels = trainable_mask(params, policy, specific_layer, encoder_key=encoder_key)
  return optax.multi_transform({TRAINABLE: tx, FROZEN: optax.set_to_zero()}, labels)


def encoder_kwargs_for_policy(policy: str, specific_layer: Optional[str] = None
                              ) -> dict[str, Any]:
  """`ResNet` fields that freeze BatchNorm statistics (and truncate) for `policy`.

  Merge the result into `config.model.encoder_kwargs`:
  I -> `{"frozen_batch_stats": True}`; II -> `{"frozen_stats_before": l_s}`;
  III -> `{"truncate_after": l_s, "frozen_stats_before": l_s}`; full -> `{}`.
  """
  _check_policy(policy, specific_layer)
  if policy == "I":
    return {"frozen_batch_stats": True}
  if policy == "II":
    return {"frozen_stats_before": specific_layer}
  if policy == "III":
    return {"truncate_after": specific_layer, "frozen_stats_before": specific_layer}
  return {}


def count_parameters(params: Any, labels: Any) -> dict[str, int]:
  """Number of scalar parameters per label, e.g. `{"trainable": 1234, "frozen": 5678}`."""
  counts = {TRAINABLE: 0, FROZEN: 0}
  for leaf, label in zip(jax.tree.leaves(params), jax.tree.leaves(labels)):
    counts[label] += int(leaf.size)
  return counts
