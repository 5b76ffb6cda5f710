"""Unit tests of L{quayd.http}."""
