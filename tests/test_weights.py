"""Tests of the safe weight loader, the key/shape checks and the Orbax conversion."""

import collections
import json
import os
import pickle
import struct
import subprocess
import sys
import textwrap
import time
import zipfile

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mer_jax.models import create_model, resnet, weights

TINY = dict(stage_sizes=(1, 1), block="bottleneck", base_width=4)


def _tiny_state_dict(num_classes=3, seed=0):
  """A random torchvision-layout state dict for `ResNet(**TINY, num_classes)`."""
  rng = np.random.RandomState(seed)
  model = resnet.ResNet(**TINY, num_classes=num_classes)
  shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), jnp.zeros((1, 32, 32, 3)))
  state = {}
  for collection in ("params", "batch_stats"):
    for path, spec in jax.tree_util.tree_flatten_with_path(shapes[collection])[0]:
      names = tuple(p.key for p in path)
      key = weights._torch_key(collection, names)
      state[key] = rng.rand(*weights._torch_shape(spec.shape, names[-1])).astype(np.float32)
      if key.endswith("running_mean"):
        state[key.replace("running_mean", "num_batches_tracked")] = np.array(7, np.int64)
  return state


class _Exploit:
  """Pickles to a call of os.system: what a malicious weight file would do."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_before_running(tmp_path):
  marker = tmp_path / "pwned"
  path = tmp_path / "evil.pkl"
  payload = {"conv1.weight": np.zeros((2, 3, 7, 7), np.float32), "x": _Exploit(marker)}
  with open(path, "wb") as f:
    pickle.dump(payload, f, protocol=2)
  with pytest.raises(weights.UnsafePickleError) as error:
    weights.load_state_dict(str(path))
  message = str(error.value)
  assert str(path) in message and ("posix.system" in message or "nt.system" in message)
  assert not marker.exists()
  # The same file through plain pickle does run the payload: the test is real.
  with open(path, "rb") as f:
    pickle.load(f)
  assert marker.exists()


@pytest.mark.parametrize("protocol", [2, 4])
def test_release_format_pickle_and_npz_load_identically(tmp_path, protocol):
  state = _tiny_state_dict()
  state_ordered = collections.OrderedDict(state)
  pkl = tmp_path / "w.pkl"
  with open(pkl, "wb") as f:
    pickle.dump(state_ordered, f, protocol=protocol)
  npz = tmp_path / "w.npz"
  np.savez(npz, **state)
  for path in (pkl, npz):
    loaded = weights.load_state_dict(str(path))
    assert set(loaded) == set(state)
    for key, value in state.items():
      np.testing.assert_array_equal(loaded[key], value)
      assert loaded[key].dtype == value.dtype


def test_non_array_entries_and_garbage_are_rejected(tmp_path):
  path = tmp_path / "w.pkl"
  with open(path, "wb") as f:
    pickle.dump({"conv1.weight": [1.0, 2.0]}, f)
  with pytest.raises(ValueError, match=r"entry 'conv1.weight' is not a numeric NumPy array"):
    weights.load_state_dict(str(path))
  path.write_bytes(b"not a pickle at all")
  with pytest.raises(weights.WeightFileError, match="cannot read as a pickle"):
    weights.load_state_dict(str(path))
  with pytest.raises(FileNotFoundError, match="nope.pkl' does not exist"):
    weights.load_state_dict(str(tmp_path / "nope.pkl"))
  with pytest.raises(IsADirectoryError, match="is a directory"):
    weights.load_state_dict(str(tmp_path))
  os.symlink(tmp_path / "loop_a.pkl", tmp_path / "loop_b.pkl")
  os.symlink(tmp_path / "loop_b.pkl", tmp_path / "loop_a.pkl")
  with pytest.raises(weights.WeightFileError, match="loop_a.pkl' is a symbolic-link loop"):
    weights.load_state_dict(str(tmp_path / "loop_a.pkl"))


def test_conversion_layout_and_all_key_problems_reported_at_once():
  state = _tiny_state_dict()
  model = weights.model_for_state_dict(state)
  assert (model.resolved_stage_sizes, model.block_kind, model.base_width, model.num_classes) == \
      ((1, 1), "bottleneck", 4, 3)
  variables = weights.state_dict_to_variables(state, model)
  np.testing.assert_array_equal(variables["params"]["layer2_0"]["conv2"]["kernel"],
                                state["layer2.0.conv2.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(variables["params"]["fc"]["kernel"], state["fc.weight"].T)
  np.testing.assert_array_equal(variables["params"]["layer1_0"]["downsample_bn"]["scale"],
                                state["layer1.0.downsample.1.weight"])
  np.testing.assert_array_equal(variables["batch_stats"]["bn1"]["var"], state["bn1.running_var"])

  broken = dict(state)
  del broken["layer1.0.bn2.running_var"]
  del broken["fc.bias"]
  broken["layer9.0.conv1.weight"] = np.zeros((1,), np.float32)
  broken["layer2.0.conv3.weight"] = np.zeros((5, 8, 1, 1), np.float32)
  with pytest.raises(ValueError) as error:
    weights.state_dict_to_variables(broken, model, source="broken.pkl")
  message = str(error.value)
  for expected in ("broken.pkl", "missing keys", "layer1.0.bn2.running_var", "fc.bias",
                   "unexpected keys", "layer9.0.conv1.weight", "mis-shaped keys",
                   "layer2.0.conv3.weight: file (5, 8, 1, 1), model expects (32, 8, 1, 1)"):
    assert expected in message, (expected, message)


@pytest.mark.slow
def test_convert_cli_checkpoint_round_trip_into_mer_model(tmp_path, capsys):
  state = _tiny_state_dict(num_classes=5)
  source = tmp_path / "vggface2.pkl"
  with open(source, "wb") as f:
    pickle.dump(state, f, protocol=2)
  out_dir = tmp_path / "ckpt"
  weights.main(["convert", str(source), str(out_dir)])
  assert "wrote" in capsys.readouterr().out
  assert weights.checkpoint_architecture(str(out_dir))["stage_sizes"] == [1, 1]
  with pytest.raises(FileExistsError, match="already exists"):
    weights.convert(str(source), str(out_dir))
  weights.convert(str(source), str(out_dir), overwrite=True)  # An earlier conversion: replaced.

  full = weights.load_encoder_checkpoint(str(out_dir), include_top=True)
  np.testing.assert_array_equal(full["params"]["fc"]["kernel"], state["fc.weight"].T)
  # By default the stem takes RGB: same logits on RGB images as the source on BGR ones.
  model = weights.model_for_state_dict(state)
  bgr = jnp.asarray(np.random.RandomState(4).randn(2, 32, 32, 3).astype(np.float32))
  np.testing.assert_allclose(model.apply(full, bgr[..., ::-1]),
                             model.apply(weights.state_dict_to_variables(state, model), bgr),
                             rtol=1e-5, atol=1e-5)
  weights.main(["convert", str(source), str(tmp_path / "bgr"), "--keep_bgr"])
  np.testing.assert_array_equal(
      weights.load_encoder_checkpoint(str(tmp_path / "bgr"))["params"]["conv1"]["kernel"],
      state["conv1.weight"].transpose(2, 3, 1, 0))
  encoder = weights.load_encoder_checkpoint(str(out_dir))
  assert "fc" not in encoder["params"]

  # A MERModel with a truncated ResNet encoder picks up the pretrained layers it has.
  config = ml_collections.ConfigDict({
      "encoder": "resnet", "temporal_head": "frames",
      "encoder_kwargs": {**TINY, "truncate_after": "layer1"}})
  model = create_model(config, num_classes=2)
  frames = jnp.zeros((1, 2, 32, 32, 3))
  mask = jnp.ones((1, 2), bool)
  initial = jax.eval_shape(lambda: model.init(jax.random.key(0), frames, mask, train=False))
  initial = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), initial)
  merged = weights.merge_encoder_variables(initial, encoder)
  np.testing.assert_array_equal(merged["params"]["encoder"]["layer1_0"]["conv3"]["kernel"],
                                state["layer1.0.conv3.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(merged["batch_stats"]["encoder"]["bn1"]["mean"],
                                state["bn1.running_mean"])
  assert "layer2_0" not in merged["params"]["encoder"]
  np.testing.assert_array_equal(merged["params"]["classifier"]["kernel"], 0.0)

  wider = jax.eval_shape(lambda: create_model(ml_collections.ConfigDict({
      "encoder": "resnet", "temporal_head": "frames",
      "encoder_kwargs": {**TINY, "base_width": 8}}), num_classes=2).init(
          jax.random.key(0), frames, mask, train=False))
  with pytest.raises(ValueError, match=r"params/conv1/kernel: pretrained \(7, 7, 3, 4\), "
                     r"model \(7, 7, 3, 8\)"):
    weights.merge_encoder_variables(wider, encoder)
  with pytest.raises(FileNotFoundError, match="not a converted ResNet checkpoint"):
    weights.load_encoder_checkpoint(str(tmp_path))


# Crafted files (issue 17, item 7). -------------------------------------------
# A tiny emitter for hand-written pickles: what an attacker (or Python 2) writes.


def _global(module, name):
  return b"c" + f"{module}\n{name}\n".encode()


def _text(value):  # Python 3 str (BINUNICODE).
  data = value.encode("utf-8")
  return b"X" + struct.pack("<I", len(data)) + data


def _py2_str(data):  # Python 2 str (BINSTRING): raw bytes.
  return b"T" + struct.pack("<i", len(data)) + data


def _int(value):
  return b"J" + struct.pack("<i", value)


MARK, TUPLE, TUPLE1, TUPLE3, REDUCE, BUILD, STOP = b"(", b"t", b"\x85", b"\x87", b"R", b"b", b"."
NONE, FALSE, TRUE, EMPTY_DICT, SETITEM, EMPTY_LIST, APPENDS = (
    b"N", b"\x89", b"\x88", b"}", b"s", b"]", b"e")


def _dtype(name, state=(3, "<", None, None, None, -1, -1, 0), text=_py2_str):
  fields = b"".join(NONE if v is None else _int(v) if isinstance(v, int) else
                    text(v.encode() if text is _py2_str else v) for v in state)
  return (_global("numpy", "dtype") + text(name.encode() if text is _py2_str else name)
          + _int(0) + _int(1) + TUPLE3 + REDUCE + MARK + fields + TUPLE + BUILD)


def _array(shape, data, dtype=None, reconstruct_shape=(0,)):
  """Python 2 protocol 2 of an ndarray, as the VGGFace2 release files have them."""
  head = (_global("numpy.core.multiarray", "_reconstruct") + _global("numpy", "ndarray")
          + MARK + b"".join(_int(d) for d in reconstruct_shape) + TUPLE + _py2_str(b"b")
          + TUPLE3 + REDUCE)
  if data is None:
    return head
  return (head + MARK + _int(1) + MARK + b"".join(_int(d) for d in shape) + TUPLE
          + (dtype or _dtype("f4")) + FALSE + _py2_str(data) + TUPLE + BUILD)


def _py2_ordered_dict(entries):
  """Python 2's OrderedDict reduction: OrderedDict([[key, value], ...])."""
  pairs = b"".join(EMPTY_LIST + MARK + _py2_str(key.encode()) + value + APPENDS
                   for key, value in entries.items())
  return (b"\x80\x02" + _global("collections", "OrderedDict") + EMPTY_LIST + MARK + pairs
          + APPENDS + TUPLE1 + REDUCE + STOP)


