"""Lossy video codecs as a training view and an evaluation condition for spotting.

A person's own recording reaches `mer-jax analyze` as a compressed file, and a
codec's artefacts (block edges that move from frame to frame, quantisation that
changes at every key frame) look like small motion to a spotter trained on
lossless frames: the synthetic long videos are rendered losslessly, so
`roundtrip` writes a video through one of OpenCV's bundled FFmpeg encoders and
reads it back. The spotting trainer adds such copies of the training videos
(`config.dataset.train_codecs`) and scores the held-out videos' copies
(`config.eval_codecs`) besides the lossless originals.

Every codec runs at OpenCV's default settings (FFmpeg's default bit rate and key
frame interval), so the decoded frames depend on the OpenCV build:
`identity()` goes into the feature cache key.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np

# name -> (container extension, FourCC) of the encoders this OpenCV wheel writes.
CODECS = {
    "mp4v": (".mp4", "mp4v"),   # MPEG-4 Part 2 (OpenCV's default for .mp4)
    "vp09": (".mp4", "vp09"),   # VP9: a modern block codec with in-loop filtering
    "mjpg": (".avi", "MJPG"),   # Motion JPEG: every frame coded alone
    "xvid": (".avi", "XVID"),
}
SEPARATOR = "@"  # "<video id>@<codec>" names a video's codec copy


def parse(text: str, field: str) -> tuple[str, ...]:
  """Comma-separated codec names -> a tuple (empty for ""), checked against `CODECS`.

  Raises:
    ValueError: naming `field` and the unknown or repeated name.
  """
  names = tuple(n.strip() for n in str(text or "").split(",") if n.strip())
  unknown = [n for n in names if n not in CODECS]
  if unknown or len(set(names)) != len(names):
    raise ValueError(f"{field}={text!r}: codecs are {sorted(CODECS)}, comma-separated, each "
                     f"at most once (unknown: {unknown})")
  return names


def copy_id(video_id: str, codec: str) -> str:
  """The video id of `video_id`'s copy through `codec`, e.g. "s03/v01@mp4v"."""
  return f"{video_id}{SEPARATOR}{codec}"


def codec_of(video_id: str) -> str:
  """The codec of a copy's id ("" for an original)."""
  return video_id.split(SEPARATOR, 1)[1] if SEPARATOR in video_id else ""


def identity() -> dict:
  """What decoded frames depend on besides the codec name: the OpenCV build."""
  import cv2  # pylint: disable=import-outside-toplevel
  return {"opencv": cv2.__version__}


def roundtrip(frames: np.ndarray, fps: float, codec: str) -> np.ndarray:
  """Frames as they come back from a video file written with `codec`.

  Args:
    frames: uint8 RGB `(T, H, W, 3)`.
    fps: frame rate written into the file (rate control depends on it).
    codec: a `CODECS` name.

  Returns:
    uint8 RGB `(T, H, W, 3)`, the decoded frames.

  Raises:
    ValueError: an unknown codec, an encoder this OpenCV build lacks, or a file
      that does not decode to `T` frames of the same size.
  """
  import cv2  # pylint: disable=import-outside-toplevel
  from mer_jax.magnify import video_io  # pylint: disable=import-outside-toplevel  (OpenCV)
  if codec not in CODECS:
    raise ValueError(f"unknown codec {codec!r}; known: {sorted(CODECS)}")
  frames = np.asarray(frames)
  if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or not len(frames):
    raise ValueError(f"codec roundtrip needs uint8 RGB frames (T, H, W, 3), got "
                     f"{frames.dtype} {frames.shape}")
  extension, fourcc = CODECS[codec]
  height, width = frames.shape[1:3]
  folder = tempfile.mkdtemp(prefix="mer_jax_codec_")
  path = os.path.join(folder, "video" + extension)
  try:
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), float(fps), (width, height))
    if not writer.isOpened():
      raise ValueError(f"this OpenCV build ({cv2.__version__}) cannot write codec {codec!r} "
                       f"({fourcc} in {extension})")
    try:
      for frame in frames:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))
    finally:
      writer.release()
    decoded = [image[..., ::-1] for image in video_io.read_video_bgr(path)[0]]
  finally:
    shutil.rmtree(folder, ignore_errors=True)
  if len(decoded) != len(frames) or decoded[0].shape != frames.shape[1:]:
    raise ValueError(f"codec {codec!r}: {len(frames)} frames of {width}x{height} came back as "
                     f"{len(decoded)} frame(s)"
                     + (f" of {decoded[0].shape[1]}x{decoded[0].shape[0]}" if decoded else ""))
  return np.ascontiguousarray(np.stack(decoded))
