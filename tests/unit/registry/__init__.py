"""
Unit tests for L{quayd.registry}.
"""
