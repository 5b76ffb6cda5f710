"""
quayd: a private container image registry served by one Twisted daemon.
"""
