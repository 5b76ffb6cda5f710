"""
Log observers: text or one JSON object per line, filtered by level.
"""

from __future__ import annotations

import os
import sys
from typing import IO, cast, get_args

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevelFilterPredicate,
    jsonFileLogObserver,
    textFileLogObserver,
)

from quayd.config import LoggingConfig, LogLevelName

#: Environment variables through which C{twistd quayd} passes its log settings
#: to L{observer_from_environment} (twistd resolves C{--logger} by name).
LOG_FORMAT_ENV = "QUAYD_LOG_FORMAT"
LOG_LEVEL_ENV = "QUAYD_LOG_LEVEL"
LOG_FILE_ENV = "QUAYD_LOG_FILE"


def make_observer(config: LoggingConfig, output: IO[str] | None = None) -> ILogObserver:
    """
    Build the daemon's log observer.

    @param output: Where to write; standard output (journald under systemd)
        when C{None}.
    """
    stream = output if output is not None else sys.stdout
    if config.format == "json":
        base = jsonFileLogObserver(stream, recordSeparator="")
    else:
        base = textFileLogObserver(stream)
    predicate = LogLevelFilterPredicate(defaultLogLevel=config.log_level)
    return FilteringLogObserver(base, [predicate])


def observer_from_environment() -> ILogObserver:
    """
    The observer C{twistd quayd} installs: format and level from the
    configuration, written to twistd's C{--logfile} if one was given.
    """
    config = LoggingConfig(
        format="json" if os.environ.get(LOG_FORMAT_ENV) == "json" else "text",
        level=_level(os.environ.get(LOG_LEVEL_ENV, "info")),
    )
    path = os.environ.get(LOG_FILE_ENV)
    stream = open(path, "a", encoding="utf-8", buffering=1) if path else None  # noqa: SIM115
    return make_observer(config, stream)


def _level(name: str) -> LogLevelName:
    for candidate in get_args(LogLevelName):
        if candidate == name:
            return cast(LogLevelName, candidate)
    return "info"
