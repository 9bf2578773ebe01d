"""Frame sampling against the official TSN formulas, restated here from the authors' dataset
code."""

import numpy as np
import pytest

from input_pipeline import sampling


def official_train(num_frames, T, draws):
  """TSN _sample_indices (new_length 1), with the random draws given; 0-based."""
  average_duration = num_frames // T
  assert average_duration > 0
  return np.multiply(list(range(T)), average_duration) + draws


def official_val(num_frames, T):
  """TSN _get_val_indices (new_length 1); 0-based (the official +1 is the file numbering)."""
  tick = num_frames / float(T)
  return np.array([int(tick / 2.0 + tick * x) for x in range(T)])


class Recorder:
  """A Generator stand-in that records what the sampler drew."""

  def __init__(self, seed):
    self.rng = np.random.default_rng(seed)
    self.draws = None

  def integers(self, low, high, size):
    self.draws = self.rng.integers(low, high, size=size)
    return self.draws


@pytest.mark.parametrize("num_frames", [8, 9, 16, 37, 48, 60, 119])
@pytest.mark.parametrize("T", [8, 16])
def test_train_and_eval_follow_the_official_formulas(num_frames, T):
  if num_frames < T:
    pytest.skip("short videos are handled differently on purpose")
  recorder = Recorder(num_frames)
  got = sampling.train_indices(num_frames, T, recorder)
  np.testing.assert_array_equal(got, official_train(num_frames, T, recorder.draws))
  assert np.all(np.diff(got) > 0) and got.max() < num_frames
  if num_frames > T:  # the official eval formula needs n > T (it gives frame 1 everywhere at n = T)
    np.testing.assert_array_equal(
      sampling.eval_indices(num_frames, T)[0], official_val(num_frames, T)
    )


def test_real_ssv1_lengths_follow_the_official_eval_formula():
  from tests.conftest import FIXTURES

  lines = (FIXTURES / "something_val.txt").read_text().split("\n")
  lengths = [int(line.split()[1]) for line in lines if line.strip()]
  for n in lengths[:2000]:
    if n > 8:
      np.testing.assert_array_equal(sampling.eval_indices(n, 8)[0], official_val(n, 8))


@pytest.mark.parametrize("num_frames", [1, 3, 7])
def test_short_videos_keep_every_frame_in_order(num_frames):
  for indices in (
    sampling.train_indices(num_frames, 8, np.random.default_rng(0)),
    sampling.eval_indices(num_frames, 8)[0],
  ):
    assert len(indices) == 8
    assert np.all(np.diff(indices) >= 0)
    assert set(indices.tolist()) == set(range(num_frames))


def test_multi_clip_eval_spreads_clips_inside_segments():
  clips = sampling.eval_indices(80, 8, num_clips=2)
  np.testing.assert_array_equal(clips[0], [2 + 10 * k for k in range(8)])  # int(10 * 0.25 + 10k)
  np.testing.assert_array_equal(clips[1], [7 + 10 * k for k in range(8)])  # int(10 * 0.75 + 10k)


def test_dense_sampling_strides_and_wraps():
  np.testing.assert_array_equal(sampling.dense_indices(200, 8, None), 68 + 8 * np.arange(8))
  np.testing.assert_array_equal(sampling.dense_indices(20, 8, None), (8 * np.arange(8)) % 20)
  starts = {int(sampling.dense_indices(100, 8, np.random.default_rng(s))[0]) for s in range(50)}
  assert min(starts) >= 0 and max(starts) <= 36 and len(starts) > 10


def test_bad_lengths_are_refused():
  with pytest.raises(ValueError, match="num_frames=0"):
    sampling.train_indices(0, 8, np.random.default_rng(0))
