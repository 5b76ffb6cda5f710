"""
Unit tests of L{quayd.admin}.
"""
