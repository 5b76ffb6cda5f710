"""
Contract suites: every implementation of a seam passes the same tests.
"""
