"""Safe import of VGGFace2 (torchvision-layout) ResNet weights into `ResNet`.

The public VGGFace2 PyTorch port ships its weights as a pickle of a dict of
NumPy arrays keyed like a torchvision state_dict (`conv1.weight`,
`bn1.running_mean`, `layer1.0.downsample.0.weight`, `fc.weight`, ...), written
by Python 2. Unpickling can run arbitrary code and NumPy's reconstruction
functions can be fed states that corrupt memory, so `load_state_dict` never
unpickles: it interprets the pickle's opcodes itself and accepts only a dict
of str -> plain float arrays, with sizes checked against the bytes present
and a size cap (see `_PickleReader`). `.npz` files are read with
`allow_pickle=False` after their headers' sizes are checked.

Conversion: conv kernels OIHW -> HWIO, fc weight (out, in) -> (in, out),
BatchNorm weight/bias -> params scale/bias, running_mean/var -> batch_stats
mean/var. Convert a release file once into an Orbax checkpoint:

    python -m mer_jax.models.weights convert resnet50_ft_weight.pkl /ckpt/vggface2_r50

and point a config at it; the trainer calls `load_encoder_checkpoint` and
`merge_encoder_variables`.
"""

from __future__ import annotations

import argparse
import collections
import errno
import json
import math
import os
import pickletools
import re
import stat
import sys
import zipfile
import zlib
from typing import Any, Mapping, Optional, Sequence

import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from mer_jax import paths
from mer_jax.models import resnet

METADATA_FILE = "mer_jax_resnet.json"
METADATA_FORMAT = "mer_jax.resnet/1"
# PyTorch bookkeeping entries with no Flax counterpart.
IGNORED_SUFFIXES = ("num_batches_tracked",)


# Reading weight files ---------------------------------------------------------
#
# A pickle is a program for a small stack machine, and `pickle.Unpickler` runs
# it with real objects: even with an allow-list of globals, NumPy's own
# reconstruction functions accept states (object dtypes with their flags
# cleared, arrays with no data) that corrupt memory, and deep nesting
# overflows the C stack. So the loader never unpickles. It walks the opcodes
# with `pickletools.genops` (which only decodes them) and interprets a small
# whitelist into plain Python values, recognising the few NumPy
# reconstruction calls by name without calling NumPy's versions: it builds
# each array itself with `np.frombuffer` from a checked plain dtype, a checked
# shape and exactly the bytes the file holds.

DEFAULT_MAX_BYTES = 1 << 30  # Weight bytes a file may hold (and the file's size).
MAX_NESTING = 64  # Containers nested deeper than this are refused.
MAX_NDIM = 32
# Plain numeric dtypes a file may declare. Only float ones are accepted as
# weights (`check_state_dict`); integers pass the parser for bookkeeping
# entries such as `num_batches_tracked`.
_NUMERIC_KINDS = "biuf"
_FLOAT_DTYPES = ("float16", "float32", "float64")
_NUMPY_MODULES = ("numpy.core", "numpy._core")
_DTYPE_NAMES = frozenset({"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8"})


class WeightFileError(ValueError):
  """A weight file the loader refuses; the message names the file (and key)."""


class UnsafePickleError(WeightFileError):
  """A pickle asked for a global or opcode outside what a weight file needs."""


class _Global:
  """A global named by the pickle; never resolved to a Python object."""

  def __init__(self, module: str, name: str):
    self.module, self.name = module, name

  @property
  def key(self) -> tuple[str, str]:
    return self.module, self.name


class _DtypeSpec:
  """`numpy.dtype(name, align, copy)` awaiting its BUILD state."""

  def __init__(self, dtype: np.dtype):
    self.dtype, self.built = dtype, False


class _PendingArray:
  """`_reconstruct(ndarray, (0,), b'b')`: an array awaiting its BUILD state."""

  def __init__(self):
    self.array: Optional[np.ndarray] = None


