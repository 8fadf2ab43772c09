"""Diagnostics run from a source checkout (`python -m tools.NAME`); not installed with the package."""
