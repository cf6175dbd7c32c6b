"""Safe import of VGGFace2 (torchvision-layout) ResNet weights into `ResNet`.

The public VGGFace2 PyTorch port ships its weights as a pickle of a dict of
NumPy arrays keyed like a torchvision state_dict (`conv1.weight`,
`bn1.running_mean`, `layer1.0.downsample.0.weight`, `fc.weight`, ...), written
by Python 2 (hence `encoding="latin1"`). Unpickling can run arbitrary code, so
`load_state_dict` uses an unpickler that resolves only the few NumPy
reconstruction functions and builtin containers and refuses every other global
before anything is called. `.npz` files are read with `allow_pickle=False`.

Conversion: conv kernels OIHW -> HWIO, fc weight (out, in) -> (in, out),
BatchNorm weight/bias -> params scale/bias, running_mean/var -> batch_stats
mean/var. Convert a release file once into an Orbax checkpoint:

    python -m mer_jax.models.weights convert resnet50_ft_weight.pkl /ckpt/vggface2_r50

and point a config at it; the trainer calls `load_encoder_checkpoint` and
`merge_encoder_variables`.
"""

from __future__ import annotations

import argparse
import builtins
import codecs
import collections
import io
import json
import os
import pickle
import re
import sys
from typing import Any, Mapping, Optional, Sequence

import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from mer_jax.models import resnet

METADATA_FILE = "mer_jax_resnet.json"
METADATA_FORMAT = "mer_jax.resnet/1"
# PyTorch bookkeeping entries with no Flax counterpart.
IGNORED_SUFFIXES = ("num_batches_tracked",)


class UnsafePickleError(ValueError):
  """A pickle asked for a global outside the NumPy/container allow-list."""


def _numpy_globals() -> dict[tuple[str, str], Any]:
  # NumPy 2 moved `numpy.core` to `numpy._core`; pickles name either (and Python 2
  # era files name `numpy.core`), so both spellings resolve to the same objects.
  try:
    from numpy._core import multiarray, numeric  # pylint: disable=g-import-not-at-top
  except ImportError:  # NumPy 1.x.
    from numpy.core import multiarray, numeric  # pylint: disable=g-import-not-at-top
  # pylint: disable=protected-access
  allowed = {}
  for package in ("numpy.core", "numpy._core"):
    allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
    allowed[(f"{package}.multiarray", "scalar")] = multiarray.scalar
    allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
  allowed[("numpy", "ndarray")] = np.ndarray
  allowed[("numpy", "dtype")] = np.dtype
  return allowed


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    **_numpy_globals(),
    ("collections", "OrderedDict"): collections.OrderedDict,
    # Python 3 protocol-2 pickles spell bytes as `_codecs.encode(str, "latin1")`.
    ("_codecs", "encode"): codecs.encode,
    **{(module, name): getattr(builtins, name)
       for module in ("builtins", "__builtin__")
       for name in ("dict", "list", "tuple", "set", "frozenset")},
}


class _RestrictedUnpickler(pickle.Unpickler):
  """Resolves only `_ALLOWED_GLOBALS`; any other global is refused unresolved."""

  def find_class(self, module: str, name: str) -> Any:
    try:
      return _ALLOWED_GLOBALS[(module, name)]
    except KeyError:
      raise UnsafePickleError(f"forbidden global '{module}.{name}'") from None


def _check_arrays(raw: Any, path: str) -> dict[str, np.ndarray]:
  if not isinstance(raw, Mapping):
    raise ValueError(f"{path}: expected a dict of NumPy arrays keyed like a state_dict, "
                     f"got {type(raw).__name__}")
  out = {}
  for key, value in raw.items():
    if not isinstance(key, str):
      raise ValueError(f"{path}: state dict key {key!r} is not a string")
    array = np.asarray(value) if isinstance(value, (np.ndarray, np.generic)) else None
    if array is None or array.dtype.kind not in "fiub":
      raise ValueError(f"{path}: entry {key!r} is not a numeric NumPy array "
                       f"(got {type(value).__name__})")
    out[key] = array
  return out