_MARK = object()

_RECONSTRUCT = {(f"{m}.multiarray", "_reconstruct") for m in _NUMPY_MODULES}
_FROMBUFFER = {(f"{m}.numeric", "_frombuffer") for m in _NUMPY_MODULES}
_SCALAR = {(f"{m}.multiarray", "scalar") for m in _NUMPY_MODULES}
_ALLOWED_GLOBALS = (_RECONSTRUCT | _FROMBUFFER | _SCALAR | {
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    ("collections", "OrderedDict")})

# Opcodes that push one plain value (their argument, as genops decodes it).
_VALUE_OPCODES = frozenset({
    "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT",
    "STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE",
    "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8"})


class _PickleReader:
  """Interprets the whitelisted opcodes of one pickle (see the comment above)."""

  def __init__(self, path: str, max_bytes: int):
    self.path, self.max_bytes = path, max_bytes
    self.stack: list[Any] = []
    self.marks: list[int] = []
    self.memo: dict[int, Any] = {}
    # id -> (container, nesting depth); holding the container keeps ids unique.
    self.depths: dict[int, tuple[Any, int]] = {}
    self.array_bytes = 0

  def fail(self, message: str, position: int) -> WeightFileError:
    return WeightFileError(f"{self.path}: {message} (pickle byte {position})")

  def depth(self, value: Any) -> int:
    entry = self.depths.get(id(value))
    return entry[1] if entry is not None and entry[0] is value else 0

  def container(self, value: Any, children: Sequence[Any], position: int, *,
                base: int = 0) -> Any:
    depth = max([base] + [self.depth(child) + 1 for child in children])
    if depth > MAX_NESTING:
      raise self.fail(f"containers nested more than {MAX_NESTING} deep", position)
    self.depths[id(value)] = (value, depth)
    return value

  def pop_mark(self, position: int) -> list[Any]:
    if not self.marks:
      raise self.fail("no MARK before a MARK-consuming opcode", position)
    start = self.marks.pop()
    items = self.stack[start:]
    del self.stack[start:]
    return items

  def pop(self, count: int, position: int) -> list[Any]:
    floor = self.marks[-1] if self.marks else 0
    if len(self.stack) - floor < count:
      raise self.fail("stack underflow", position)
    items = self.stack[len(self.stack) - count:]
    del self.stack[len(self.stack) - count:]
    return items

  def set_items(self, target: Any, items: list[Any], position: int) -> None:
    if not isinstance(target, dict) or len(items) % 2:
      raise self.fail("SETITEM(S) on something other than a dict", position)
    for key, value in zip(items[::2], items[1::2]):
      # Checked before hashing: hashing a deeply nested key is what overflows
      # the C stack in `pickle`.
      if not isinstance(key, str):
        raise self.fail(f"a dict key is a {type(key).__name__}, not a string", position)
      target[key] = value
    self.container(target, items[1::2], position, base=self.depth(target))

  def read(self, data: bytes) -> Any:
    """Interprets the pickle in `data` and returns its top-level value."""
    try:
      for opcode, arg, position in pickletools.genops(data):
        name = opcode.name
        if name == "STOP":
          break
        self.step(name, arg, position or 0)
      else:
        raise WeightFileError(f"{self.path}: truncated pickle (no STOP opcode)")
    except (ValueError, UnicodeError, OverflowError) as error:  # From genops' decoding.
      if isinstance(error, WeightFileError):
        raise
      raise WeightFileError(f"{self.path}: cannot read as a pickle of NumPy arrays: "
                            f"{error}") from None
    if len(self.stack) != 1 or self.marks:
      raise WeightFileError(f"{self.path}: malformed pickle ({len(self.stack)} values left "
                            "on the stack at STOP)")
    return self.stack[0]

  def step(self, name: str, arg: Any, position: int) -> None:
    stack = self.stack
    if name in ("PROTO", "FRAME"):
      return
    if name in _VALUE_OPCODES:
      # (genops decodes protocol 0's INT 01/00 to True/False itself.)
      if isinstance(arg, int) and arg.bit_length() > 64:
        raise self.fail("integer wider than 64 bits", position)
      stack.append(bytearray(arg) if name == "BYTEARRAY8" else arg)
    elif name == "NONE":
      stack.append(None)
    elif name in ("NEWTRUE", "NEWFALSE"):
      stack.append(name == "NEWTRUE")
    elif name == "MARK":
      self.marks.append(len(stack))
    elif name == "POP":
      self.pop(1, position)
    elif name == "POP_MARK":
      self.pop_mark(position)
    elif name in ("EMPTY_DICT", "EMPTY_LIST", "EMPTY_TUPLE"):
      stack.append(self.container({"EMPTY_DICT": {}, "EMPTY_LIST": [],
                                   "EMPTY_TUPLE": ()}[name], (), position))
    elif name in ("TUPLE", "LIST", "DICT"):
      items = self.pop_mark(position)
      if name == "TUPLE":
        stack.append(self.container(tuple(items), items, position))
      elif name == "LIST":
        stack.append(self.container(items, items, position))
      else:
        target = self.container({}, (), position)
        self.set_items(target, items, position)
        stack.append(target)
    elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
      items = self.pop(int(name[-1]), position)
      stack.append(self.container(tuple(items), items, position))
    elif name in ("APPEND", "APPENDS"):
      items = self.pop(1, position) if name == "APPEND" else self.pop_mark(position)
      if not stack or not isinstance(stack[-1], list):
        raise self.fail(f"{name} on something other than a list", position)
      stack[-1].extend(items)
      self.container(stack[-1], items, position, base=self.depth(stack[-1]))
    elif name in ("SETITEM", "SETITEMS"):
      items = self.pop(2, position) if name == "SETITEM" else self.pop_mark(position)
      if not stack:
        raise self.fail(f"{name} with no dict", position)
      self.set_items(stack[-1], items, position)
    elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
      if not stack:
        raise self.fail(f"{name} with an empty stack", position)
      self.memo[len(self.memo) if name == "MEMOIZE" else int(arg)] = stack[-1]
    elif name in ("GET", "BINGET", "LONG_BINGET"):
      if int(arg) not in self.memo:
        raise self.fail(f"{name} of memo entry {arg} that was never stored", position)
      value = self.memo[int(arg)]
      # Lists and dicts are never shared: no cycles, so nothing here recurses forever.
      if isinstance(value, (list, dict)):
        raise self.fail(f"{name} of a {type(value).__name__} (shared containers are not "
                        "part of a weight file)", position)
      stack.append(value)
    elif name in ("GLOBAL", "STACK_GLOBAL"):
      if name == "GLOBAL":
        module, _, attribute = str(arg).partition(" ")
      else:
        module, attribute = self.pop(2, position)
        if not isinstance(module, str) or not isinstance(attribute, str):
          raise self.fail("STACK_GLOBAL with non-string names", position)
      if (module, attribute) not in _ALLOWED_GLOBALS:
        raise UnsafePickleError(
            f"{self.path}: refused to read: forbidden global '{module}.{attribute}' at pickle "
            f"byte {position}; only NumPy arrays and plain containers are allowed")
      stack.append(_Global(module, attribute))
    elif name == "REDUCE":
      function, args = self.pop(2, position)
      if not isinstance(function, _Global) or not isinstance(args, tuple):
        raise self.fail("REDUCE of something other than an allowed global", position)
      stack.append(self.call(function, args, position))
    elif name == "BUILD":
      (state,) = self.pop(1, position)
      if not stack:
        raise self.fail("BUILD with no object", position)
      self.build(stack[-1], state, position)
    else:
      raise UnsafePickleError(f"{self.path}: refused to read: opcode {name} at pickle byte "
                              f"{position} is not part of a weight file")

  def call(self, function: _Global, args: tuple, position: int) -> Any:
    key = function.key
    if key == ("_codecs", "encode"):
      if (len(args) != 2 or not isinstance(args[0], str)
          or args[1] not in ("latin1", "latin-1")):
        raise self.fail("_codecs.encode with arguments other than (str, 'latin1')", position)
      return args[0].encode("latin1")
    if key == ("numpy", "dtype"):
      if (len(args) != 3 or not isinstance(args[0], str)
          or not all(isinstance(a, int) for a in args[1:])):
        raise self.fail("numpy.dtype with arguments other than (name, align, copy)", position)
      return _DtypeSpec(self.plain_dtype(args[0], position))
    if key == ("collections", "OrderedDict"):
      target = self.container({}, (), position)
      if args == ():
        return target
      # Python 2 writes OrderedDict((key, value) pairs as 2-lists, ...).
      if len(args) != 1 or not isinstance(args[0], list) or not all(
          isinstance(pair, (list, tuple)) and len(pair) == 2 for pair in args[0]):
        raise self.fail("OrderedDict with arguments other than a list of pairs", position)
      self.set_items(target, [item for pair in args[0] for item in pair], position)
      return target
    if key in _RECONSTRUCT:
      if (len(args) != 3 or not isinstance(args[0], _Global) or args[0].key != ("numpy", "ndarray")
          or args[1] != (0,) or args[2] not in (b"b", "b")):
        raise self.fail("_reconstruct with arguments other than (ndarray, (0,), b'b')", position)
      return _PendingArray()
    if key in _FROMBUFFER:
      if (len(args) != 4 or not isinstance(args[0], (bytes, bytearray))
          or not isinstance(args[1], _DtypeSpec) or args[3] not in ("C", "F")):
        raise self.fail("_frombuffer with arguments other than (bytes, dtype, shape, order)",
                        position)
      return self.array(args[0], args[1], args[2], args[3] == "F", position)
    if key in _SCALAR:
      if len(args) != 2 or not isinstance(args[0], _DtypeSpec):
        raise self.fail("scalar with arguments other than (dtype, bytes)", position)
      return self.array(args[1], args[0], (), False, position)
    raise self.fail(f"'{function.module}.{function.name}' cannot be called", position)

  def plain_dtype(self, name: str, position: int) -> np.dtype:
    # Only names like 'f4', 'i8', 'b1': no object, string, void or structured dtypes.
    if name not in _DTYPE_NAMES:
      raise self.fail(f"dtype {name!r} is not a plain numeric dtype", position)
    dtype = np.dtype(name)
    if dtype.kind not in _NUMERIC_KINDS or dtype.hasobject or dtype.fields is not None:
      raise self.fail(f"dtype {name!r} is not a plain numeric dtype", position)
    return dtype

  def build(self, target: Any, state: Any, position: int) -> None:
    if isinstance(target, _DtypeSpec):
      # The only state a plain numeric dtype has: (3, byte order, no subarray,
      # no names, no fields, elsize -1, alignment -1, flags 0).
      if (target.built or not isinstance(state, tuple) or len(state) != 8
          or state[0] != 3 or state[1] not in ("<", ">", "|", "=")
          or state[2:5] != (None, None, None) or state[5:] != (-1, -1, 0)
          or any(isinstance(v, bool) for v in state[5:])):
        raise self.fail("dtype state other than a plain byte order (flags, fields or "
                        "subarrays are not part of a weight file)", position)
      if state[1] in "<>" and target.dtype.itemsize > 1:
        target.dtype = target.dtype.newbyteorder(state[1])
      target.built = True
    elif isinstance(target, _PendingArray):
      if (target.array is not None or not isinstance(state, tuple) or len(state) != 5
          or state[0] != 1 or not isinstance(state[2], _DtypeSpec)
          or not isinstance(state[3], bool)):
        raise self.fail("array state other than (1, shape, dtype, fortran, bytes)", position)
      target.array = self.array(state[4], state[2], state[1], state[3], position)
    else:
      raise self.fail(f"BUILD of a {type(target).__name__}", position)

  def array(self, data: Any, dtype: _DtypeSpec, shape: Any, fortran: bool,
            position: int) -> np.ndarray:
    if isinstance(data, str):  # Python 2 str: bytes decoded as latin1 by genops.
      try:
        data = data.encode("latin1")
      except UnicodeEncodeError:
        raise self.fail("array data is text, not bytes", position) from None
    if not isinstance(data, (bytes, bytearray)):
      raise self.fail(f"array data is a {type(data).__name__}, not bytes (object arrays are "
                      "not part of a weight file)", position)
    if (not isinstance(shape, tuple) or len(shape) > MAX_NDIM
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
      raise self.fail(f"array shape is not a tuple of at most {MAX_NDIM} sizes", position)
    declared = dtype.dtype.itemsize * math.prod(shape)
    if declared != len(data):
      raise self.fail(f"array declares shape {shape} of {dtype.dtype} ({declared} bytes) but "
                      f"holds {len(data)} bytes", position)
    self.array_bytes += declared
    if self.array_bytes > self.max_bytes:
      raise self.fail(f"arrays exceed the size cap of {self.max_bytes} bytes", position)
    # Native byte order in a fresh, writable buffer (as NumPy's unpickling gives).
    return np.frombuffer(data, dtype.dtype).reshape(
        shape, order="F" if fortran else "C").astype(dtype.dtype.newbyteorder("="), order="K")



def check_state_dict(raw: Any, path: str) -> dict[str, np.ndarray]:
  """Checks that `raw` is a dict of str -> finite float NumPy arrays.

  Integer arrays are allowed only under `IGNORED_SUFFIXES` (PyTorch's
  `num_batches_tracked`), which conversion drops. BatchNorm variances
  (`*.running_var`) must be >= 0.

  Raises:
    WeightFileError: naming `path` and the key at fault.
  """
  if not isinstance(raw, dict):
    raise WeightFileError(f"{path}: expected a dict of NumPy arrays keyed like a state_dict, "
                          f"got {type(raw).__name__}")
  out = {}
  for key, value in raw.items():
    if not isinstance(key, str):
      raise WeightFileError(f"{path}: state dict key of type {type(key).__name__} is not a "
                            "string")
    if isinstance(value, _PendingArray):
      if value.array is None:
        raise WeightFileError(f"{path}: entry {key!r} is an array declared without its data")
      value = value.array
    if not isinstance(value, np.ndarray):
      raise WeightFileError(f"{path}: entry {key!r} is not a numeric NumPy array "
                            f"(got {type(value).__name__})")
    if key.endswith(IGNORED_SUFFIXES) and value.dtype.kind in "iu" and value.size <= 1:
      out[key] = value
      continue
    if value.dtype.name not in _FLOAT_DTYPES:
      raise WeightFileError(f"{path}: entry {key!r} has dtype {value.dtype}; weights must be "
                            f"one of {list(_FLOAT_DTYPES)}")
    if not np.isfinite(value).all():
      bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
      raise WeightFileError(f"{path}: entry {key!r} holds {bad} non-finite values (NaN/inf)")
    if key.endswith("running_var") and (value < 0).any():
      raise WeightFileError(f"{path}: entry {key!r} (a BatchNorm variance) holds negative "
                            f"values (min {float(value.min()):g})")
    out[key] = value
  return out


def _check_readable_file(path: str, max_bytes: int) -> int:
  """Size of the regular file `path`; named errors for anything else."""
  try:
    info = os.stat(path)
  except OSError as error:
    if error.errno == errno.ELOOP:
      raise WeightFileError(f"weight file {path!r} is a symbolic-link loop") from None
    if error.errno == errno.ENOENT:
      raise FileNotFoundError(f"weight file {path!r} does not exist") from None
    raise WeightFileError(f"weight file {path!r} cannot be read: {error.strerror}") from None
  if stat.S_ISDIR(info.st_mode):
    raise IsADirectoryError(f"weight file {path!r} is a directory, not a .pkl/.npz file")
  if not stat.S_ISREG(info.st_mode):
    raise WeightFileError(f"weight file {path!r} is not a regular file")
  if info.st_size > max_bytes:
    raise WeightFileError(f"weight file {path!r} is {info.st_size} bytes, more than the cap of "
                          f"{max_bytes} bytes (raise max_bytes if it is genuine)")
  return info.st_size


def _read_npz(path: str, max_bytes: int) -> dict[str, np.ndarray]:
  """Reads an `.npz` with `allow_pickle=False`, checking sizes from the headers first."""
  try:
    archive = zipfile.ZipFile(path)
  except (zipfile.BadZipFile, OSError) as error:
    raise WeightFileError(f"{path}: not a readable .npz archive: {error}") from None
  arrays = {}
  with archive:
    members = archive.infolist()
    declared = sum(member.file_size for member in members)
    if declared > max_bytes:  # Zip headers state every member's decompressed size.
      raise WeightFileError(f"{path}: members decompress to {declared} bytes, more than the "
                            f"cap of {max_bytes} bytes")
    for member in members:
      key = member.filename[:-4] if member.filename.endswith(".npy") else member.filename
      try:
        with archive.open(member) as f:
          # The .npy header's shape decides what NumPy allocates: check it
          # against the bytes the member holds before reading the data.
          version = np.lib.format.read_magic(f)
          if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
          elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
          else:
            raise WeightFileError(f"{path}: entry {key!r} has .npy format {version}; "
                                  "expected 1.0 or 2.0")
          if dtype.kind not in _NUMERIC_KINDS or dtype.fields is not None or dtype.hasobject:
            raise WeightFileError(f"{path}: entry {key!r} has dtype {dtype}, not a plain "
                                  "numeric dtype")
          if dtype.itemsize * math.prod(shape) > member.file_size:
            raise WeightFileError(f"{path}: entry {key!r} declares shape {shape} of {dtype} "
                                  f"but holds only {member.file_size} bytes")
        with archive.open(member) as f:
          array = np.lib.format.read_array(f, allow_pickle=False)
      except WeightFileError:
        raise
      except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise WeightFileError(f"{path}: entry {key!r} cannot be read: {error}") from None
      arrays[key] = array
  return arrays


def load_state_dict(path: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, np.ndarray]:
  """Reads a state dict of float NumPy arrays from a `.pkl`/`.pickle` or `.npz` file.

  The pickle is never unpickled: its opcodes are interpreted by a reader that
  accepts only a dict (or OrderedDict) of str -> NumPy arrays of plain numeric
  dtypes, written by NumPy's `_reconstruct` (any protocol, Python 2 or 3) or
  `_frombuffer` (protocol 5) reductions (see `_PickleReader`).

  Args:
    path: a pickle of a dict of NumPy arrays (the VGGFace2 release format) or
      an `.npz` archive with the same keys.
    max_bytes: cap on the file size and on the total bytes of its arrays
      (for `.npz`, the decompressed size stated in the zip headers).

  Returns:
    `{torch key: np.ndarray}` with the file's shapes and dtypes: float16/32/64,
    finite, `running_var` >= 0 (integer `num_batches_tracked` kept as is).

  Raises:
    FileNotFoundError: no such file.
    IsADirectoryError: `path` is a directory.
    UnsafePickleError: the pickle names a global or an opcode a weight file
      does not need (nothing is ever called); the message names file and global.
    WeightFileError: anything else the loader refuses (malformed or truncated
      pickle, object or structured dtypes, sizes that disagree with the bytes
      present, size cap, nesting deeper than `MAX_NESTING`, non-float,
      non-finite or negative-variance values); names the file and the key.
  """
  path = os.fspath(path)
  _check_readable_file(path, max_bytes)
  with open(path, "rb") as f:
    magic = f.read(4)
  if magic == b"PK\x03\x04":
    if not path.endswith(".npz"):
      raise WeightFileError(f"{path}: a zip archive but not an .npz (a torch.save .pth "
                            "file?); export it as a pickle or .npz of NumPy arrays")
    return check_state_dict(_read_npz(path, max_bytes), path)
  with open(path, "rb") as f:
    data = f.read(max_bytes + 1)
  if len(data) > max_bytes:  # The file grew since the check.
    raise WeightFileError(f"weight file {path!r} is more than the cap of {max_bytes} bytes")
  return check_state_dict(_PickleReader(path, max_bytes).read(data), path)


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


def convert(in_path: str, out_dir: str, *, bgr_to_rgb: bool = True, overwrite: bool = False,
            max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, Any]:
  """Converts a weight file once into an Orbax checkpoint directory.

  Writes `{"params", "batch_stats"}` with `ocp.StandardCheckpointer` to
  `out_dir` plus `mer_jax_resnet.json` describing the architecture and the
  input channel order. Returns that description. `out_dir` must not exist,
  or, with `overwrite=True`, must be an earlier output of `convert` (it is
  replaced); it may never be, resolve to, or contain `in_path`
  (`mer_jax.paths.check_output_path`).

  VGGFace2 was trained on BGR images; by default the stem's input channels are
  reversed so that the checkpoint takes the RGB frames `MERModel` feeds it
  (with `pixel_stats="vggface2"`, the same mean in RGB order). Pass
  `bgr_to_rgb=False` to keep the original BGR convention.
  """
  out_dir = os.path.abspath(out_dir)
  # The input is never the output, inside it, or reached through a link.
  paths.check_output_path(out_dir, [in_path], overwrite=True, what="OUT")
  if os.path.lexists(out_dir):
    if not overwrite:
      raise FileExistsError(f"output checkpoint directory {out_dir!r} already exists: pass "
                            "--overwrite to replace an earlier conversion")
    if not os.path.isfile(os.path.join(out_dir, METADATA_FILE)):
      # Replacing deletes the folder: only ever an earlier conversion's.
      raise FileExistsError(f"output checkpoint directory {out_dir!r} exists and is not an "
                            f"earlier conversion (no {METADATA_FILE}): refusing to replace it")
  state_dict = load_state_dict(in_path, max_bytes=max_bytes)
  model = model_for_state_dict(state_dict)
  variables = state_dict_to_variables(state_dict, model, source=in_path, bgr_to_rgb=bgr_to_rgb)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(out_dir, variables, force=overwrite)
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


def main(argv: Optional[Sequence[str]] = None) -> int:
  """`python -m mer_jax.models.weights convert IN_FILE OUT_CKPT_DIR`; returns the exit code.

  Any refusal prints one line `error: ...` to stderr and returns 2.
  """
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
  convert_parser.add_argument("--overwrite", action="store_true",
                              help="replace OUT if it is an earlier conversion")
  convert_parser.add_argument("--max_bytes", type=int, default=DEFAULT_MAX_BYTES,
                              help="refuse weight files holding more bytes than this")
  args = parser.parse_args(argv)
  try:
    metadata = convert(args.in_file, args.out_dir, bgr_to_rgb=not args.keep_bgr,
                       overwrite=args.overwrite, max_bytes=args.max_bytes)
  except (OSError, ValueError) as error:  # WeightFileError, OutputPathError: ValueErrors.
    print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
    return 2
  print(f"wrote {os.path.abspath(args.out_dir)}: {json.dumps(metadata)}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
