"""Builds a dataset's TFDS build from its official download (input_pipeline.tfds_builders).

  python -m input_pipeline.prepare --dataset=ssv2 --manual_dir=RAW [--data_dir=DATA]
  python main.py --config=configs/ssv2.py [--config.dataset.data_dir=DATA]

In TFDS's words: --manual_dir is the download as it came (unpacked), --data_dir the TFDS data
dir the build goes into (default $TFDS_DATA_DIR or ~/tensorflow_datasets), the same data dir
the trainer's --config.dataset.data_dir names. docs/datasets.md gives each dataset's download,
its unpacking and the tree --manual_dir holds.

Videos are decoded with PyAV (frame folders read as they are), every frame is resized to
--resize_hw (the recipe's 240x320, so training decodes only its crop and resizes once) and stored
as JPEG, in parallel over the cores, into ArrayRecord files that `tfds.data_source` reads by
record. The build is named after its settings (e.g. something_something_v2/240x320:1.0.0); TFDS
writes it into a temporary directory and renames it when complete, so a killed build leaves
nothing that looks whole; a rerun reads back the videos the killed build had converted (kept in
DATA/downloads/stss_jax_conversions/ until the build completes), converts the rest and writes
the records again (a complete build is reused). Unreadable,
truncated or empty videos are skipped and listed with the reason in BUILD/skipped.txt. Exit
status: 0 when every split holds videos (even with some skipped), 1 when a split has nothing
usable, 2 when the label files are wrong or contradict each other.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the workers inherit it: no banners

from absl import flags
from etils import epath

from input_pipeline import tfds_builders
from input_pipeline.labels import LabelFileError
from stss_jax import cli, storage

DEFAULT_CLASSES = {"diving48": 48}  # SSv1 and SSv2 take theirs from the class list
FINEGYM_CLASSES = tuple(tfds_builders.FINEGYM_LISTS)


def builder(
  dataset: str,
  output_dir: str,
  *,
  num_classes: int = 0,
  train_list: str = "",
  eval_list: str = "",
  class_names: str = "",
  strip_prefix: str = "",
  frame_template: str = "{:05d}.jpg",
  resize_hw=(240, 320),
  jpeg_quality: int = 90,
  workers: int = 0,
):
  """The TFDS builder of `dataset` (a config.dataset.name) with these settings, writing under
  output_dir; a built-in config when the settings are one's, else one named after them."""
  import tensorflow_datasets as tfds

  name = tfds_builders.TFDS_NAMES[dataset]
  cls = tfds.builder_cls(name)
  prefix = ""
  if dataset == "finegym":
    if num_classes not in tfds_builders.FINEGYM_LISTS:
      raise ValueError(
        f"--num_classes={num_classes}: FineGym is built as one of {FINEGYM_CLASSES} classes"
      )
    prefix = f"gym{num_classes}_"
    train_list = train_list or tfds_builders.FINEGYM_LISTS[num_classes][0]
    eval_list = eval_list or tfds_builders.FINEGYM_LISTS[num_classes][1]
  if dataset == "list" and not (num_classes and train_list and eval_list):
    raise ValueError("--dataset=list needs --num_classes, --train_list and --eval_list")
  config = tfds_builders.make_config(
    num_classes,
    prefix,
    resize_hw=resize_hw,
    jpeg_quality=jpeg_quality,
    frame_template=frame_template,
    train_list=train_list,
    eval_list=eval_list,
    class_names=class_names,
    strip_prefix=strip_prefix,
    workers=workers,
  )
  built_in = {c.name: c for c in cls.BUILDER_CONFIGS}.get(config.name)
  if built_in is not None and dataclasses_equal(built_in, config):
    config = built_in.name
  return (
    tfds.builder(name, config=config, data_dir=output_dir)
    if isinstance(config, str)
    else cls(config=config, data_dir=output_dir)
  )


def dataclasses_equal(a, b) -> bool:
  """Same settings apart from the conversion workers (which do not change what is written)."""
  import dataclasses

  return dataclasses.replace(a, workers=0) == dataclasses.replace(b, workers=0)


def prepare(dataset: str, manual_dir: str, data_dir: str, **settings):
  """Builds (or reuses) the dataset from the download in `manual_dir` into the TFDS data dir
  `data_dir`, and writes BUILD/skipped.txt; returns the builder. Raises LabelFileError for wrong
  or contradictory label files, RuntimeError when a split is empty."""
  import tensorflow_datasets as tfds

  if not storage.is_local(data_dir):
    # ArrayRecord (array-record 0.8) writes through local file descriptors: a gs:// path fails only
    # when the first split is finalised, after all its videos were converted.
    raise ValueError(
      f"--data_dir={data_dir}: a build is written to a local (or mounted) directory; build "
      "there, then copy it: gcloud storage cp -r "
      f"DIR/{tfds_builders.TFDS_NAMES.get(dataset, dataset)} "
      f"{data_dir}/ (training reads builds from gs://)"
    )
  if not epath.Path(manual_dir).is_dir():
    raise ValueError(
      f"--manual_dir={manual_dir} is not a directory: point it at the {dataset} download"
    )
  built = builder(dataset, data_dir, **settings)
  if built.is_prepared():
    print(f"{built.info.full_name} is already built in {built.data_dir}; reusing it", flush=True)
  built.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  lines = [
    f"{split}\t{entry['id']}\t{entry['reason']}"
    for split in tfds_builders.SPLITS
    for entry in built.info.metadata[split]["skipped"]
  ]
  (epath.Path(built.data_dir) / "skipped.txt").write_text("".join(line + "\n" for line in lines))
  return built


