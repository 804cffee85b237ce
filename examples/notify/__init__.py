"""Turning key events and expiring keys into notifications."""
