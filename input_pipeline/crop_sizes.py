"""The training crop's sizes, apart from the TensorFlow ops that draw them (transforms), so that
code
on machines without TensorFlow (the train step, the GPU benchmarks) reads the same figures."""

SCALES = (1.0, 0.875, 0.75, 0.66)  # multi-scale crop sides, as fractions of the shorter side
MAX_DISTORT = 1  # crop height and width scales at most this many steps apart


def crop_bounds(crop: str, resize_hw) -> tuple[int, int]:
  """The largest box `crop` (a transforms.CROPS name) draws in a resize_hw frame: the window a
  deferred crop travels in (config.input.resize_on_accelerator)."""
  if crop == "multi_scale":  # sides are SCALES of the shorter side, the largest 1.0
    side = min(resize_hw)
    return side, side
  return tuple(resize_hw)
