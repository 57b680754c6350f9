"""Declarative, YAML-driven job runner on APScheduler 3."""
