"""Frame reading from videos the tests encode with PyAV and from JPEG folders they write."""

import io

import numpy as np
import pytest
from PIL import Image

from input_pipeline import frames

av = pytest.importorskip("av")


def moving_square(num_frames=12, size=64):
  clip = np.full((num_frames, size, size, 3), 40, np.uint8)
  for t in range(num_frames):
    clip[t, 20:36, 4 * t : 4 * t + 16] = (230, 200, 30)
  return clip


def encode(path, clip, codec, fps=12):
  with av.open(str(path), "w") as container:
    stream = container.add_stream(codec, rate=fps)
    stream.width, stream.height, stream.pix_fmt = clip.shape[2], clip.shape[1], "yuv420p"
    for image in clip:
      container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
    container.mux(stream.encode())
  return path


@pytest.mark.parametrize(
  "codec,suffix", [("libx264", "mp4"), ("libvpx-vp9", "webm"), ("mpeg4", "mp4")]
)
def test_decoded_video_has_every_frame_and_the_motion(tmp_path, codec, suffix):
  if codec not in av.codecs_available:
    pytest.skip(f"this PyAV build has no {codec} encoder")
  clip = moving_square()
  decoded = frames.decode_video(encode(tmp_path / f"v.{suffix}", clip, codec))
  assert decoded.shape == clip.shape
  # Lossy codecs: the square's column position must still move 4 pixels per frame.
  columns = [np.argmax(f[28, :, 0] > 150) for f in decoded]
  np.testing.assert_allclose(columns, 4 * np.arange(12), atol=1)
  np.testing.assert_array_equal(frames.decode_video(tmp_path / f"v.{suffix}", 3, 7).shape[0], 4)


def test_corrupt_empty_and_missing_videos_are_named(tmp_path):
  (tmp_path / "junk.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
  with pytest.raises(frames.UnreadableVideoError, match="junk.mp4"):
    frames.decode_video(tmp_path / "junk.mp4")
  (tmp_path / "empty.mp4").write_bytes(b"")
  with pytest.raises(frames.UnreadableVideoError, match="empty.mp4"):
    frames.decode_video(tmp_path / "empty.mp4")
  with pytest.raises(frames.UnreadableVideoError, match="gone.webm: no such video file"):
    frames.decode_video(tmp_path / "gone.webm")


def test_truncated_mp4_is_named(tmp_path):
  """An MP4 written by ffmpeg keeps its index (moov) at the end: cut in half, nothing decodes."""
  data = encode(tmp_path / "v.mp4", moving_square(24), "mpeg4").read_bytes()
  (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
  with pytest.raises(frames.UnreadableVideoError, match="cut.mp4"):
    frames.decode_video(tmp_path / "cut.mp4")


def test_truncated_stream_keeps_the_frames_before_the_cut(tmp_path):
  """A Matroska stream decodes up to the damage: the frames kept are the video's first ones."""
  clip = moving_square(24)
  data = encode(tmp_path / "v.mkv", clip, "mpeg4").read_bytes()
  (tmp_path / "cut.mkv").write_bytes(data[: len(data) * 4 // 5])
  decoded = frames.decode_video(tmp_path / "cut.mkv")
  assert 0 < len(decoded) < 24 and decoded.shape[1:] == clip.shape[1:]
  columns = [np.argmax(f[28, :, 0] > 150) for f in decoded]  # the square's left edge, 4 px a frame
  np.testing.assert_allclose(columns, 4 * np.arange(len(decoded)), atol=1)


def test_damaged_stream_keeps_the_frames_before_the_damage(tmp_path):
  """200 zeroed bytes at 70% of a Matroska stream make its decoder fail part-way (PyAV raises
  InvalidDataError after ten frames): the frames decoded before the damage are kept."""
  data = bytearray(encode(tmp_path / "v.mkv", moving_square(24), "mpeg4").read_bytes())
  middle = len(data) * 7 // 10
  data[middle : middle + 200] = bytes(200)
  (tmp_path / "damaged.mkv").write_bytes(bytes(data))
  decoded = frames.decode_video(tmp_path / "damaged.mkv")
  assert 0 < len(decoded) < 24
  columns = [np.argmax(f[28, :, 0] > 150) for f in decoded]
  np.testing.assert_allclose(columns, 4 * np.arange(len(decoded)), atol=1)


def write_folder(folder, clip, numbers):
  folder.mkdir(parents=True)
  for number, image in zip(numbers, clip):
    Image.fromarray(image).save(folder / f"{number:05d}.jpg", quality=95)


def test_frame_folder_reads_the_chosen_frames(tmp_path):
  clip = moving_square(6)
  write_folder(tmp_path / "video", clip, range(1, 7))
  files = frames.frame_files(tmp_path / "video")
  assert [f.name for f in files] == [f"{n:05d}.jpg" for n in range(1, 7)]
  loaded = frames.read_jpegs([files[0], files[5]])
  assert loaded.shape == (2,) and loaded[1] == files[5].read_bytes()
  decoded = np.stack([np.asarray(Image.open(io.BytesIO(data)).convert("RGB")) for data in loaded])
  assert np.abs(decoded.astype(int) - clip[[0, 5]]).mean() < 3


def test_truncated_frame_is_named(tmp_path):
  write_folder(tmp_path / "video", moving_square(3), range(1, 4))
  path = tmp_path / "video" / "00002.jpg"
  path.write_bytes(path.read_bytes()[:200])
  with pytest.raises(frames.UnreadableVideoError, match="00002.jpg: not a complete JPEG"):
    frames.read_jpegs(frames.frame_files(tmp_path / "video"))


def test_missing_frame_is_named(tmp_path):
  write_folder(tmp_path / "video", moving_square(6), [1, 2, 3, 5, 6, 7])
  with pytest.raises(frames.UnreadableVideoError, match="00004.jpg is missing before 00005.jpg"):
    frames.frame_files(tmp_path / "video")
  with pytest.raises(frames.UnreadableVideoError, match="no frame named img_00001.jpg"):
    frames.frame_files(tmp_path / "video", "img_{:05d}.jpg")
