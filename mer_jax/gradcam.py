"""Grad-CAM heat maps (Selvaraju et al. 2017) and specific-layer selection.

For a layer with activations `A` `(n, h, w, K)` and a class score `y_c`:

    alpha_k = mean_{i,j} d y_c / d A_{ij k},   cam = ReLU(sum_k alpha_k A_k),

upsampled bilinearly to the input size and divided by its maximum, so each map
lies in [0, 1] (an all-zero map stays zero).

The gradient with respect to the activation is taken by adding a zero
"perturbation" `delta` to the chosen module's output through
`flax.linen.intercept_methods` and differentiating with respect to `delta`;
d y / d delta at delta = 0 is d y / d A. Unlike `nn.Module.perturb`, this needs
no code in the encoder and creates no variables at `init` (perturb's zeros
would be sized by the init batch and ride along in every training state), and
it reaches any named submodule: a ResNet block (`"layer3_1"`), a stage
(`"layer3"` = its last block), a conv inside a block (`"layer3_1/conv2"`), or a
`small_cnn` layer.

The paper's "specific layer" l_s is the layer whose heat maps concentrate on
the facial features: `score_layers` measures, per layer, the fraction of heat
map energy inside a mask (the synthetic benchmark's ground-truth
`motion_mask`, or a face-region prior on real data), and
`select_specific_layer` picks the best one ("auto") or validates a given name.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, Mapping, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mer_jax.models import resnet


def resolve_layer_path(model: nn.Module, layer: str) -> tuple[str, ...]:
  """Module path (from the model's root) of the Grad-CAM target `layer`.

  Args:
    model: a `MERModel` (names refer to its encoder unless they start with a
      `MERModel` attribute such as "encoder/") or a bare encoder/`ResNet`.
    layer: "/"-separated module names. With a ResNet encoder a stage name
      ("layer3") stands for the stage's last block.

  Returns:
    e.g. `("encoder", "layer3_5")`.
  """
  if not layer or not isinstance(layer, str):
    raise ValueError(f"layer must be a module name such as 'layer3_1', got {layer!r}")
  parts = tuple(layer.split("/"))
  encoder = getattr(model, "encoder", None)
  prefix: tuple[str, ...] = ()
  if isinstance(encoder, nn.Module):
    if parts[0] in ("encoder", "spatial_pool", "temporal_head", "magnifier"):
      prefix, parts = parts[:1], parts[1:]
      if prefix[0] != "encoder":
        return prefix + parts
    else:
      prefix = ("encoder",)
  else:
    encoder = model
  if parts and isinstance(encoder, resnet.ResNet):
    stage_sizes = encoder.resolved_stage_sizes
    if parts[0] in [f"layer{s + 1}" for s in range(len(stage_sizes))]:
      parts = (resnet.resolve_layer(parts[0], stage_sizes, stage_end="last"),) + parts[1:]
  return prefix + parts


def _target_score(logits: jnp.ndarray, target_class: Optional[jnp.ndarray],
                  frame_mask: Optional[jnp.ndarray]) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Sum of the target classes' logits; the per-sample classes used."""
  if logits.ndim == 3:  # Per-frame logits (B, N, C): clip = mean of frame probabilities.
    weights = (jnp.ones(logits.shape[:2], jnp.float32) if frame_mask is None
               else frame_mask.astype(jnp.float32))
    probs = jnp.sum(jax.nn.softmax(logits, -1) * weights[..., None], axis=1)
    predicted = jnp.argmax(probs, axis=-1)
  else:
    predicted = jnp.argmax(logits, axis=-1)
  classes = predicted if target_class is None else jnp.broadcast_to(
      jnp.asarray(target_class, jnp.int32), predicted.shape)
  if logits.ndim == 3:
    picked = jnp.take_along_axis(logits, classes[:, None, None], axis=-1)[..., 0]
    picked = picked * weights
  else:
    picked = jnp.take_along_axis(logits, classes[:, None], axis=-1)[..., 0]
  return jnp.sum(picked), classes


def make_grad_cam(model: nn.Module, layer: str) -> Callable[..., tuple[jnp.ndarray, jnp.ndarray]]:
  """Builds a jitted, batched Grad-CAM function for `layer` of `model`.

  Args:
    model: a `MERModel` (inputs `frames (B, N, H, W, 3)`, `mask (B, N)`) or an
      image classifier such as `ResNet(num_classes=...)` (input `(B, H, W, C)`).
      Evaluated with `train=False`.
    layer: the target module (see `resolve_layer_path`).

  Returns:
    `fn(variables, *inputs, target_class=None) -> (heatmaps, classes)`:
    `heatmaps` float32 in [0, 1] with the first input's shape minus the
    channel axis (`(B, N, H, W)` for a MERModel, `(B, H, W)` for images);
    `classes` int32 `(B,)`, the explained class: `target_class` (int or
    `(B,)`) or, when None, the predicted one (for per-frame logits, the argmax
    of the valid frames' mean probabilities).
  """
  path = resolve_layer_path(model, layer)

  def forward(variables, inputs, delta):
    captured = []

    def interceptor(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      if context.method_name == "__call__" and context.module.path == path:
        if captured:
          raise ValueError(f"Grad-CAM layer {'/'.join(path)} is called more than once")
        captured.append(out)
        if delta is not None:
          out = out + delta.astype(out.dtype)
      return out

    with nn.intercept_methods(interceptor):
      logits = model.apply(variables, *inputs, train=False)
    if not captured:
      raise ValueError(f"Grad-CAM layer {layer!r} (module path {'/'.join(path)}) was never "
                       f"called by {type(model).__name__}; check the name (e.g. 'layer3_1', "
                       "'layer3', 'layer3_1/conv2')")
    return logits, captured[0]

  @jax.jit
  def grad_cam(variables, *inputs, target_class=None):
    activation_shape = jax.eval_shape(lambda v, i: forward(v, i, None)[1], variables, inputs)
    if len(activation_shape.shape) != 4:
      raise ValueError(f"Grad-CAM layer {'/'.join(path)} outputs shape "
                       f"{activation_shape.shape}; expected a feature map (n, h, w, K)")
    frame_mask = inputs[1] if len(inputs) > 1 else None

    def score(delta):
      logits, activation = forward(variables, inputs, delta)
      total, classes = _target_score(logits.astype(jnp.float32), target_class, frame_mask)
      return total, (activation, classes)

    delta = jnp.zeros(activation_shape.shape, jnp.float32)
    grads, (activation, classes) = jax.grad(score, has_aux=True)(delta)
    activation = activation.astype(jnp.float32)
    alpha = jnp.mean(grads, axis=(1, 2), keepdims=True)  # (n, 1, 1, K)
    cam = nn.relu(jnp.sum(alpha * activation, axis=-1))  # (n, h, w)
    image_shape = inputs[0].shape
    height, width = image_shape[-3], image_shape[-2]
    cam = jax.image.resize(cam, (cam.shape[0], height, width), "bilinear")
    cam = jnp.maximum(cam, 0.0)  # Bilinear interpolation of non-negatives stays >= 0; be exact.
    peak = jnp.max(cam, axis=(1, 2), keepdims=True)
    cam = jnp.where(peak > 0, cam / jnp.where(peak > 0, peak, 1.0), 0.0)
    return cam.reshape(image_shape[:-1]), classes.astype(jnp.int32)

  return grad_cam


@functools.lru_cache(maxsize=64)
def _cached_grad_cam(model: nn.Module, layer: str) -> Callable[..., Any]:
  return make_grad_cam(model, layer)


def _grad_cam_fn(model: nn.Module, layer: str) -> Callable[..., Any]:
  # Reusing the jitted function avoids recompiling for every call; modules
  # with unhashable fields (lists) just build a fresh one.
  try:
    return _cached_grad_cam(model, layer)
  except TypeError:
    return make_grad_cam(model, layer)


def grad_cam(model: nn.Module, variables: Mapping[str, Any], *inputs: jnp.ndarray, layer: str,
             target_class: Optional[Any] = None) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Grad-CAM of `layer`; see `make_grad_cam` (compiled functions are cached)."""
  return _grad_cam_fn(model, layer)(variables, *inputs, target_class=target_class)


def mask_energy_fraction(heatmaps: jnp.ndarray, masks: jnp.ndarray) -> np.ndarray:
  """Per-map fraction of heat-map energy inside `masks`.

  Args:
    heatmaps: `(..., H, W)` non-negative maps.
    masks: `(..., H, W)` {0, 1} (or bool) masks broadcastable to `heatmaps`.

  Returns:
    float64 array of shape `heatmaps.shape[:-2]`; NaN where a map is all zero.
  """
  heatmaps = np.asarray(heatmaps, np.float64)
  masks = np.broadcast_to(np.asarray(masks, np.float64), heatmaps.shape)
  total = heatmaps.sum(axis=(-2, -1))
  inside = (heatmaps * masks).sum(axis=(-2, -1))
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(total > 0, inside / total, np.nan)


def score_layers(model: nn.Module, variables: Mapping[str, Any], inputs: Sequence[jnp.ndarray],
                 masks: jnp.ndarray, layers: Sequence[str], *,
                 target_class: Optional[Any] = None) -> dict[str, float]:
  """Scores candidate layers by how much Grad-CAM energy falls inside `masks`.

  Args:
    model, variables: as for `make_grad_cam`.
    inputs: the model's inputs, e.g. `(frames, mask)` for a `MERModel`.
    masks: `(..., H, W)` {0, 1} regions of interest broadcastable to the heat
      maps (`(B, N, H, W)` for a `MERModel`): the ground-truth `motion_mask`
      on synthetic data, a face-feature prior or a user mask on real data.
    layers: candidate layer names (e.g. every block, or `"layer1".."layer4"`).
    target_class: as for `make_grad_cam` (None = predicted class).

  Returns:
    `{layer: mean energy fraction in [0, 1]}` in the order of `layers`, over
    the maps that are not all zero (NaN if all are). Chance level is the
    masks' mean area fraction.
  """
  if not layers:
    raise ValueError("score_layers: layers is empty; pass candidate layer names")
  scores = {}
  for layer in layers:
    heatmaps, _ = grad_cam(model, variables, *inputs, layer=layer, target_class=target_class)
    fractions = mask_energy_fraction(heatmaps, masks)
    valid = fractions[~np.isnan(fractions)]
    scores[layer] = float(valid.mean()) if valid.size else float("nan")
  return scores


def select_specific_layer(scores: Mapping[str, float], layer: str = "auto") -> str:
  """Picks the specific layer l_s.

  Args:
    scores: `score_layers` output (or any `{layer: score}`; higher is better).
    layer: "auto" for the best-scoring layer (the earliest on ties), or a
      name to validate against `scores`.

  Returns:
    The chosen layer name.
  """
  if not scores:
    raise ValueError("select_specific_layer: no candidate layers were scored")
  if layer != "auto":
    if layer not in scores:
      raise ValueError(f"specific layer {layer!r} is not among the candidates "
                       f"{list(scores)}; use one of them or 'auto'")
    return layer
  finite = {name: s for name, s in scores.items() if np.isfinite(s)}
  if not finite:
    raise ValueError(f"select_specific_layer: every layer's score is NaN: {dict(scores)} "
                     "(all heat maps zero?)")
  best = max(finite.values())
  return next(name for name, s in finite.items() if s == best)


def _to_uint8_rgb(image: np.ndarray) -> np.ndarray:
  image = np.asarray(image, np.float32)
  if image.ndim == 2:
    image = np.repeat(image[..., None], 3, axis=-1)
  if image.max() <= 1.0 + 1e-6:  # [0, 1] floats; otherwise 0..255 values.
    image = image * 255.0
  return np.clip(image, 0, 255).astype(np.uint8)


def save_overlay_grid(images: Any, heatmaps: Any, path: str, *,
                      row_labels: Optional[Sequence[str]] = None,
                      column_labels: Optional[Sequence[str]] = None,
                      alpha: float = 0.45, cell_inches: float = 1.6) -> str:
  """Writes a PNG grid of heat-map overlays (rows: layers or before/after).

  Args:
    images: `(C, H, W, 3)` (or `(C, H, W)` grey) images, one per column, in
      [0, 1] or 0..255.
    heatmaps: `(R, C, H, W)` maps in [0, 1] (or `(C, H, W)` for one row).
    path: output `.png` file; parent directories are created.
    row_labels: R labels (e.g. layer names, "before"/"after").
    column_labels: C labels (e.g. sample ids, classes).
    alpha: heat-map opacity.
    cell_inches: size of one cell.

  Returns:
    `path`.
  """
  # The object-oriented Agg API keeps pyplot's global state (and backend) untouched.
  import matplotlib  # pylint: disable=g-import-not-at-top
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  images = np.asarray(images)
  heatmaps = np.asarray(heatmaps, np.float32)
  if heatmaps.ndim == 3:
    heatmaps = heatmaps[None]
  if heatmaps.ndim != 4:
    raise ValueError(f"heatmaps must be (R, C, H, W) or (C, H, W), got shape {heatmaps.shape}")
  rows, cols = heatmaps.shape[:2]
  if images.shape[0] != cols or images.shape[1:3] != heatmaps.shape[2:]:
    raise ValueError(f"images {images.shape} must be (C, H, W[, 3]) matching heatmaps "
                     f"{heatmaps.shape} (C = {cols} columns of {heatmaps.shape[2:]} pixels)")
  for name, labels, count in (("row_labels", row_labels, rows),
                              ("column_labels", column_labels, cols)):
    if labels is not None and len(labels) != count:
      raise ValueError(f"{name} has {len(labels)} entries for {count} {name.split('_')[0]}s")
  fig = Figure(figsize=(cell_inches * cols, cell_inches * rows))
  FigureCanvasAgg(fig)
  axes = fig.subplots(rows, cols, squeeze=False)
  colormap = matplotlib.colormaps["jet"]
  for r in range(rows):
    for c in range(cols):
      ax = axes[r, c]
      base = _to_uint8_rgb(images[c]).astype(np.float32) / 255.0
      heat = colormap(np.clip(heatmaps[r, c], 0, 1))[..., :3]
      ax.imshow((1 - alpha) * base + alpha * heat)
      ax.set_xticks([])
      ax.set_yticks([])
      if row_labels is not None and c == 0:
        ax.set_ylabel(row_labels[r], fontsize=8)
      if column_labels is not None and r == 0:
        ax.set_title(column_labels[c], fontsize=8)
  fig.tight_layout()
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fig.savefig(path, format="png", dpi=100)
  return path
