"""Helpers shared by the test suites: imported by test modules and conftest files alike
(a test module never imports a conftest)."""
