"""
Administration: the admin HTTP API (C{/api/v1}) and the reconciliation of the
objects the configuration file declares.
"""
