"""Entry functions that the tests run in child processes."""