def _single(key, value):
  return b"\x80\x02" + EMPTY_DICT + _text(key) + value + SETITEM + STOP


def test_python2_release_format_is_read_like_pickle_reads_it(tmp_path):
  rng = np.random.RandomState(1)
  arrays = {"conv1.weight": rng.randn(4, 3, 2, 2).astype(np.float32),
            "bn1.running_var": rng.rand(4).astype(">f8")}
  entries = {"conv1.weight": _array((4, 3, 2, 2), arrays["conv1.weight"].tobytes()),
             "bn1.running_var": _array((4,), arrays["bn1.running_var"].tobytes(),
                                       dtype=_dtype("f8", (3, ">", None, None, None, -1, -1, 0)))}
  path = tmp_path / "py2.pkl"
  path.write_bytes(_py2_ordered_dict(entries))
  reference = pickle.loads(path.read_bytes(), encoding="latin1")  # The emitter is valid.
  loaded = weights.load_state_dict(str(path))
  assert list(loaded) == list(reference) == list(arrays)
  for key, value in arrays.items():
    np.testing.assert_array_equal(loaded[key], value)
    np.testing.assert_array_equal(loaded[key], reference[key])
    assert loaded[key].dtype == reference[key].dtype  # Native byte order, as pickle gives.
  assert loaded["conv1.weight"].flags.writeable


