"""
Tests for the packaging metadata in C{setup.cfg}: data files that quayd reads
at run time must be part of a built distribution, not only of the checkout.
"""

from __future__ import annotations

import configparser
from pathlib import Path

import quayd

ROOT = Path(quayd.__file__).resolve().parent.parent


def _package_data_globs(package: str) -> list[str]:
    """The C{[options.package_data]} patterns configured for C{package}."""
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    value = parser.get("options.package_data", package, fallback="")
    return [pattern.strip() for line in value.splitlines() for pattern in line.split(",") if pattern.strip()]


def test_package_data_includes_every_schema_file() -> None:
    """Every migration file under C{quayd/db/schema} matches a C{package_data} pattern."""
    base = ROOT / "quayd" / "db"
    schema_files = {path.relative_to(base) for path in (base / "schema").rglob("*.sql")}
    assert schema_files, "no schema files found in the checkout"
    packaged = {
        path.relative_to(base) for pattern in _package_data_globs("quayd.db") for path in base.glob(pattern)
    }
    assert schema_files <= packaged
