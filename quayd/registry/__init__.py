"""
The registry API: C{/v2} routes, manifest parsing and media types.
"""