@pytest.mark.parametrize("protocol", [0, 1, 3, 5])
def test_every_pickle_protocol_of_numpy_arrays_loads(tmp_path, protocol):
  state = {"a.weight": np.arange(6, dtype=np.float64).reshape(2, 3),
           "b.weight": np.asfortranarray(np.ones((3, 2), np.float16)),
           "a.num_batches_tracked": np.array(3, np.int64)}
  path = tmp_path / "w.pkl"
  path.write_bytes(pickle.dumps(collections.OrderedDict(state), protocol=protocol))
  loaded = weights.load_state_dict(str(path))
  for key, value in state.items():
    np.testing.assert_array_equal(loaded[key], value)
    assert loaded[key].dtype == value.dtype


# Files that crash or fool `pickle.Unpickler` with an allow-list; they are
# read in a subprocess so that a crash shows as a signal, not a lost session.
CRAFTED = {
    # dtype('O8') with its object flags cleared, then an array of 8 file bytes.
    "object_dtype_flags_cleared": _single("x", _array(
        (1,), b"\x41" * 8, dtype=_dtype("O8", (3, "|", None, None, None, -1, -1, 0)))),
    # A float dtype whose state carries object flags (63 = NPY_OBJECT_DTYPE_FLAGS).
    "float_dtype_with_object_flags": _single("x", _array(
        (1,), b"\x00" * 4, dtype=_dtype("f4", (3, "<", None, None, None, -1, -1, 63)))),
    # A dict key nested 200,000 tuples deep, no globals at all.
    "deep_tuple_key": (b"\x80\x02" + EMPTY_DICT + b")" + TUPLE1 * 200_000 + NONE + SETITEM
                       + STOP),
    "deep_list_value": (b"\x80\x02" + EMPTY_DICT + _text("x") + (EMPTY_LIST + MARK) * 100_000
                        + b"l" * 100_000 + SETITEM + STOP),
    # _reconstruct with a declared shape and no data: uninitialised memory.
    "reconstruct_declared_shape": _single("x", _array(None, None, reconstruct_shape=(1000,))),
    "reconstruct_no_build": _single("x", _array(None, None)),
    "data_shorter_than_shape": _single("x", _array((1000,), b"\x00" * 8)),
    "shape_overflow": _single("x", _array((2**31 - 1, 2**31 - 1, 2**31 - 1), b"\x00" * 8)),
    # An array whose data is a list (how object arrays pickle).
    "object_array_data_list": _single("x", _array(None, None) + MARK + _int(1) + MARK + _int(1)
                                      + TUPLE + _dtype("f4") + FALSE + EMPTY_LIST + TUPLE + BUILD),
    "truncated": pickle.dumps({"x": np.zeros(4, np.float32)}, protocol=2)[:-20],
    "self_referencing_list": (b"\x80\x02" + EMPTY_DICT + _text("x") + EMPTY_LIST + b"q\x00"
                              + b"h\x00" + b"a" + SETITEM + STOP),
}


