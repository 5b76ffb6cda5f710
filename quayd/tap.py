"""
The twistd plugin's options and service maker (C{twistd quayd --config FILE}).

This is the only module that imports the global reactor.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType
from typing import Any, ClassVar

from twisted.application.service import IService
from twisted.logger import Logger
from twisted.python import usage

from quayd.config import Config, ConfigError, load_config
from quayd.logs import LOG_FILE_ENV, LOG_FORMAT_ENV, LOG_LEVEL_ENV

_log = Logger()


class Options(usage.Options):
    """Command-line options of C{twistd quayd}."""

    synopsis = "[--config FILE] [--check-config]"
    optParameters: ClassVar[list[list[str | None]]] = [
        ["config", "c", "/etc/quayd/quayd.yaml", "Path of the YAML configuration file."],
    ]
    optFlags: ClassVar[list[list[str | None]]] = [
        ["check-config", None, "Validate the configuration file, report, and exit."],
    ]

    config: Config

    def postOptions(self) -> None:
        """
        Load and validate the configuration; with C{--check-config}, report and exit.

        Unless C{--logger} was given to twistd, quayd's own observer (format and
        level from the configuration) becomes twistd's log observer; it writes
        to twistd's C{--logfile} when one is given, else to standard output.
        """
        try:
            self.config = load_config(self["config"])
        except ConfigError as e:
            raise usage.UsageError(f"{self['config']}: {e}") from None
        if self["check-config"]:
            sys.stdout.write(f"{self['config']}: configuration is valid\n")
            sys.exit(0)
        parent = getattr(self, "parent", None)
        if parent is not None and not parent.get("logger"):
            # twistd resolves --logger by name after this runs; the observer
            # factory finds the settings in the environment of this process.
            os.environ[LOG_FORMAT_ENV] = self.config.logging.format
            os.environ[LOG_LEVEL_ENV] = self.config.logging.level
            logfile = parent.get("logfile")
            os.environ[LOG_FILE_ENV] = logfile if logfile and logfile != "-" else ""
            parent["logger"] = "quayd.logs.observer_from_environment"


def makeService(options: Options) -> IService:
    """Build the service tree for the loaded configuration."""
    from twisted.internet import reactor

    from quayd.service import build_service

    _survive_sighup(reactor)
    return build_service(options.config, reactor)


def _survive_sighup(reactor: Any) -> None:
    """
    Keep SIGHUP (C{systemctl reload quayd}) from ending the daemon, which is its default action.

    When quayd logs to a file, L{quayd.logs.observer_from_environment} (called by twistd after
    this) replaces the handler with one that reopens the file.
    """

    def on_hup(signum: int, frame: FrameType | None) -> None:
        reactor.callFromThread(_log.info, "SIGHUP received; restart quayd to apply a new configuration")

    signal.signal(signal.SIGHUP, on_hup)