def load_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads a state dict of NumPy arrays from a `.pkl`/`.pickle` or `.npz` file.

  Args:
    path: a pickle of a dict of NumPy arrays (the VGGFace2 release format,
      Python 2 strings decoded as latin1) or an `.npz` archive with the same
      keys.

  Returns:
    `{torch key: np.ndarray}` with the file's shapes and dtypes.

  Raises:
    FileNotFoundError: no such file.
    UnsafePickleError: the pickle references a global outside the allow-list
      (nothing it asked for was called); the message names file and global.
    ValueError: the content is not a dict of numeric arrays, or not a pickle.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"weight file {path!r} does not exist")
  with open(path, "rb") as f:
    data = f.read()
  if data[:4] == b"PK\x03\x04" and path.endswith(".npz"):
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
      return _check_arrays({key: archive[key] for key in archive.files}, path)
  if data[:4] == b"PK\x03\x04":
    raise ValueError(f"{path}: a zip archive but not an .npz (a torch.save .pth file?); "
                     "export it as a pickle or .npz of NumPy arrays")
  try:
    raw = _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
  except UnsafePickleError as error:
    raise UnsafePickleError(f"{path}: refused to unpickle: {error}; only NumPy arrays and "
                            "plain containers are allowed") from None
  except Exception as error:  # Truncated or not a pickle: any unpickling error.
    raise ValueError(f"{path}: cannot read as a pickle of NumPy arrays: {error!r}") from error
  return _check_arrays(raw, path)


def infer_architecture(state_dict: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """ResNet fields implied by a state dict's keys and shapes.

  Returns:
    `{"stage_sizes": tuple, "block": "basic" | "bottleneck", "base_width": int,
    "num_classes": int | None, "in_channels": int}`.
  """
  if "conv1.weight" not in state_dict:
    raise ValueError("state dict has no 'conv1.weight': not a torchvision-layout ResNet "
                     f"(first keys: {sorted(state_dict)[:5]})")
  blocks: dict[int, set[int]] = collections.defaultdict(set)
  for key in state_dict:
    match = re.match(r"layer(\d+)\.(\d+)\.", key)
    if match:
      blocks[int(match.group(1))].add(int(match.group(2)))
  if not blocks or sorted(blocks) != list(range(1, len(blocks) + 1)):
    raise ValueError(f"state dict stages {sorted(blocks)} are not layer1..layerN")
  stage_sizes = tuple(max(blocks[s]) + 1 for s in sorted(blocks))
  conv1 = state_dict["conv1.weight"]
  return {
      "stage_sizes": stage_sizes,
      "block": "bottleneck" if "layer1.0.conv3.weight" in state_dict else "basic",
      "base_width": int(conv1.shape[0]),
      "num_classes": int(state_dict["fc.weight"].shape[0]) if "fc.weight" in state_dict else None,
      "in_channels": int(conv1.shape[1]),
  }


def _torch_key(collection: str, path: tuple[str, ...]) -> str:
  """Flax variable path -> torchvision state_dict key."""
  *modules, leaf = path
  names = []
  for module in modules:
    match = re.fullmatch(r"layer(\d+)_(\d+)", module)
    names.append(f"layer{match.group(1)}.{match.group(2)}" if match else
                 {"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}.get(
                     module, module))
  torch_leaf = {("params", "kernel"): "weight", ("params", "scale"): "weight",
                ("params", "bias"): "bias", ("batch_stats", "mean"): "running_mean",
                ("batch_stats", "var"): "running_var"}[(collection, leaf)]
  return ".".join(names + [torch_leaf])


def _to_flax_layout(array: np.ndarray, leaf: str) -> np.ndarray:
  if leaf == "kernel" and array.ndim == 4:
    return array.transpose(2, 3, 1, 0)  # OIHW -> HWIO.
  if leaf == "kernel" and array.ndim == 2:
    return array.T  # Linear (out, in) -> Dense (in, out).
  return array


def _torch_shape(shape: tuple[int, ...], leaf: str) -> tuple[int, ...]:
  if leaf == "kernel" and len(shape) == 4:
    return (shape[3], shape[2], shape[0], shape[1])
  if leaf == "kernel" and len(shape) == 2:
    return (shape[1], shape[0])
  return tuple(shape)


def state_dict_to_variables(state_dict: Mapping[str, np.ndarray], model: resnet.ResNet,
                            *, source: str = "state dict", image_size: int = 64,
                            bgr_to_rgb: bool = False) -> dict[str, Any]:
  """Converts a torchvision-layout state dict into `model`'s variables.

  Args:
    state_dict: `{torch key: array}` (see `load_state_dict`).
    model: the `ResNet` whose variables to fill (its architecture must match).
    source: name of the weights' origin, for error messages.
    image_size: side of the dummy input used to trace `model`'s variable shapes.
    bgr_to_rgb: reverse the stem conv's input channels, so that weights
      trained on BGR images (VGGFace2, from Caffe) take RGB images instead.

  Returns:
    `{"params": ..., "batch_stats": ...}` float32 NumPy arrays in Flax layout.

  Raises:
    ValueError: listing *all* missing, unexpected and mis-shaped keys at once.
  """
  in_channels = (int(state_dict["conv1.weight"].shape[1])
                 if "conv1.weight" in state_dict else 3)
  dummy = jnp.zeros((1, image_size, image_size, in_channels), jnp.float32)
  shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), dummy)
  flat_shapes = flax.traverse_util.flatten_dict(
      {c: shapes[c] for c in ("params", "batch_stats") if c in shapes})
  converted, used, missing, misshaped = {}, set(), [], []
  for (collection, *path), spec in flat_shapes.items():
    key = _torch_key(collection, tuple(path))
    if key not in state_dict:
      missing.append(key)
      continue
    used.add(key)
    array = _to_flax_layout(np.asarray(state_dict[key]), path[-1])
    if array.shape != spec.shape:
      misshaped.append(f"{key}: file {tuple(state_dict[key].shape)}, model expects "
                       f"{_torch_shape(spec.shape, path[-1])}")
      continue
    converted[(collection, *path)] = array.astype(np.float32)
  if bgr_to_rgb and ("params", "conv1", "kernel") in converted:
    converted[("params", "conv1", "kernel")] = converted[("params", "conv1", "kernel")][
        :, :, ::-1, :].copy()
  unexpected = sorted(k for k in state_dict
                      if k not in used and not k.endswith(IGNORED_SUFFIXES))
  if missing or unexpected or misshaped:
    problems = []
    if missing:
      problems.append(f"missing keys {sorted(missing)}")
    if unexpected:
      problems.append(f"unexpected keys {unexpected}")
    if misshaped:
      problems.append(f"mis-shaped keys {misshaped}")
    raise ValueError(f"{source} does not match {type(model).__name__}(stage_sizes="
                     f"{model.resolved_stage_sizes}, block={model.block_kind!r}, base_width="
                     f"{model.base_width}, num_classes={model.num_classes}): "
                     + "; ".join(problems))
  return flax.traverse_util.unflatten_dict(converted)


