"""Records readable without TensorFlow: ArrayRecord files, old versions, missing and truncated files."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from conftest import tiny_config
from mer_jax import input_pipeline

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Makes TensorFlow uninstalled for the process, as on the GPU machines. Setting
# `sys.modules["tensorflow"] = None` does not do that: etils (which TFDS uses)
# treats any `tensorflow` entry in sys.modules as "TensorFlow is loaded" and
# then fails to use it, so TFDS would not even import. Hiding TF from the import
# system makes `importlib.util.find_spec("tensorflow")` None and
# `import tensorflow` raise ModuleNotFoundError, exactly as without the wheel.
HIDE_TENSORFLOW = textwrap.dedent("""\
    import importlib.machinery, sys

    class _WithoutTensorFlow(importlib.machinery.PathFinder):
      @classmethod
      def find_spec(cls, name, path=None, target=None):
        if name.split(".")[0] == "tensorflow":
          return None
        return super().find_spec(name, path, target)

    sys.meta_path[:] = [_WithoutTensorFlow if f is importlib.machinery.PathFinder else f
                        for f in sys.meta_path]
    try:
      import tensorflow  # noqa: F401
      raise SystemExit("tensorflow still importable")
    except ModuleNotFoundError:
      pass
    """)


def _run_without_tensorflow(code: str) -> dict:
  """Runs `code` in a fresh interpreter where TensorFlow is not importable; returns its JSON."""
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  result = subprocess.run([sys.executable, "-c", HIDE_TENSORFLOW + textwrap.dedent(code)],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


def test_tiny_records_are_array_record_and_read_without_tensorflow(data_dir):
  builder = input_pipeline.get_builder(tiny_config(data_dir).dataset)
  assert builder.info.file_format.value == "array_record"
  assert any(name.endswith(".array_record-00000-of-00001") or ".array_record-" in name
             for name in os.listdir(builder.data_dir))
  index = input_pipeline.read_clip_index(builder)
  got = _run_without_tensorflow(f"""
      import json, sys
      import numpy as np
      from configs import default
      from mer_jax import input_pipeline, predict, checkpoints, layer_selection
      from mer_jax.flow import cache
      config = default.get_config("tiny")
      config.dataset.data_dir = {data_dir!r}
      builder = input_pipeline.get_builder(config.dataset)
      index = input_pipeline.read_clip_index(builder)
      fold = input_pipeline.loso_folds(index)[0]
      stream = input_pipeline.create_train_dataset(
          builder, "train", fold.train_subjects, config.input, batch_size=4, seed=0, index=index)
      batch = next(stream)
      clips = [c.decode() for b in input_pipeline.create_eval_dataset(
          builder, "train", [fold.test_subject], config.input, batch_size=2, index=index)
          for c in b["clip_id"]]
      print(json.dumps({{
          "clip_ids": index.clip_id.tolist(), "num_frames": index.num_frames.tolist(),
          "frames": list(batch["frames"].shape), "dtype": str(batch["frames"].dtype),
          "eval_clips": clips,
          "tensorflow_loaded": any(m == "tensorflow" or m.startswith("tensorflow.")
                                   for m in sys.modules)}}))
      """)
  assert got["tensorflow_loaded"] is False
  assert got["clip_ids"] == index.clip_id.tolist()
  assert got["num_frames"] == index.num_frames.tolist()
  cfg = tiny_config(data_dir).input
  assert got["frames"] == [4, cfg.num_frames, cfg.image_size, cfg.image_size, 3]
  assert got["dtype"] == "uint8"
  test_subject = input_pipeline.loso_folds(index)[0].test_subject
  assert got["eval_clips"] == index.clip_id[index.subject_key == test_subject].tolist()


def _copy_dataset(data_dir, tmp_path):
  """A private copy of the session's built synthetic_me/tiny (tests below damage it)."""
  copy = tmp_path / "tfds"
  shutil.copytree(data_dir, copy)
  config = tiny_config(str(copy))
  return config, input_pipeline.get_builder(config.dataset)


def test_dataset_of_an_older_builder_version_says_how_to_rebuild(data_dir, tmp_path):
  config, builder = _copy_dataset(data_dir, tmp_path)
  # Leave only a version-1.0.0 folder, as a data_dir built before ArrayRecord has.
  version_dir = builder.data_dir
  old_dir = os.path.join(os.path.dirname(version_dir), "1.0.0")
  os.rename(version_dir, old_dir)
  fresh = input_pipeline.get_builder(config.dataset)
  with pytest.raises(ValueError) as error:
    input_pipeline.prepare_builder(fresh, config.dataset)
  message = str(error.value)
  assert "1.0.0" in message and version_dir in message
  assert "python -m data_builders.build synthetic_me/tiny" in message
  assert "build_if_missing" in message


def test_records_in_another_file_format_are_refused_naming_the_directory(data_dir, tmp_path):
  config, builder = _copy_dataset(data_dir, tmp_path)
  info_path = os.path.join(builder.data_dir, "dataset_info.json")
  with open(info_path) as f:
    info = json.load(f)
  info["fileFormat"] = "tfrecord"  # What a data_dir built before issue 12 says.
  with open(info_path, "w") as f:
    json.dump(info, f)
  fresh = input_pipeline.get_builder(config.dataset)
  with pytest.raises(ValueError, match="Delete that directory") as error:
    input_pipeline.read_clip_index(fresh)
  assert builder.data_dir in str(error.value) and "tfrecord" in str(error.value)
  assert "python -m data_builders.build synthetic_me/tiny" in str(error.value)


def _record_file(builder):
  names = [n for n in os.listdir(builder.data_dir) if ".array_record-" in n]
  assert len(names) == 1, names
  return os.path.join(builder.data_dir, names[0])


def test_missing_record_file_is_named(data_dir, tmp_path):
  config, builder = _copy_dataset(data_dir, tmp_path)
  path = _record_file(builder)
  os.remove(path)
  with pytest.raises(FileNotFoundError) as error:
    input_pipeline.read_clip_index(input_pipeline.get_builder(config.dataset))
  assert path in str(error.value) and "python -m data_builders.build" in str(error.value)


def test_truncated_record_file_is_named(data_dir, tmp_path):
  config, builder = _copy_dataset(data_dir, tmp_path)
  path = _record_file(builder)
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)
  with pytest.raises(OSError) as error:
    input_pipeline.read_clip_index(input_pipeline.get_builder(config.dataset))
  assert path in str(error.value) and "truncated or corrupt" in str(error.value)
  assert "python -m data_builders.build" in str(error.value)