def test_crafted_files_are_refused_without_crashing(tmp_path):
  for name, data in CRAFTED.items():
    (tmp_path / f"{name}.pkl").write_bytes(data)
  script = textwrap.dedent(f"""
      import json, sys
      from mer_jax.models import weights
      results = {{}}
      for name in {sorted(CRAFTED)!r}:
        try:
          weights.load_state_dict({str(tmp_path)!r} + "/" + name + ".pkl")
          results[name] = "loaded"
        except weights.WeightFileError as error:
          results[name] = str(error)
      print(json.dumps(results))
  """)
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, cwd=os.path.dirname(os.path.dirname(__file__)))
  assert result.returncode == 0, (result.returncode, result.stderr[-2000:])  # Not a signal.
  results = json.loads(result.stdout.splitlines()[-1])
  expected = {
      "object_dtype_flags_cleared": "dtype 'O8' is not a plain numeric dtype",
      "float_dtype_with_object_flags": "dtype state other than a plain byte order",
      "deep_tuple_key": "nested more than 64 deep",
      "deep_list_value": "nested more than 64 deep",
      "reconstruct_declared_shape": "_reconstruct with arguments other than",
      "reconstruct_no_build": "entry 'x' is an array declared without its data",
      "data_shorter_than_shape": "declares shape (1000,) of float32 (4000 bytes) but holds 8",
      "shape_overflow": "but holds 8 bytes",
      "object_array_data_list": "array data is a list, not bytes",
      "truncated": "cannot read as a pickle",
      "self_referencing_list": "BINGET of a list",
  }
  for name, message in expected.items():
    assert message in results[name], (name, results[name])
    assert f"{name}.pkl" in results[name], (name, results[name])


