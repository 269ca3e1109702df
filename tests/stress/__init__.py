"""Reliability (stress) tests: a package so that its conftest.py and helpers have names of their
own (``stress.conftest``, ``stress._stress_util``) beside ``tests/conftest.py``."""
