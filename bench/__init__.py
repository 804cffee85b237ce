"""The benchmark suite: ``python -m bench`` (``--help`` lists the options and cases)."""
