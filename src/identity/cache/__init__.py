"""In-memory caches of the hot path: verified credentials and the live state behind them."""