def model_for_state_dict(state_dict: Mapping[str, np.ndarray]) -> resnet.ResNet:
  """The `ResNet` (classifier if the dict has `fc.*`) whose layout matches `state_dict`."""
  arch = infer_architecture(state_dict)
  return resnet.ResNet(stage_sizes=arch["stage_sizes"], block=arch["block"],
                       base_width=arch["base_width"], num_classes=arch["num_classes"])


def convert(in_path: str, out_dir: str, *, bgr_to_rgb: bool = True) -> dict[str, Any]:
  """Converts a weight file once into an Orbax checkpoint directory.

  Writes `{"params", "batch_stats"}` with `ocp.StandardCheckpointer` to
  `out_dir` (which must not exist) plus `mer_jax_resnet.json` describing the
  architecture and the input channel order. Returns that description.

  VGGFace2 was trained on BGR images; by default the stem's input channels are
  reversed so that the checkpoint takes the RGB frames `MERModel` feeds it
  (with `pixel_stats="vggface2"`, the same mean in RGB order). Pass
  `bgr_to_rgb=False` to keep the original BGR convention.
  """
  out_dir = os.path.abspath(out_dir)
  if os.path.exists(out_dir):
    raise FileExistsError(f"output checkpoint directory {out_dir!r} already exists")
  state_dict = load_state_dict(in_path)
  model = model_for_state_dict(state_dict)
  variables = state_dict_to_variables(state_dict, model, source=in_path, bgr_to_rgb=bgr_to_rgb)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(out_dir, variables)
    checkpointer.wait_until_finished()
  arch = infer_architecture(state_dict)
  metadata = {"format": METADATA_FORMAT, "source": os.path.basename(in_path),
              "input_channel_order": "rgb" if bgr_to_rgb else "as in source (bgr for VGGFace2)",
              **{k: (list(v) if isinstance(v, tuple) else v) for k, v in arch.items()}}
  with open(os.path.join(out_dir, METADATA_FILE), "w") as f:
    json.dump(metadata, f, indent=2)
  return metadata


