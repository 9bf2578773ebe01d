"""The official multi-scale training crop's sizes, apart from the TensorFlow ops that draw them
(transforms.multi_scale_box), so that code on machines without TensorFlow reads the same figures."""

SCALES = (1.0, 0.875, 0.75, 0.66)  # multi-scale crop sides, as fractions of the shorter side
MAX_DISTORT = 1  # crop height and width scales at most this many steps apart
