"""The one pattern of every command: flags parsed into a fresh FlagValues, user errors as one line.

A command module defines `define_flags(flag_values, argv)` and `run(flags) -> int`, and its
`main(argv=None)` is `cli.main(__doc__, define_flags, run, argv)`. Tests call `main([...])` in
process; `python -m ...` calls it with sys.argv. Nothing is registered on absl's global FLAGS, so
importing any number of commands defines no flag twice.

Exit status: 0 done, 1 the input was wrong (a config value, a file, a checkpoint: the message
names it), 2 the command line was wrong (unknown flag or config key, missing flag, unloadable
config file). Commands may map their own exception types to statuses.
"""

from __future__ import annotations

import importlib.util
import logging as std_logging
import os
import pathlib
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence

from absl import flags, logging
from ml_collections import config_flags

from stss_jax import runtime, storage

USAGE_STATUS = 2
# What a user's input can raise; anything else is a bug and keeps its traceback.
USER_ERRORS = (
  ValueError,
  FileNotFoundError,
  FileExistsError,
  NotADirectoryError,
  IsADirectoryError,
  PermissionError,
)


def define_config(
  flag_values: flags.FlagValues,
  argv: Sequence[str],
  name: str = "config",
  help_string: str = "Experiment config file, e.g. configs/ssv1.py or configs/default.py:tiny.",
  required: bool = True,
) -> None:
  """A config-file flag whose --NAME.key=value overrides are read from argv."""
  config_flags.DEFINE_config_file(
    name, None, help_string, flag_values=flag_values, lock_config=True, sys_argv=list(argv)
  )
  if required:
    flags.mark_flag_as_required(name, flag_values=flag_values)


def bundled_configs(argv: list[str], names: Sequence[str]) -> list[str]:
  """argv with `--NAME=configs/FILE.py[:arg]` (or `--NAME=FILE[:arg]`), for the config flags
  `names`, pointed at the installed configs package when no such file exists here, so that
  installed commands run from any directory."""
  import configs

  bundled = pathlib.Path(configs.__file__).parent
  out = []
  for arg in argv:
    flag, equals, value = arg.partition("=")
    path, colon, variant = value.partition(":")
    if flag.lstrip("-") in names and equals and path and not pathlib.Path(path).exists():
      name = pathlib.PurePath(path).name
      candidate = bundled / (name if name.endswith(".py") else f"{name}.py")
      if candidate.is_file() and candidate.name not in ("__init__.py", "common.py"):
        arg = f"{flag}={candidate}{colon}{variant}"
    out.append(arg)
  return out


# Former config keys that are runtime flags now (stss_jax.runtime).
MOVED_TO_FLAGS = ("stss_implementation", "extraction_implementation")


def main(
  doc: str,
  define_flags: Callable[[flags.FlagValues, Sequence[str]], None],
  run: Callable[[flags.FlagValues], int | None],
  argv: Sequence[str] | None = None,
  errors: Mapping[type[BaseException], int] | None = None,
  model_configs: Mapping[str, str] | None = None,
) -> int:
  """Parses argv (argv[0] is the program) and runs the command; returns the exit status.

  errors: exception types (besides USER_ERRORS, status 1) that end the command with one line
  `error: ...` and the given status.
  model_configs: config flag -> model-directory flag, for commands whose config a model
  directory records: given the directory alone, the config is the one it records.
  """
  storage.configure()
  quiet_background_noise()
  argv = list(sys.argv if argv is None else argv)
  global _command_line
  _command_line = list(argv)
  argv = configs_of_model_directories(argv, model_configs)
  flag_values = flags.FlagValues()
  define_flags(flag_values, argv)
  config_names = [name for name in flag_values if _is_config_file_flag(flag_values[name])]
  if config_names:  # commands that build a model: how its ops run, beside what it is
    runtime.define_flags(flag_values)
  argv = bundled_configs(argv, config_names)
  for name in config_names:
    # ml_collections loads a config file into the module sys.modules[NAME_config], reusing one
    # left there by an earlier command in this process (tests, notebooks): a file without
    # get_config would run the earlier file's.
    sys.modules.pop(f"{name}_config", None)
  if any(a in ("-h", "--help", "-help", "--helpfull") for a in argv[1:]):
    print((doc or "").strip() + "\n\nflags:\n" + flag_values.get_help())
    return 0
  try:
    rest = flag_values(argv)
    if len(rest) > 1:
      raise flags.Error(f"unexpected arguments {rest[1:]}: every input is a --flag")
    for name in config_names:  # a config loads when first read: a bad file or key fails here
      flag_values[name].value.keys()
  except Exception as e:  # noqa: BLE001  a config file may raise anything; each kind is named
    print(f"error: {_usage_error(e, _config_files(argv, config_names))}", file=sys.stderr)
    return USAGE_STATUS
  if config_names:
    try:
      runtime.set_policy(runtime.from_flags(flag_values))
    except ValueError as e:
      print(f"error: {_one_line(e)}", file=sys.stderr)
      return USAGE_STATUS
  tensorflow_off_accelerators()
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()  # absl.logging then needs no parsed global flags
  logging.set_verbosity(logging.WARNING)  # library chatter off; commands print what matters
  statuses = {
    **(errors or {}),
    **{e: 1 for e in USER_ERRORS if e not in (errors or {})},
  }  # specific first
  try:
    return int(run(flag_values) or 0)
  except ModuleNotFoundError as e:
    if (e.name or "").split(".")[0] != "tensorflow":
      raise
    # The package leaves TensorFlow to the environment (pyproject.toml says why).
    print(
      "error: TensorFlow is not installed; install one build: pip install tensorflow-cpu "
      "(or tensorflow, or the package's [tf-cpu] / [tf] extra)",
      file=sys.stderr,
    )
    return 1
  except tuple(statuses) as e:
    print(f"error: {_one_line(e)}", file=sys.stderr)
    return next(status for kind, status in statuses.items() if isinstance(e, kind))


