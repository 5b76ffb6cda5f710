"""
Tests for the built wheel: the layout that C{twistd} and quayd rely on at run time survives
packaging (the plugin module, the SQL migrations), and nothing is shipped that would overwrite
Twisted's own files.

The wheel is built once per module, from a copy of the checkout, so that the build leaves no
C{build/} or C{*.egg-info} behind in the working tree. Building takes a few seconds.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Final

import pytest

ROOT: Final = Path(__file__).resolve().parents[2]
PLUGIN: Final = "twisted/plugins/quayd_plugin.py"

#: What the copy of the checkout leaves out: VCS data, build output, caches and local state.
_NOT_SOURCES: Final = shutil.ignore_patterns(
    ".git", ".tox", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", "data"
)

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """
    Build the quayd wheel the way C{pip wheel --no-deps} does for a release or for tox.

    @return: The path of the C{.whl} file.
    """
    source = tmp_path_factory.mktemp("source") / "quayd"
    shutil.copytree(ROOT, source, ignore=_NOT_SOURCES)
    out = tmp_path_factory.mktemp("wheelhouse")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-w", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (built,) = out.glob("quayd-*.whl")
    return built


@pytest.fixture(scope="module")
def wheel_names(wheel: Path) -> set[str]:
    """
    The archive members of the wheel.

    @return: Their paths, C{/}-separated.
    """
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def test_wheel_contains_twistd_plugin(wheel_names: set[str]) -> None:
    """The wheel ships C{twisted/plugins/quayd_plugin.py}, so that C{twistd} lists C{quayd}."""
    assert PLUGIN in wheel_names


def test_wheel_ships_nothing_else_under_twisted(wheel_names: set[str]) -> None:
    """
    Under C{twisted/} the wheel holds only the plugin: no C{__init__.py}, which would replace
    Twisted's own (and be deleted with quayd), and no C{dropin.cache}.
    """
    assert "twisted/__init__.py" not in wheel_names
    assert "twisted/plugins/__init__.py" not in wheel_names
    assert {name for name in wheel_names if name.startswith("twisted/")} == {PLUGIN}


def test_wheel_contains_schema_migrations(wheel_names: set[str]) -> None:
    """Every SQL migration of the checkout is in the wheel, including C{0001_registry.sql}."""
    checkout = {
        path.relative_to(ROOT).as_posix() for path in (ROOT / "quayd" / "db" / "schema").rglob("*.sql")
    }
    assert "quayd/db/schema/sqlite/0001_registry.sql" in checkout
    assert sorted(checkout - wheel_names) == []


def test_wheel_quayd_reads_its_migrations(wheel: Path, tmp_path: Path) -> None:
    """quayd imported from the unpacked wheel, not the checkout, finds its SQLite migrations."""
    unpacked = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(unpacked)
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); import quayd; "
        "assert quayd.__file__.startswith(sys.argv[1]), quayd.__file__; "
        "from quayd.db.migrations import migrations_for; "
        "print(*(m.name for m in migrations_for('sqlite')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, str(unpacked)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "0001_registry.sql" in result.stdout.split()
