"""Helpers the tests share (conftest.py holds only fixtures)."""
