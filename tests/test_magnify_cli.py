"""The magnification command never clobbers its input (issue 17, item 6) and
`mer_jax.paths.check_output_path`, the shared rule every writing command uses."""

import hashlib
import os

import cv2
import numpy as np
import pytest

from mer_jax import paths
from mer_jax.magnify import __main__ as magnify_cli

T, H, W, FPS = 8, 16, 16, 30.0
BAND = ["--alpha", "5", "--low-hz", "2", "--high-hz", "8"]


def _digest(path):
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def _write_video(path):
  writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (W, H))
  for frame in np.random.default_rng(3).integers(60, 200, (T, H, W, 3), dtype=np.uint8):
    writer.write(frame)
  writer.release()
  return str(path)


def _write_folder(folder, count=T):
  os.makedirs(folder)
  for index, frame in enumerate(np.random.default_rng(4).integers(
      60, 200, (count, H, W, 3), dtype=np.uint8)):
    cv2.imwrite(os.path.join(folder, f"{index:03d}.png"), frame)
  return str(folder)


@pytest.fixture
def video(tmp_path):
  return _write_video(tmp_path / "clip.avi")


def _refused(capsys, argv, *expected):
  assert magnify_cli.main(argv + BAND) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and err.count("\n") == 1, err
  for text in expected:
    assert text in err, err
  return err


def test_output_equal_to_input_refused_and_input_kept(video, capsys):
  before = _digest(video)
  _refused(capsys, [video, video], "is the input", "clip.avi")
  assert _digest(video) == before


def test_output_resolving_to_input_refused(tmp_path, video, capsys):
  os.makedirs(tmp_path / "x")
  link = tmp_path / "link.avi"
  os.symlink(video, link)
  before = _digest(video)
  _refused(capsys, [video, str(link)], "is the input")
  dotted = os.path.join(str(tmp_path), "x", "..", "clip.avi")
  _refused(capsys, [video, dotted], "is the input")
  os.link(video, tmp_path / "hard.avi")
  _refused(capsys, [video, str(tmp_path / "hard.avi")], "is the input")
  assert _digest(video) == before


def test_side_by_side_equal_to_input_or_output_refused(tmp_path, video, capsys):
  out = str(tmp_path / "out.mp4")
  before = _digest(video)
  _refused(capsys, [video, out, "--side-by-side", video], "--side-by-side", "is the input")
  _refused(capsys, [video, out, "--side-by-side", out], "--side-by-side", "out.mp4")
  assert _digest(video) == before and not os.path.exists(out)


def test_existing_output_needs_overwrite(tmp_path, video, capsys):
  out = tmp_path / "out.mp4"
  out.write_bytes(b"earlier result")
  _refused(capsys, [video, str(out)], "already exists", "--overwrite")
  assert out.read_bytes() == b"earlier result"
  # The default side-by-side path is checked too.
  out.unlink()
  (tmp_path / "out_side_by_side.mp4").write_bytes(b"x")
  _refused(capsys, [video, str(out)], "--side-by-side", "out_side_by_side.mp4")
  # A non-empty output folder is refused; an empty one is fine to fill.
  folder = tmp_path / "frames_out"
  os.makedirs(folder)
  (folder / "notes.txt").write_text("mine")
  _refused(capsys, [video, str(folder), "--side-by-side", ""], "not empty", "--overwrite")


def test_output_inside_input_folder_refused(tmp_path, capsys):
  folder = _write_folder(tmp_path / "frames")
  _refused(capsys, [folder, os.path.join(folder, "out"), "--fps", str(FPS)],
           "inside the input folder")


def test_overwrite_replaces_outputs_never_the_input(tmp_path, capsys):
  folder = _write_folder(tmp_path / "frames")
  out = tmp_path / "out"
  _write_folder(out, count=T + 3)  # A longer earlier result under a different naming.
  for index in range(T + 3):  # ... and the names this command writes.
    cv2.imwrite(str(out / f"frame_{index:05d}.png"), np.zeros((H, W, 3), np.uint8))
  argv = [folder, str(out), "--fps", str(FPS), "--side-by-side", "", "--overwrite"] + BAND
  assert magnify_cli.main(argv) == 0, capsys.readouterr().err
  written = sorted(n for n in os.listdir(out) if n.startswith("frame_"))
  assert written == [f"frame_{i:05d}.png" for i in range(T)]  # Stale frames removed.
  assert len([n for n in os.listdir(out) if not n.startswith("frame_")]) == T + 3  # Others kept.
  # --overwrite still never touches the input.
  assert magnify_cli.main([folder, folder, "--fps", str(FPS), "--overwrite"] + BAND) == 2
  assert "is the input" in capsys.readouterr().err


def test_check_output_path_rules(tmp_path):
  source = tmp_path / "in.bin"
  source.write_bytes(b"data")
  fresh = tmp_path / "new.bin"
  assert paths.check_output_path(fresh, [source], overwrite=False) == str(fresh)
  with pytest.raises(paths.OutputPathError, match=r"--out .*is the input"):
    paths.check_output_path(source, [source], overwrite=True)
  with pytest.raises(paths.OutputPathError, match="already exists"):
    paths.check_output_path(source, [tmp_path / "other"], overwrite=False)
  assert paths.check_output_path(source, [tmp_path / "other"], overwrite=True) == str(source)
  # A dangling symbolic link is an existing output too (writing would follow it).
  os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
  with pytest.raises(paths.OutputPathError, match="already exists"):
    paths.check_output_path(tmp_path / "dangling", [], overwrite=False, what="OUT")
  with pytest.raises(paths.OutputPathError, match="empty path"):
    paths.check_output_path("", [source], overwrite=True)
