"""Every option of every command in one typed schema: the command line, its ``--help``,
``docs/options.md`` and the checks of the Python API all come from these tables.

* :mod:`~yolov9k.options.schema`: the :class:`Option` type and the one parser / checker;
* :mod:`~yolov9k.options.train`: training options and hyperparameters, :func:`resolve_config`;
* :mod:`~yolov9k.options.verbs`: the options of val, predict, export, convert, demo-data, bench, info;
* :mod:`~yolov9k.options.docs`: ``docs/options.md``, generated (``python -m yolov9k.options.docs``).
"""

from __future__ import annotations

from yolov9k.errors import ConfigError, OptionError
from yolov9k.options.schema import REQUIRED, Option, check_options, defaults, parse_texts
from yolov9k.options.train import (
    DEFAULTS,
    HYP_DEFAULTS,
    HYP_KEYS,
    HYP_SCRATCH_HIGH,
    NO_EFFECT,
    PATH_OPTIONS,
    TRAIN_OPTIONS,
    hyp_from_config,
    load_hyp,
    parse_cli_overrides,
    resolve_config,
)
from yolov9k.options.verbs import COMMANDS

__all__ = [
    "COMMANDS",
    "ConfigError",
    "DEFAULTS",
    "HYP_DEFAULTS",
    "HYP_KEYS",
    "HYP_SCRATCH_HIGH",
    "NO_EFFECT",
    "Option",
    "OptionError",
    "PATH_OPTIONS",
    "REQUIRED",
    "TRAIN_OPTIONS",
    "check_options",
    "defaults",
    "hyp_from_config",
    "load_hyp",
    "parse_cli_overrides",
    "parse_texts",
    "resolve_config",
]
