"""The HTTP side of `runner serve`: health, Prometheus metrics, a JSON API and a status page.

Needs the `http` extra (FastAPI, uvicorn, prometheus-client). `runner.http.server` serves it
for `runner serve --http`; `runner.embed` mounts it in an existing FastAPI application.
"""
