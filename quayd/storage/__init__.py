"""
Blob storage behind the L{IBlobStore} seam.
"""
