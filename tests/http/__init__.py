"""
HTTP tests: the registry app over real HTTP parsing, in process.
"""
