"""
Tests for L{quayd.db.sql}.
"""

from __future__ import annotations

from quayd.db.sql import set_clause


def test_set_clause_skips_unchanged_columns_and_stores_booleans_as_integers() -> None:
    """Only the columns given a value appear, in order; True/False become 1/0; "" is a value."""
    assert set_clause(role="read", description=None, managed=False) == ("role = ?, managed = ?", ("read", 0))
    assert set_clause(description="", managed=True) == ("description = ?, managed = ?", ("", 1))


def test_set_clause_with_nothing_to_change() -> None:
    """No value at all gives an empty clause, which callers treat as "no update"."""
    assert set_clause(url=None, managed=None) == ("", ())