def _resize_flag(value: str):
  if value in ("", "0", "none"):
    return None
  try:
    height, width = (int(v) for v in value.split(","))
  except ValueError:
    raise ValueError(
      f"--resize_hw={value!r}: use HEIGHT,WIDTH (e.g. 240,320) or 0 to keep the frame size"
    ) from None
  if height < 1 or width < 1:
    raise ValueError(f"--resize_hw={value!r}: sides must be positive")
  return height, width


def define_flags(flag_values: flags.FlagValues, argv) -> None:
  del argv
  define = dict(flag_values=flag_values)
  flags.DEFINE_enum(
    "dataset", None, list(tfds_builders.TFDS_NAMES), "Layout of --manual_dir.", **define
  )
  flags.DEFINE_string(
    "manual_dir", None, "The download in its official layout (TFDS's manual dir).", **define
  )
  flags.DEFINE_string(
    "data_dir",
    "",
    "TFDS data dir the build goes into; default $TFDS_DATA_DIR or ~/tensorflow_datasets.",
    **define,
  )
  flags.DEFINE_string(
    "output_dir",
    None,
    "Renamed --data_dir (the TFDS data dir); refused, naming the new flags.",
    **define,
  )
  flags.DEFINE_integer(
    "num_classes",
    0,
    "Classes; defaults: ssv1/ssv2 their class list, diving48 48, finegym 99 "
    "(or 288); needed for list.",
    **define,
  )
  flags.DEFINE_string(
    "train_list",
    "",
    "list/finegym/ssv2: training list file, relative to --manual_dir (finegym and ssv2: the "
    "release's name by default).",
    **define,
  )
  flags.DEFINE_string(
    "eval_list",
    "",
    "list/finegym/ssv2: evaluation list file, relative to --manual_dir (ssv2's default: "
    "something-something-v2-validation.json).",
    **define,
  )
  flags.DEFINE_string(
    "class_names",
    "",
    "list: optional file of class names, one a line; ssv2: the labels JSON "
    "(default something-something-v2-labels.json).",
    **define,
  )
  flags.DEFINE_string("strip_prefix", "", "list: prefix removed from listed paths.", **define)
  flags.DEFINE_string(
    "frame_template", "{:05d}.jpg", "Frame file names in frame folders, numbered from 1.", **define
  )
  flags.DEFINE_string(
    "resize_hw",
    "240,320",
    "HEIGHT,WIDTH every frame is stored at; 0 keeps the frames' size.",
    **define,
  )
  flags.DEFINE_integer(
    "jpeg_quality", 90, "JPEG quality of stored frames.", lower_bound=1, upper_bound=100, **define
  )
  flags.DEFINE_integer(
    "workers", 0, "Conversion processes; 0 means one per core.", lower_bound=0, **define
  )
  flags.mark_flags_as_required(["dataset"], flag_values=flag_values)


RENAMED = (
  "--manual_dir=RAW is the download (it was --data_dir) and --data_dir=DATA the TFDS data dir "
  "the build goes into (it was --output_dir)"
)


def run(flag_values: flags.FlagValues) -> int:
  from input_pipeline.tfds_source import default_data_dir

  if flag_values.output_dir is not None:
    raise ValueError(f"--output_dir is renamed: {RENAMED}")
  if not flag_values.manual_dir:
    raise ValueError(f"--manual_dir is missing: {RENAMED}")
  dataset = flag_values.dataset
  num_classes = flag_values.num_classes or DEFAULT_CLASSES.get(
    dataset, FINEGYM_CLASSES[0] if dataset == "finegym" else 0
  )
  data_dir = flag_values.data_dir or default_data_dir()
  built = prepare(
    dataset,
    flag_values.manual_dir,
    data_dir,
    num_classes=num_classes,
    train_list=flag_values.train_list,
    eval_list=flag_values.eval_list,
    class_names=flag_values.class_names,
    strip_prefix=flag_values.strip_prefix,
    frame_template=flag_values.frame_template,
    resize_hw=_resize_flag(flag_values.resize_hw),
    jpeg_quality=flag_values.jpeg_quality,
    workers=flag_values.workers,
  )
  for split in tfds_builders.SPLITS:
    metadata = built.info.metadata[split]
    written = len(metadata["ids"])
    print(
      f"{split}: {written} video{'s' * (written != 1)} written, {len(metadata['skipped'])} skipped"
    )
  flags_needed = [] if not flag_values.data_dir else [f"--config.dataset.data_dir={data_dir}"]
  print(f"built {built.info.full_name} in {built.data_dir}")
  config = f"configs/{dataset}.py" if dataset != "list" else "configs/CONFIG.py"
  print(
    f"train with: python main.py --config={config} "
    + " ".join(
      flags_needed + [f"--config.dataset.tfds_name={built.info.full_name.rsplit('/', 1)[0]}"]
    )
  )
  return 0


def main(argv=None) -> int:
  # Exit 2: the label files or settings are wrong; 1: a split has no usable video.
  return cli.main(
    __doc__,
    define_flags,
    run,
    argv,
    errors={LabelFileError: 2, ValueError: 2, FileNotFoundError: 2, RuntimeError: 1},
  )


if __name__ == "__main__":
  sys.exit(main())