_command_line: list[str] | None = None


def command_line() -> list[str]:
  """The argv of the command this process runs (the last one, when tests run several)."""
  return list(_command_line if _command_line is not None else sys.argv)


def configs_of_model_directories(
  argv: list[str], model_configs: Mapping[str, str] | None
) -> list[str]:
  """argv with --CONFIG=configs/from_model.py:DIR added for each --DIRECTORY_FLAG=DIR given
  without its --CONFIG (model_configs: {CONFIG: DIRECTORY_FLAG})."""
  import configs.from_model

  given = {}
  for index, arg in enumerate(argv[1:], 1):
    flag, equals, value = arg.partition("=")
    if not equals and index + 1 < len(argv) and not argv[index + 1].startswith("-"):
      value = argv[index + 1]  # --flag value
    given.setdefault(flag.lstrip("-"), value)
  added = [
    f"--{config}={configs.from_model.__file__}:{given[directory]}"
    for config, directory in (model_configs or {}).items()
    if config not in given and given.get(directory)
  ]
  return [argv[0], *added, *argv[1:]]  # before their --CONFIG.key overrides


def tensorflow_off_accelerators() -> None:
  """Hides GPUs and TPUs from TensorFlow before it runs anything, where it is installed.

  tf.data, TFDS and the summaries run on the CPU; the full tensorflow build (Colab, TPU VMs)
  would otherwise claim accelerator memory with its first op, memory JAX needs.
  """
  if "tensorflow" in sys.modules and sys.modules["tensorflow"] is None:  # hidden on purpose
    return
  if importlib.util.find_spec("tensorflow") is None:
    return
  import tensorflow as tf

  for kind in ("GPU", "TPU"):
    try:
      tf.config.set_visible_devices([], kind)
    except (RuntimeError, ValueError):  # already initialised (a notebook), or no such kind
      pass


def quiet_background_noise() -> None:
  """Keeps the asynchronous echoes of one failure from burying its line (idempotent).

  When an orbax restore or save fails, TensorStore's threads go on completing the other reads or
  writes of it, into an event loop orbax has closed: each raises 'Event loop is closed', and each
  orbax coroutine's own copy of the error is reported as unraisable, hundreds of tracebacks in
  all, some after the command's own line. The failure itself reaches the command, which says it
  in one line; these copies are dropped. Orbax's log records of it keep their first line only.
  """
  if getattr(sys.unraisablehook, "_stss_jax_quiet", False):
    return
  report = sys.unraisablehook

  def unraisable(event) -> None:
    code = getattr(event.object, "cr_code", None)
    closed_loop = isinstance(event.exc_value, RuntimeError) and "Event loop is closed" in str(
      event.exc_value
    )
    if closed_loop or (code is not None and f"{os.sep}orbax{os.sep}" in code.co_filename):
      return
    report(event)

  unraisable._stss_jax_quiet = True
  sys.unraisablehook = unraisable
  std_logging.getLogger("absl").addFilter(_first_line_of_orbax_errors)
  std_logging.getLogger("asyncio").addFilter(_no_orbax_tasks_never_retrieved)


