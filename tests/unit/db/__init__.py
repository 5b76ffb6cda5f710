"""
Unit tests for L{quayd.db}.
"""
