"""The synthetic motion dataset: classes differ in motion only, and reversed pairs are reversals."""

import numpy as np
import pytest

from input_pipeline import synthetic


def test_reversed_twins_are_the_same_clip_played_backwards():
  data = synthetic.SyntheticMotion(num_frames=8, image_size=48)
  differs = lambda x, y: np.mean(np.abs(x - y).sum(-1) > 1.5)  # noqa: E731
  for index in range(3):
    clips = [data.clip("train", index, label=label)[0] for label in range(12)]
    for a, b in synthetic.REVERSED:
      # Frame t of one is frame T-1-t of the other up to the sensor noise (std 0.02 before
      # normalisation, about 0.09 after): no pixel differs by a large multiple of it.
      assert differs(clips[a][::-1], clips[b]) < 1e-4, (a, b)
      assert differs(clips[a][::-1], clips[(a + 2) % 12]) > 0.01


def test_each_class_moves_as_its_name_says():
  data = synthetic.SyntheticMotion(num_frames=8, image_size=64)
  wrapped = lambda d: (d + 0.5) % 1.0 - 0.5  # noqa: E731  (positions live on a torus)
  for seed in range(5):
    paths = {label: data.path(label, np.random.default_rng(seed)) for label in range(12)}
    steps = {label: wrapped(np.diff(centres, axis=0)) for label, (centres, _, _) in paths.items()}
    for label, (axis, sign) in {0: (1, 1), 1: (1, -1), 2: (0, 1), 3: (0, -1)}.items():
      assert (sign * steps[label][:, axis] > 0.04).all() and np.allclose(
        steps[label][:, 1 - axis], 0
      )
    assert (steps[10][:, 1] > 2 * steps[0][:, 1]).all()  # fast: same jitter, 2.5x the step
    out_and_back = steps[8][:, 1]
    assert (
      (out_and_back[:3] > 0).all()
      and (out_and_back[4:] < 0).all()
      and abs(out_and_back.sum()) < 1e-9
    )
    assert (np.diff(paths[4][2]) > 0).all() and (
      np.diff(paths[5][2]) < 0
    ).all()  # size grows / shrinks
    assert (np.diff(paths[6][1]) < 0).all() and (np.diff(paths[7][1]) > 0).all()  # angle turns
    for label in (4, 5, 6, 7):
      assert np.allclose(steps[label], 0)  # these stay in place


def test_fast_variant_scales_every_speed_and_refuses_aliasing():
  normal, fast = (
    synthetic.SyntheticMotion(motion_scale=1.0),
    synthetic.SyntheticMotion(motion_scale=3.0),
  )
  rng = lambda: np.random.default_rng(0)  # noqa: E731
  step = lambda centres: (np.diff(centres[:, 1]) + 0.5) % 1.0 - 0.5  # noqa: E731
  np.testing.assert_allclose(step(fast.path(0, rng())[0]), 3 * step(normal.path(0, rng())[0]))
  np.testing.assert_allclose(np.diff(fast.path(6, rng())[1]), 3 * np.diff(normal.path(6, rng())[1]))
  with pytest.raises(ValueError, match="motion_scale = 5"):
    synthetic.SyntheticMotion(motion_scale=5.0)


def test_splits_differ_and_clips_repeat():
  data = synthetic.SyntheticMotion(num_frames=4, image_size=32)
  a, label = data.clip("train", 7)
  np.testing.assert_array_equal(a, data.clip("train", 7)[0])
  assert not np.allclose(a, data.clip("validation", 7, label=label)[0])
  with pytest.raises(ValueError, match="synthetic split"):
    data.clip("test", 0)


def test_each_host_gets_its_contiguous_slice_of_every_global_batch():
  """Two hosts' training and evaluation batches, host 0's then host 1's, are the one host's
  batches: the same clips, labels, ids and padding mask, for steps after a resume too."""
  from configs import default
  from input_pipeline import sources

  config = default.get_config("tiny")
  config.dataset.num_eval = 10  # the last global batch of 8 is padded
  source = sources.build_source(config)
  one = source.train_iterator(3, 8)
  hosts = [source.train_iterator(3, 8, process_index=i, process_count=2) for i in range(2)]
  for _ in range(2):
    whole, parts = next(one), [next(h) for h in hosts]
    assert all(len(p["ids"]) == 4 for p in parts)
    for key in ("clips", "labels", "ids", "frame_indices"):
      np.testing.assert_array_equal(
        np.concatenate([p[key] for p in parts]), whole[key], err_msg=key
      )
  whole = list(source.eval_batches(8))
  parts = [list(source.eval_batches(8, process_index=i, process_count=2)) for i in range(2)]
  assert len(whole) == len(parts[0]) == len(parts[1]) == 2
  for batch, first, second in zip(whole, *parts):
    for key in ("clips", "labels", "ids", "mask"):
      np.testing.assert_array_equal(
        np.concatenate([first[key], second[key]]), batch[key], err_msg=key
      )
  assert whole[-1]["mask"].tolist() == [1, 1] + [0] * 6
