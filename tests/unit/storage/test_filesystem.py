"""
Tests for L{quayd.storage.filesystem}: starting writeback while an upload streams in.
"""

from __future__ import annotations

from pathlib import Path

from quayd.blocking import run_synchronously
from quayd.storage.filesystem import WRITEBACK_STEP, FilesystemBlobStore, sync_file_range_writeback
from tests.support.twisted import success_result_of


def test_filesystem_writer_starts_writeback_every_step(tmp_path: Path) -> None:
    """Writeback is requested for each WRITEBACK_STEP of staged bytes, covering them without gaps."""
    calls: list[tuple[int, int]] = []
    store = FilesystemBlobStore(
        tmp_path, run_synchronously, lambda fd, offset, length: calls.append((offset, length))
    )
    writer = success_result_of(store.begin_upload("u1"))
    chunk = b"x" * (WRITEBACK_STEP // 4)
    for _ in range(9):
        success_result_of(writer.write([chunk]))
    success_result_of(writer.close())
    assert calls == [(0, WRITEBACK_STEP), (WRITEBACK_STEP, WRITEBACK_STEP)]
    assert (tmp_path / "uploads" / "u1").stat().st_size == 9 * len(chunk)


def test_filesystem_sync_file_range_writeback_runs(tmp_path: Path) -> None:
    """On Linux the libc binding exists and accepts a range of a freshly written file."""
    start_writeback = sync_file_range_writeback()
    assert start_writeback is not None
    path = tmp_path / "f"
    path.write_bytes(b"y" * 65536)
    with path.open("rb+") as f:
        start_writeback(f.fileno(), 0, 65536)
