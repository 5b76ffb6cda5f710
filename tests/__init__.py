"""
The quayd test suite.
"""
