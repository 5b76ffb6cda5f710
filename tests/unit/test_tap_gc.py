"""
Tests for L{quayd.tap.tune_garbage_collector} and its wiring: a C{twistd quayd}
process freezes its start-up objects and raises the young-generation threshold
once its service is ready. The collector is replaced by a recorder, so the test
process's own heap is left alone.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred

from quayd import tap


class _RecordingGC:
    """Records the calls L{tap.tune_garbage_collector} makes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def collect(self) -> int:
        """Record a full collection."""
        self.calls.append(("collect", ()))
        return 0

    def freeze(self) -> None:
        """Record a freeze."""
        self.calls.append(("freeze", ()))

    def set_threshold(self, *thresholds: int) -> None:
        """Record new thresholds."""
        self.calls.append(("set_threshold", thresholds))


def test_tune_collects_freezes_and_sets_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start-up garbage is collected before the survivors are frozen; then the thresholds change."""
    recorder = _RecordingGC()
    monkeypatch.setattr(tap, "gc", recorder)
    tap.tune_garbage_collector()
    assert recorder.calls == [("collect", ()), ("freeze", ()), ("set_threshold", tap.GC_THRESHOLDS)]
    assert tap.GC_THRESHOLDS[0] > 700  # above CPython's default


def test_make_service_tunes_once_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    L{tap.makeService} tunes the allocator (L{keep_freed_receive_buffers}) at once, and
    the collector when the service is ready, not before.
    """
    recorder = _RecordingGC()
    monkeypatch.setattr(tap, "gc", recorder)

    class _Service:
        def __init__(self) -> None:
            self.ready: Deferred[None] = Deferred()

        def reload(self) -> None:
            """Not called here."""

    service = _Service()
    monkeypatch.setattr("quayd.service.build_service", lambda config, reactor: service)
    monkeypatch.setattr(tap, "_handle_sighup", lambda reactor, reload: None)
    allocator: list[str] = []

    def tune_allocator() -> bool:
        allocator.append("tuned")
        return True

    monkeypatch.setattr(tap, "keep_freed_receive_buffers", tune_allocator)
    options = tap.Options()  # type: ignore[no-untyped-call]  # usage.Options is unannotated
    options.config = object()  # type: ignore[assignment]  # build_service is replaced
    made: object = tap.makeService(options)
    assert made is service
    assert allocator == ["tuned"]  # the allocator at once, before any upload
    assert recorder.calls == []
    service.ready.callback(None)
    assert [name for name, _ in recorder.calls] == ["collect", "freeze", "set_threshold"]


def test_keep_freed_receive_buffers_accepted_by_glibc() -> None:
    """On glibc (the platform quayd runs on) both allocator settings are accepted."""
    assert tap.keep_freed_receive_buffers()
