"""
Small SQL-building helpers shared by the stores.
"""

from __future__ import annotations


def set_clause(**columns: str | bool | None) -> tuple[str, tuple[object, ...]]:
    """
    The assignments of an C{UPDATE ... SET} for the columns given a value.

    Column names are the keyword names (never user input); C{None} means
    "leave unchanged" and is skipped; booleans are stored as 0/1.

    @return: C{("a = ?, b = ?", (a, b))}, or C{("", ())} when nothing changes.
    """
    names: list[str] = []
    values: list[object] = []
    for column, value in columns.items():
        if value is None:
            continue
        names.append(f"{column} = ?")
        values.append(int(value) if isinstance(value, bool) else value)
    return ", ".join(names), tuple(values)
