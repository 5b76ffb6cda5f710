"""
The twistd plugin's options and service maker (C{twistd quayd --config FILE}).

This is the only module that imports the global reactor.
"""

from __future__ import annotations

import ctypes
import gc
import os
import signal
import sys
from collections.abc import Callable
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
            # An absolute path, so that reloads find the file even if twistd changes directory.
            self.config = load_config(os.path.abspath(self["config"]))
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

    keep_freed_receive_buffers()
    service = build_service(options.config, reactor)
    _handle_sighup(reactor, service.reload)
    service.ready.addCallback(lambda _: tune_garbage_collector())
    return service


#: The collector's thresholds once quayd serves: the youngest generation is collected after
#: 2000 net allocations rather than 700 (see L{tune_garbage_collector}).
GC_THRESHOLDS = (2000, 10, 10)


def tune_garbage_collector() -> None:
    """
    Start-up is done: move what it built (modules, configuration, routes: some 70,000
    objects that live as long as the process) out of the cyclic collector's reach with
    C{gc.freeze}, and collect the youngest generation less often.

    Every request leaves reference cycles behind (Klein's and werkzeug's per-request
    closures hold the request), which only the collector frees. A request that waits
    for the database outlives a young collection or two, so its cycles are promoted and
    wait for a full collection, which also traversed every start-up object: measured on
    manifest GETs under load, the collector took 70-110 us of CPU per request with the
    defaults, 30-45 us after this. Only C{twistd quayd} does this (the service is also
    built in-process by tests, whose heap must stay collectable).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


# mallopt(3) parameters of <malloc.h> and the values keep_freed_receive_buffers() sets:
# blocks below 8 MiB come from the heap, and up to 32 MiB of free heap is kept.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MALLOC_MMAP_THRESHOLD = 8 * 1024 * 1024
_MALLOC_TRIM_THRESHOLD = 32 * 1024 * 1024


def keep_freed_receive_buffers() -> bool:
    """
    Tell glibc's allocator to keep freed memory for reuse instead of returning it at once.

    While an upload streams, every socket read allocates an
    L{quayd.http.site.UPLOAD_READ_SIZE} buffer, freed once the writer has hashed and
    appended it. With glibc's defaults the heap is trimmed whenever the
    pipeline drains (C{M_TRIM_THRESHOLD} follows the largest freed block, so
    about 2 MiB here), and the next reads page-fault fresh zeroed memory:
    on the development VM that cost the reactor thread about 0.45 s of CPU
    per uploaded GiB, nearly as much as everything else it does. Raising
    the mmap and trim thresholds keeps those pages in the heap; the process
    then holds on to at most L{_MALLOC_TRIM_THRESHOLD} bytes of free heap.

    Process-wide, idempotent, and a no-op where C{mallopt} is missing (not glibc). Only
    C{twistd quayd} calls it (L{makeService}), like its collector tuning.

    @return: Whether the allocator accepted both settings.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    mmap_set = mallopt(_M_MMAP_THRESHOLD, _MALLOC_MMAP_THRESHOLD)
    trim_set = mallopt(_M_TRIM_THRESHOLD, _MALLOC_TRIM_THRESHOLD)
    return bool(mmap_set and trim_set)


def _handle_sighup(reactor: Any, reload: Callable[[], object]) -> None:
    """
    Make SIGHUP (C{systemctl reload quayd}) reload the configuration instead of ending the
    daemon, which is its default action.

    Until the reactor runs, SIGHUP is only kept from ending the process. When quayd logs to a
    file, L{quayd.logs.observer_from_environment} (called by twistd after this) installs a
    handler that reopens the file; once the reactor runs, the reload handler is installed in
    front of whatever handler is in place then, and calls it first, so that logrotate keeps
    working.

    @param reactor: The global reactor.
    @param reload: Called on the reactor thread for every SIGHUP once the reactor runs.
    """

    def while_starting(signum: int, frame: FrameType | None) -> None:
        reactor.callFromThread(_log.info, "SIGHUP received while quayd is starting; ignored")

    signal.signal(signal.SIGHUP, while_starting)

    def install() -> None:
        previous = signal.getsignal(signal.SIGHUP)
        chained = previous if callable(previous) and previous is not while_starting else None

        def on_hup(signum: int, frame: FrameType | None) -> None:
            if chained is not None:
                chained(signum, frame)
            reactor.callFromThread(reload)

        signal.signal(signal.SIGHUP, on_hup)

    reactor.callWhenRunning(install)
