"""Reading and writing videos and image folders with OpenCV for the magnify command.

Frames are returned and accepted as RGB float32 arrays `(T, H, W, 3)` in
[0, 1]; OpenCV's BGR uint8 order stays inside this module.
"""

from __future__ import annotations

import os
import re
from typing import Optional

import cv2
import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# Containers and the codec OpenCV's bundled FFmpeg writes for them.
VIDEO_CODECS = {".mp4": "mp4v", ".avi": "MJPG", ".mov": "mp4v", ".mkv": "mp4v"}
_FRAME_NAME = re.compile(r"frame_(\d{5,})\.png")


def read_frames(path: str, fps: Optional[float] = None) -> tuple[np.ndarray, float]:
  """Reads a video file or a folder of images (sorted by name).

  Args:
    path: video file, or folder of images with the same size.
    fps: frame rate; required for a folder, overrides the file's rate.

  Returns:
    `(frames, fps)`: float32 RGB `(T, H, W, 3)` in [0, 1] and the frame rate.

  Raises:
    FileNotFoundError: `path` does not exist.
    ValueError: no readable frame, mixed image sizes, or unknown fps.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"input {path!r} does not exist")
  if os.path.isdir(path):
    names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
      raise ValueError(f"input folder {path!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    if fps is None:
      raise ValueError(f"input {path!r} is an image folder: pass its frame rate with --fps")
    images = []
    for name in names:
      image = cv2.imread(os.path.join(path, name), cv2.IMREAD_COLOR)
      if image is None:
        raise ValueError(f"cannot read image {os.path.join(path, name)!r}")
      if images and image.shape != images[0].shape:
        raise ValueError(f"image {name!r} in {path!r} is {image.shape[1]}x{image.shape[0]}, "
                         f"the first one is {images[0].shape[1]}x{images[0].shape[0]}")
      images.append(image)
  else:
    images, file_fps = read_video_bgr(path)
    if not images:
      raise ValueError(f"cannot read any frame from {path!r}: not a video OpenCV can decode")
    if fps is None:
      if not file_fps or not np.isfinite(file_fps) or file_fps <= 0:
        raise ValueError(f"video {path!r} does not state its frame rate: pass --fps")
      fps = float(file_fps)
  frames = np.stack(images)[..., ::-1].astype(np.float32) / 255.0
  return frames, float(fps)


def read_video_bgr(path: str) -> tuple[list[np.ndarray], float]:
  """Every frame OpenCV decodes from video file `path` (uint8 BGR `(H, W, 3)` each; an empty
  list when none) and the frame rate the file states (0 or NaN when it states none)."""
  capture = cv2.VideoCapture(path)
  images = []
  try:
    while True:
      ok, image = capture.read()
      if not ok:
        break
      images.append(image)
    return images, capture.get(cv2.CAP_PROP_FPS)
  finally:
    capture.release()


def to_uint8_bgr(frames: np.ndarray) -> np.ndarray:
  """float RGB in [0, 1] `(T, H, W, 3)` -> uint8 BGR, rounded."""
  return np.round(np.clip(frames, 0.0, 1.0) * 255.0).astype(np.uint8)[..., ::-1]


def write_frames(path: str, frames: np.ndarray, fps: float) -> None:
  """Writes float RGB `(T, H, W, 3)` frames as a video (by extension) or PNG folder.

  A path with a video extension (`VIDEO_CODECS`) becomes a video file; any
  other path becomes a folder of `frame_00000.png`, ... files (lossless).
  Writing into a folder that holds a longer earlier result removes that
  result's extra `frame_NNNNN.png` files, so the folder holds exactly these
  frames (the caller checks with `mer_jax.paths.check_output_path` that
  overwriting was asked for). Other files in the folder are left alone.
  """
  images = to_uint8_bgr(frames)
  extension = os.path.splitext(path)[1].lower()
  if extension in VIDEO_CODECS:
    height, width = images.shape[1:3]
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*VIDEO_CODECS[extension]), fps,
                             (width, height))
    if not writer.isOpened():
      raise ValueError(f"OpenCV cannot open {path!r} for writing with codec "
                       f"{VIDEO_CODECS[extension]!r}")
    try:
      for image in images:
        writer.write(np.ascontiguousarray(image))
    finally:
      writer.release()
  elif extension:
    raise ValueError(f"output {path!r}: unknown video extension {extension!r}; use one of "
                     f"{sorted(VIDEO_CODECS)} or a folder name without extension")
  else:
    os.makedirs(path, exist_ok=True)
    for index, image in enumerate(images):
      if not cv2.imwrite(os.path.join(path, f"frame_{index:05d}.png"), image):
        raise ValueError(f"cannot write frame {index} into folder {path!r}")
    for name in os.listdir(path):
      match = _FRAME_NAME.fullmatch(name)
      if match and int(match.group(1)) >= len(images):
        os.remove(os.path.join(path, name))


def side_by_side_path(output: str) -> str:
  """`out.mp4` -> `out_side_by_side.mp4`; `out_dir` -> `out_dir_side_by_side`."""
  stem, extension = os.path.splitext(output.rstrip(os.sep))
  return f"{stem}_side_by_side{extension}"
