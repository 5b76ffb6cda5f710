"""
Log observers: text or one JSON object per line, filtered by level.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType
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
    if not path:
        return make_observer(config)
    stream = ReopeningLogFile(path)

    def reopen_on_hup(signum: int, frame: FrameType | None) -> None:
        stream.request_reopen()

    signal.signal(signal.SIGHUP, reopen_on_hup)
    return make_observer(config, cast(IO[str], stream))


class ReopeningLogFile:
    """
    A log file, appended to, that is opened again by name after L{request_reopen}: once
    logrotate has moved it away, SIGHUP makes quayd write to a new file of the same name.
    """

    def __init__(self, path: str) -> None:
        """
        @param path: The log file; created if missing.
        """
        self._path = path
        self._reopen = False
        self._file = self._open()

    def _open(self) -> IO[str]:
        return open(self._path, "a", encoding="utf-8", buffering=1)

    def request_reopen(self) -> None:
        """
        Reopen the file before the next write; safe to call from a signal handler.
        """
        self._reopen = True

    def write(self, text: str) -> int:
        """
        Append text, reopening the file first if that was requested.
        """
        if self._reopen:
            self._reopen = False
            old, self._file = self._file, self._open()
            old.close()
        return self._file.write(text)

    def flush(self) -> None:
        """
        Flush the current file.
        """
        self._file.flush()


def _level(name: str) -> LogLevelName:
    for candidate in get_args(LogLevelName):
        if candidate == name:
            return cast(LogLevelName, candidate)
    return "info"
