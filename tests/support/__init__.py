"""Helpers shared by the test modules (tests/ is on sys.path through its conftest)."""