def checkpoint_architecture(path: str) -> dict[str, Any]:
  """The architecture description `convert` stored next to the checkpoint."""
  meta_path = os.path.join(path, METADATA_FILE)
  if not os.path.isfile(meta_path):
    raise FileNotFoundError(f"{path!r} is not a converted ResNet checkpoint (no "
                            f"{METADATA_FILE}); create one with `python -m "
                            "mer_jax.models.weights convert WEIGHTS OUT_DIR`")
  with open(meta_path) as f:
    return json.load(f)


def load_encoder_checkpoint(path: str, *, include_top: bool = False) -> dict[str, Any]:
  """Restores a checkpoint written by `convert`.

  Args:
    path: the checkpoint directory.
    include_top: keep the `fc` classifier (dropped by default: as an encoder
      the ResNet ends at its feature map).

  Returns:
    `{"params": ..., "batch_stats": ...}` of float32 NumPy arrays, laid out as
    `ResNet`'s variables (e.g. `params["layer2_1"]["conv1"]["kernel"]` HWIO).
  """
  checkpoint_architecture(path)  # Clear error for a wrong directory.
  with ocp.StandardCheckpointer() as checkpointer:
    variables = checkpointer.restore(os.path.abspath(path))
  variables = {c: dict(variables[c]) for c in ("params", "batch_stats")}
  if not include_top:
    variables["params"].pop("fc", None)
  return variables


def merge_encoder_variables(variables: Mapping[str, Any], encoder_variables: Mapping[str, Any],
                            *, encoder_key: Optional[str] = "encoder") -> dict[str, Any]:
  """Copies pretrained encoder weights into a model's initial variables.

  Every array of `variables[c][encoder_key]` (`c` in params, batch_stats) is
  replaced by the one at the same path in `encoder_variables[c]`. Pretrained
  layers the model lacks (a truncated encoder, the `fc`) are ignored; a model
  array with no pretrained counterpart or a different shape is an error.

  Args:
    variables: e.g. `MERModel.init(...)` output.
    encoder_variables: `load_encoder_checkpoint(...)` output.
    encoder_key: the encoder's name in `variables`; None if `variables` are
      the encoder's own.

  Returns:
    New variables (other collections and parts unchanged).

  Raises:
    ValueError: listing every missing or mis-shaped path.
  """
  merged = {c: v for c, v in variables.items()}
  problems = []
  for collection in ("params", "batch_stats"):
    if collection not in variables:
      continue
    target = variables[collection][encoder_key] if encoder_key else variables[collection]
    source = flax.traverse_util.flatten_dict(encoder_variables.get(collection, {}))
    flat = flax.traverse_util.flatten_dict(target)
    for path, value in flat.items():
      name = "/".join((collection,) + path)
      if path not in source:
        problems.append(f"{name} missing from the pretrained weights")
      elif tuple(source[path].shape) != tuple(value.shape):
        problems.append(f"{name}: pretrained {tuple(source[path].shape)}, model "
                        f"{tuple(value.shape)}")
      else:
        flat[path] = jnp.asarray(source[path], value.dtype)
    new = flax.traverse_util.unflatten_dict(flat)
    if encoder_key:
      merged[collection] = {**variables[collection], encoder_key: new}
    else:
      merged[collection] = new
  if problems:
    raise ValueError("pretrained encoder weights do not fit the model's encoder: "
                     + "; ".join(problems))
  return merged


def main(argv: Optional[Sequence[str]] = None) -> None:
  """`python -m mer_jax.models.weights convert IN_FILE OUT_CKPT_DIR`."""
  parser = argparse.ArgumentParser(prog="python -m mer_jax.models.weights",
                                   description=__doc__.split("\n\n")[0])
  commands = parser.add_subparsers(dest="command", required=True)
  convert_parser = commands.add_parser(
      "convert", help="convert a VGGFace2/torchvision-layout .pkl or .npz into an Orbax "
      "checkpoint of {params, batch_stats}")
  convert_parser.add_argument("in_file", help="weights: pickle of NumPy arrays or .npz")
  convert_parser.add_argument("out_dir", help="new Orbax checkpoint directory")
  convert_parser.add_argument(
      "--keep_bgr", action="store_true",
      help="keep the source's input channel order (VGGFace2: BGR); by default the stem "
      "is converted to take RGB images, as MERModel feeds them")
  args = parser.parse_args(argv)
  metadata = convert(args.in_file, args.out_dir, bgr_to_rgb=not args.keep_bgr)
  print(f"wrote {os.path.abspath(args.out_dir)}: {json.dumps(metadata)}")


if __name__ == "__main__":
  main(sys.argv[1:])
