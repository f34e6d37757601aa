"""The command line: `syncd COMMAND`; see `syncd.cli.main`."""

from syncd.control import collector

collector.pause()  # first: the imports below allocate much and free next to nothing

from syncd.control import signals  # noqa: E402

signals.hold()  # before the imports: a SIGHUP to a daemon still starting is a reload

from syncd.cli.main import main  # noqa: E402

collector.resume()  # `syncd run` pauses it again until the start-up scan is done

__all__ = ["main"]
