"""
HTTP plumbing: the streaming request, the site, and the one error renderer.
"""
