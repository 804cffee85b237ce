"""Prometheus metrics: counted for free on the request path, read and exposed at scrape time."""
