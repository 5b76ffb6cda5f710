"""
The twistd plugin's options and service maker (C{twistd quayd --config FILE}).

This is the only module that imports the global reactor.
"""

from __future__ import annotations

import os
import sys
from typing import ClassVar

from twisted.application.service import IService
from twisted.python import usage

from quayd.config import Config, ConfigError, load_config
from quayd.logs import LOG_FILE_ENV, LOG_FORMAT_ENV, LOG_LEVEL_ENV


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

    return build_service(options.config, reactor)