def _zip_member(archive, name, array):
  with archive.open(name, "w", force_zip64=True) as f:
    np.lib.format.write_array(f, array)


def test_npz_bombs_and_lies_are_refused_fast(tmp_path):
  bomb = tmp_path / "bomb.npz"
  with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
    _zip_member(archive, "conv1.weight.npy", np.zeros(16 << 20, np.float32))  # 64 MiB of zeros.
  assert bomb.stat().st_size < 1 << 20
  start = time.perf_counter()
  with pytest.raises(weights.WeightFileError, match=r"decompress to 67108\d+ bytes, more than "
                     r"the cap of 8388608"):
    weights.load_state_dict(str(bomb), max_bytes=8 << 20)
  assert time.perf_counter() - start < 1.0
  # The default cap from the headers alone: a member that says it holds 2.3 GB.
  small = tmp_path / "small.npz"
  np.savez(small, w=np.zeros(4, np.float32))
  data = small.read_bytes()
  info = zipfile.ZipFile(small).infolist()[0]
  central = data.rindex(b"PK\x01\x02")
  patched = bytearray(data)
  patched[central + 24:central + 28] = struct.pack("<I", 2_300_000_000)  # Uncompressed size.
  big = tmp_path / "says_big.npz"
  big.write_bytes(bytes(patched))
  assert zipfile.ZipFile(big).infolist()[0].file_size == 2_300_000_000 != info.file_size
  with pytest.raises(weights.WeightFileError, match="decompress to 2300000000 bytes"):
    weights.load_state_dict(str(big))
  # A .npy header whose shape is larger than the member's bytes.
  liar = tmp_path / "liar.npz"
  with zipfile.ZipFile(liar, "w") as archive:
    with archive.open("w.npy", "w") as f:
      np.lib.format.write_array_header_1_0(
          f, {"descr": "<f4", "fortran_order": False, "shape": (1 << 40,)})
      f.write(b"\x00" * 16)
  with pytest.raises(weights.WeightFileError, match=r"entry 'w' declares shape \(1099511627776,\)"):
    weights.load_state_dict(str(liar))
  objects = tmp_path / "objects.npz"
  np.savez(objects, w=np.array([None, 1], dtype=object))
  with pytest.raises(weights.WeightFileError, match="entry 'w' has dtype object"):
    weights.load_state_dict(str(objects))


