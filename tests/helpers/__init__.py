"""Helpers the tests share, one module a concern (fixtures stay in conftest.py)."""
