"""The system of record: the tables, their column types, the engines and write
transactions, the schema (Alembic migrations in migrations/), and the atomic operations
on it (join claims, the Invitation row and its audit trail).
"""
