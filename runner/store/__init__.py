"""Persistence: the APScheduler job table plus the runner's own tables, on SQLite or PostgreSQL."""
