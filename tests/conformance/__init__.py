"""
A mirror of the OCI distribution-spec conformance suite (v1.1.1) against quayd
running in process on a loopback socket.
"""
