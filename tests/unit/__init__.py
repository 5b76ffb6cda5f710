"""
Unit tests, mirroring the layout of C{quayd}.
"""