@pytest.mark.parametrize("suffix", [".pkl", ".npz"])
@pytest.mark.parametrize("key,value,message", [
    ("conv1.weight", np.array([1.0, np.nan], np.float32), "holds 1 non-finite"),
    ("fc.bias", np.array([np.inf, -np.inf]), "holds 2 non-finite"),
    ("bn1.running_var", np.array([1.0, -0.5], np.float32), "BatchNorm variance"),
    ("conv1.weight", np.array([True, False]), "has dtype bool"),
    ("conv1.weight", np.array([1, 2], np.int32), "has dtype int32"),
    ("bn1.num_batches_tracked", np.array([1.5], np.float32), None),  # Float there is fine.
])
def test_bad_values_are_refused_naming_the_key(tmp_path, suffix, key, value, message):
  state = {"conv2.weight": np.ones(2, np.float32), key: value}
  path = tmp_path / f"w{suffix}"
  if suffix == ".npz":
    np.savez(path, **state)
  else:
    path.write_bytes(pickle.dumps(state, protocol=2))
  if message is None:
    assert set(weights.load_state_dict(str(path))) == set(state)
    return
  with pytest.raises(weights.WeightFileError, match=f"entry '{key}' .*{message}"):
    weights.load_state_dict(str(path))
  assert str(path) in str(pytest.raises(weights.WeightFileError,
                                        weights.load_state_dict, str(path)).value)


def test_size_cap_and_forbidden_opcodes(tmp_path):
  path = tmp_path / "w.pkl"
  path.write_bytes(pickle.dumps({"w": np.zeros(1000, np.float32)}, protocol=2))
  with pytest.raises(weights.WeightFileError, match="more than the cap of 100 bytes"):
    weights.load_state_dict(str(path), max_bytes=100)
  # One data string referenced by many arrays (memo) may not multiply past the cap.
  data = np.zeros(1000, np.float32).tobytes()
  first = _array((1000,), data) [:-len(TUPLE + BUILD)]
  assert first.endswith(_py2_str(data))
  first = first + b"q\x00" + TUPLE + BUILD  # BINPUT 0: memoise the data.
  again = _array((1000,), b"")[:-len(_py2_str(b"") + TUPLE + BUILD)] + b"h\x00" + TUPLE + BUILD
  path.write_bytes(b"\x80\x02" + EMPTY_DICT + b"".join(
      _text(f"w{i}") + (first if i == 0 else again) + SETITEM for i in range(5)) + STOP)
  assert len(weights.load_state_dict(str(path))) == 5
  with pytest.raises(weights.WeightFileError, match="arrays exceed the size cap of 12000"):
    weights.load_state_dict(str(path), max_bytes=12000)
  # Persistent ids and object construction are not part of a weight file.
  path.write_bytes(b"\x80\x02" + EMPTY_DICT + _text("x") + b"Pid\n" + SETITEM + STOP)
  with pytest.raises(weights.UnsafePickleError, match="opcode PERSID"):
    weights.load_state_dict(str(path))
  path.write_bytes(pickle.dumps({"x": collections.Counter()}, protocol=2))
  with pytest.raises(weights.UnsafePickleError, match="forbidden global 'collections.Counter'"):
    weights.load_state_dict(str(path))


def _run_cli(*args):
  return subprocess.run([sys.executable, "-m", "mer_jax.models.weights", *map(str, args)],
                        capture_output=True, text=True, timeout=300,
                        cwd=os.path.dirname(os.path.dirname(__file__)))


def test_cli_errors_are_one_line_and_exit_2(tmp_path, capsys):
  source = tmp_path / "w.pkl"
  source.write_bytes(pickle.dumps({"conv1.weight": np.array([np.nan], np.float32)}, protocol=2))
  before = source.read_bytes()
  cases = [
      ([source, tmp_path / "out"], "entry 'conv1.weight' holds 1 non-finite"),
      ([tmp_path / "missing.pkl", tmp_path / "out"], "missing.pkl' does not exist"),
      ([tmp_path / "taken", tmp_path / "out"], "is a directory"),
      ([source, source], "is the input"),
      ([source, tmp_path / "." / ".." / tmp_path.name / "w.pkl"], "is the input"),
      ([source, tmp_path, "--overwrite"], "contains the input"),
      ([source, tmp_path / "taken"], "already exists"),
      ([source, tmp_path / "taken", "--overwrite"], "is not an earlier conversion")]
  (tmp_path / "taken").mkdir()
  (tmp_path / "taken" / "mine.txt").write_text("keep")
  for args, message in cases:
    assert weights.main(["convert", *map(str, args)]) == 2, args
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, (args, err)
  assert source.read_bytes() == before
  assert (tmp_path / "taken" / "mine.txt").read_text() == "keep"


