"""
Metadata storage: one SQL store over an L{IDatabase} with SQLite and PostgreSQL backends.
"""
