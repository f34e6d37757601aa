"""The command line: `syncd COMMAND`; see `syncd.cli.main`."""

from syncd.cli.main import main

__all__ = ["main"]
