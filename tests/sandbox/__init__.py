"""Tests of the sandbox emulators (a package, so its conftest does not shadow tests/conftest)."""
