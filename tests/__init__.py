"""The test suite, a package: tests and their helpers import each other as ``tests.<module>``."""
