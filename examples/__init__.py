"""Runnable examples of using identity from other services."""
