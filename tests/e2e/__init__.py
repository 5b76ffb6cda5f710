"""
End-to-end tests: a real C{twistd -n quayd} process driven by real registry clients.
"""