def _first_line_of_orbax_errors(record: std_logging.LogRecord) -> bool:
  if f"{os.sep}orbax{os.sep}" in record.pathname and record.exc_info:
    record.msg, record.args = " ".join(record.getMessage().split())[:200], None
    record.exc_info = record.exc_text = None
  return True


def _no_orbax_tasks_never_retrieved(record: std_logging.LogRecord) -> bool:
  """asyncio's report of an orbax task or gathering whose error was also raised to its caller.

  A task's report names its coroutine's file; a gathering's names no file, so its traceback is
  looked at too.
  """
  message = record.getMessage()
  if "exception was never retrieved" not in message:
    return True
  orbax = f"{os.sep}orbax{os.sep}"
  if orbax in message:
    return False
  traceback_of = record.exc_info[2] if record.exc_info else None
  return not any(orbax in frame.filename for frame in traceback.extract_tb(traceback_of))


def _config_files(argv: Sequence[str], names: Sequence[str]) -> list[str]:
  """The config files that argv names for the config flags `names` (without their :variant)."""
  files = []
  for arg in argv[1:]:
    flag, equals, value = arg.partition("=")
    if equals and flag.lstrip("-") in names:
      files.append(os.path.realpath(value.partition(":")[0]))
  return files


def _usage_error(error: Exception, config_files: Sequence[str]) -> str:
  """The one line of an error raised while flags were parsed or a config file was loaded."""
  in_file = _config_file_error(error, config_files)
  if in_file:
    return in_file
  if isinstance(error, (flags.Error, OSError, TypeError)):
    return f"{_one_line(error)}\n(--help lists the flags)"
  if isinstance(error, (AttributeError, KeyError)):  # ml_collections': a --config.key it lacks
    moved = next((key for key in MOVED_TO_FLAGS if key in str(error)), None)
    if moved:
      return (
        f"config.model.selfy.{moved} is no longer a config key: how the model runs is not part "
        f"of the experiment; use --{moved}=..."
      )
    return f"unknown config key {_one_line(error)}\n(configs/common.py documents every key)"
  raise error


def _config_file_error(error: BaseException, config_files: Sequence[str]) -> str | None:
  """'FILE, line N: Kind: message' when `error` (or what it wraps: absl folds a parser's error
  into its own) was raised by the code of a config file, or the file has no get_config."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if "has no attribute 'get_config'" in str(error) and config_files:
      return f"{config_files[0]} defines no get_config(arg=None) function"
    if isinstance(error, SyntaxError) and error.filename:
      if os.path.realpath(error.filename) in config_files:
        return f"{error.filename}, line {error.lineno}: SyntaxError: {error.msg}"
    frames = [
      frame
      for frame in traceback.extract_tb(error.__traceback__)
      if os.path.realpath(frame.filename) in config_files
    ]
    if frames:
      message = " ".join(str(error).split())
      return f"{frames[-1].filename}, line {frames[-1].lineno}: {type(error).__name__}: {message}"
    error = error.__cause__ or error.__context__
  return None


def _is_config_file_flag(flag) -> bool:
  # ml_collections exports no test for its flag class; the name is stable across its releases.
  return type(flag).__name__ == "_ConfigFlag"


def _one_line(error: BaseException) -> str:
  """The message of an error on one line: multi-line texts folded, and the quoted repr that
  ml_collections puts in its KeyError and AttributeError messages unquoted."""
  text = (
    str(error.args[0])
    if isinstance(error, (KeyError, AttributeError)) and error.args
    else str(error)
  )
  text = text.strip()
  if (
    "Traceback (most recent call last)" in text
  ):  # a config file's get_config raised: its last line
    head, _, trace = text.partition("Traceback (most recent call last)")
    text = (
      head.strip().rstrip(":")
      + ": "
      + [line for line in trace.splitlines() if line.strip()][-1].strip()
    )
  if len(text) > 1 and text[0] == text[-1] == "'":
    text = text[1:-1].replace("\\n", "\n").replace("\\'", "'")
  return " ".join(line.strip() for line in text.splitlines() if line.strip())
