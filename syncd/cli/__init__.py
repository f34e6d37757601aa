"""The command line: `syncd COMMAND`; see `syncd.cli.main`."""

from syncd.control import signals

signals.hold()  # before the imports: a SIGHUP to a daemon still starting is a reload

from syncd.cli.main import main  # noqa: E402

__all__ = ["main"]
