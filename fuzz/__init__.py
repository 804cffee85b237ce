"""Fuzz targets of the identity service (atheris): ``python -m fuzz TARGET [libFuzzer flags]``.

Kept free of imports, so that ``python -m fuzz`` instruments the service's modules as it loads them.
"""