@pytest.mark.slow
def test_python_dash_m_cli_prints_one_error_line(tmp_path):
  source = tmp_path / "w.pkl"
  source.write_bytes(b"\x80\x02garbage")
  for args, message in (((source, source), "is the input"),
                        ((source, tmp_path / "out"), "cannot read as a pickle")):
    result = _run_cli("convert", *args)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert message in result.stderr


FUZZ_SCRIPT = r"""
import collections, json, os, pickle, sys, time
import numpy as np
from mer_jax.models import weights

rng = np.random.default_rng(int(sys.argv[2]))
folder, seconds = sys.argv[1], float(sys.argv[3])
seeds = [pickle.dumps(collections.OrderedDict(
             (("conv1.weight", np.arange(6, dtype=np.float32).reshape(2, 3)),
              ("bn1.running_var", np.ones(3)), ("bn1.num_batches_tracked", np.array(2)))),
             protocol=p) for p in (0, 2, 4, 5)]
seeds.append(bytes.fromhex(sys.argv[4]))  # The Python 2 release format.
counts, failures = collections.Counter(), []
path = os.path.join(folder, "fuzz.pkl")
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
  data = bytearray(seeds[rng.integers(len(seeds))])
  for _ in range(int(rng.integers(1, 4))):
    kind = int(rng.integers(4))
    if kind == 0 and data:  # Byte flips.
      for i in rng.integers(0, len(data), int(rng.integers(1, 4))):
        data[i] = int(rng.integers(256))
    elif kind == 1:  # Truncation.
      data = data[:int(rng.integers(0, len(data) + 1))]
    elif kind == 2 and data:  # Splice another seed's slice in.
      other = seeds[rng.integers(len(seeds))]
      a, b = sorted(rng.integers(0, len(other), 2))
      at = int(rng.integers(0, len(data)))
      data = data[:at] + other[a:b] + data[at:]
    elif data:  # Duplicate a slice (repeats opcodes: nesting, memo reuse).
      a, b = sorted(rng.integers(0, len(data), 2))
      data = data[:b] + data[a:b] * int(rng.integers(1, 50)) + data[b:]
  with open(path, "wb") as f:
    f.write(data)
  try:
    weights.load_state_dict(path)
    counts["loaded"] += 1
  except weights.WeightFileError:
    counts["refused"] += 1
  except Exception as error:  # Anything else is a finding.
    counts["other"] += 1
    if len(failures) < 5:
      failures.append([type(error).__name__, str(error)[:200], bytes(data).hex()[:400]])
print(json.dumps({"counts": counts, "failures": failures}))
"""


@pytest.mark.slow
def test_fuzzed_pickles_load_or_raise_the_module_error(tmp_path):
  release = _py2_ordered_dict({
      "conv1.weight": _array((2, 3), np.arange(6, dtype=np.float32).tobytes()),
      "bn1.running_var": _array((3,), np.ones(3).tobytes(), dtype=_dtype("f8"))})
  result = subprocess.run(
      [sys.executable, "-c", FUZZ_SCRIPT, str(tmp_path), "17", "6", release.hex()],
      capture_output=True, text=True, timeout=300,
      cwd=os.path.dirname(os.path.dirname(__file__)))
  assert result.returncode == 0, (result.returncode, result.stderr[-2000:])  # No signal.
  report = json.loads(result.stdout.splitlines()[-1])
  assert report["failures"] == [], report
  assert report["counts"]["refused"] > 1000 and report["counts"]["loaded"] > 10, report
