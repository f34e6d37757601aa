"""The command line: parse, dispatch, and turn every SyncdError into one line and an exit code.

Exit codes (DESIGN.md, "CLI"): 0 ok, 1 runtime failure, 2 usage or configuration error,
3 daemon not running, 4 `run --once` finished with failed files.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from syncd import __version__
from syncd.config import default_config_path, default_status_socket, load, load_daemon
from syncd.control import collector, signals, switching
from syncd.control.printable import printable
from syncd.control.status import ask
from syncd.errors import DaemonNotRunning, SyncdError, UsageError

DEFAULT_RETRIES = 3
"""`run --once`: a retryable error is retried this often, then counted as failed."""
SYSTEM_SOCKET = Path("/run/syncd/status.sock")
"""Where syncd.service (RuntimeDirectory=syncd) answers."""


def _user_path(text: str) -> Path:
    """`--config=~/syncd.toml`: the shell leaves a ~ after `=` alone."""
    return Path(os.path.expanduser(text))


def _config_option(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument(
        "-c",
        "--config",
        type=_user_path,
        default=default,
        help="the configuration file (default: $CONFIGURATION_DIRECTORY/config.toml, else"
        " /etc/syncd/config.toml for root, else ~/.config/syncd/config.toml)",
    )


def _parser() -> argparse.ArgumentParser:
    # -c before the command (`syncd -c FILE status`) or after it: a command's own -c is
    # absent unless given (SUPPRESS), so it never hides the one given before.
    common = argparse.ArgumentParser(add_help=False)
    _config_option(common, argparse.SUPPRESS)
    parser = argparse.ArgumentParser(
        prog="syncd", description="Watch folders and upload every new file; see README.md."
    )
    parser.add_argument("--version", action="version", version=f"syncd {__version__}")
    _config_option(parser, None)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", parents=[common], help="run the daemon in the foreground")
    run.add_argument(
        "--sandbox",
        action="store_true",
        help="start the local service emulators in the same process and point every "
        "endpoint at them (a demo folder ./syncd-demo unless -c is given)",
    )
    run.add_argument(
        "--once",
        action="store_true",
        help="upload what is in the folders now, then exit: 0 when nothing failed, 4 otherwise",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="with --once: print what would be uploaded where; send and write nothing",
    )
    run.add_argument(
        "--retries",
        type=int,
        metavar="N",
        help="with --once: retry a retryable error N times before counting it failed (default 3)",
    )
    status = commands.add_parser("status", parents=[common], help="what the daemon is doing")
    shown = status.add_mutually_exclusive_group()
    shown.add_argument("--json", action="store_true", help="print the daemon's reply as is")
    shown.add_argument(
        "--watch",
        action="store_true",
        help="redraw every second with a bar per upload, until Ctrl-C"
        " (plain lines when not on a terminal)",
    )
    retry = commands.add_parser("retry", parents=[common], help="queue failed files again")
    retry.add_argument("paths", nargs="*", type=Path, help="files to retry")
    retry.add_argument("--all-failed", action="store_true", help="retry every failed file")
    restore = commands.add_parser(
        "restore", parents=[common], help="put deleted files back from the trash"
    )
    restore.add_argument(
        "paths", nargs="+", type=Path, help="where the files were (or are, in the trash)"
    )
    for name, verb in (("pause", "pause"), ("resume", "resume")):
        steer = commands.add_parser(
            name, parents=[common], help=f"{verb} uploads to services (none named: all)"
        )
        steer.add_argument("services", nargs="*", help="[services.NAME] names")
    commands.add_parser(
        "check",
        parents=[common],
        help="validate the configuration (and, in fleet mode, reach the journal) and exit",
    )
    journal = commands.add_parser(
        "journal", parents=[common], help="the journal: copy it into a fleet's database"
    )
    journal_commands = journal.add_subparsers(dest="journal_command", required=True)
    copy = journal_commands.add_parser(
        "copy",
        parents=[common],
        help="copy this host's SQLite journal into PostgreSQL (a host joining a fleet);"
        " the password comes from [journal] password_file or $PGPASSWORD",
    )
    copy.add_argument("--to", required=True, metavar="URL", help="postgresql://USER@HOST/DB")
    sandbox = commands.add_parser(
        "sandbox", parents=[common], help="serve the service emulators (reads no config)"
    )
    sandbox.add_argument("--listen", default="127.0.0.1:8700", help="HOST:PORT")
    sandbox.add_argument("--data-dir", type=Path, help="keep what was received here")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return 2 if exc.code not in (0, None) else 0
    try:
        code = _dispatch(args)
        sys.stdout.flush()  # a reader that went away shows here, not as an error at exit
        return code
    except SyncdError as exc:  # one line, whatever a path or value in it holds
        print(f"syncd: {printable(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `syncd status | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 0


def _dispatch(args: argparse.Namespace) -> int:
    command: str = args.command
    if command != "run" or args.dry_run:
        signals.release()  # not the daemon: a SIGHUP ends it, as it ends any command
    else:
        collector.pause(collector.START_LIMIT)  # till the start-up scan is done
        switching.quicken()
    if command == "run":
        return _run(args)
    if command == "status":
        return _status(args)
    if command == "retry":
        return _retry(args)
    if command == "restore":
        return _restore(args)
    if command in ("pause", "resume"):
        return _pause_or_resume(args)
    if command == "check":
        return _check(args)
    if command == "journal":
        from syncd.cli.journal import copy_journal

        return copy_journal(load(args.config or default_config_path()), args.to)
    from syncd.sandbox.server import main as sandbox_main

    forwarded = ["--listen", args.listen]
    if args.data_dir:
        forwarded += ["--data-dir", str(args.data_dir)]
    return int(sandbox_main(forwarded))


def _run(args: argparse.Namespace) -> int:
    from syncd.control.logs import setup_logging
    from syncd.daemon import Daemon

    if (args.dry_run or args.retries is not None) and not args.once:
        raise UsageError("--dry-run and --retries go with --once")
    if args.retries is not None and args.retries < 0:
        raise UsageError("--retries must be 0 or more")
    once = (DEFAULT_RETRIES if args.retries is None else args.retries) if args.once else None
    if args.sandbox:
        from syncd.cli.demo import sandboxed

        with sandboxed(args.config) as (config_path, config):
            setup_logging(config.daemon.log_level)
            return Daemon(config_path, config, once=once).run()
    config_path = args.config or default_config_path()
    config = load(config_path)
    if args.dry_run:
        from syncd.cli.dryrun import dry_run

        return dry_run(config)
    setup_logging(config.daemon.log_level)
    return Daemon(config_path, config, once=once).run()


def _check(args: argparse.Namespace) -> int:
    config = load(args.config or default_config_path())
    journal = None
    if config.journal is not None:  # reached before anything is called ok
        from syncd.cli.journal import describe_journal

        journal = describe_journal(config.journal)
    print(f"{config.source}: ok ({len(config.services)} services, {len(config.watches)} watches)")
    if journal is not None:
        print(journal)
    return 0


def _socket_path(args: argparse.Namespace) -> Path:
    """The config's socket; without -c and without a config file, the default one."""
    path: Path | None = args.config
    if path is None:
        path = default_config_path()
        if not path.exists():
            return default_status_socket()
    return load_daemon(path).status_socket


def _ask(args: argparse.Namespace, request: dict[str, Any]) -> dict[str, Any]:
    """Ask the daemon the config names; without -c, else the system service's, for the
    operator whose own environment (XDG_RUNTIME_DIR) points elsewhere. With -c, only that
    config's daemon: no answer there is exit 3, whoever else runs."""
    path = _socket_path(args)
    try:
        return ask(path, request)
    except DaemonNotRunning:
        if args.config is not None or path == SYSTEM_SOCKET or not SYSTEM_SOCKET.exists():
            raise
    return ask(SYSTEM_SOCKET, request)


def _status(args: argparse.Namespace) -> int:
    if args.watch:
        from syncd.cli.watch import watch

        _ask(args, {"command": "status"})  # exit 3 at once when no daemon runs at all
        return watch(lambda: _ask(args, {"command": "status"}))
    reply = _ask(args, {"command": "status"})
    if args.json:  # the daemon's line as it sent it: json.dumps with the same defaults
        print(json.dumps(reply))
    else:
        from syncd.cli.render import render_status  # not at every start of the daemon

        print(render_status(reply))
    return 1 if "error" in reply else 0  # the daemon could not say (its journal failing)


def _retry(args: argparse.Namespace) -> int:
    request: dict[str, Any] = {"command": "retry"}
    if args.all_failed:
        request["all_failed"] = True
    elif args.paths:
        request["paths"] = [_journaled(p) for p in args.paths]
    else:
        raise UsageError("name the files to retry, or give --all-failed")
    reply = _ask(args, request)
    if "error" in reply:
        raise SyncdError(str(reply["error"]))
    _report(reply, "retried", "files queued again")
    return 0  # a named file that is not failed is nothing to do, not a failure


def _restore(args: argparse.Namespace) -> int:
    """Exit 1 when any file could not be restored, each such file named on stderr."""
    reply = _ask(args, {"command": "restore", "paths": [_journaled(p) for p in args.paths]})
    if "error" in reply:
        raise SyncdError(str(reply["error"]))
    return 1 if _report(reply, "restored", "files restored") else 0


def _journaled(path: Path) -> str:
    """`path` as the journal spells it: absolute, its folders' symlinks resolved (a watch's
    path is), the name itself left alone (it may be gone, e.g. into the trash)."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(os.path.realpath(folder), name)


def _report(reply: dict[str, Any], count: str, done: str) -> bool:
    """Prints how many files were acted on, and each named file that was not on stderr;
    True when there was such a file."""
    for error in reply.get("errors", []):
        print(f"syncd: {error}", file=sys.stderr)
    print(f"{reply.get(count, 0)} {done}")
    return bool(reply.get("errors"))


def _pause_or_resume(args: argparse.Namespace) -> int:
    reply = _ask(args, {"command": args.command, "services": args.services})
    if "error" in reply:  # names the config does not know are the caller's; the rest, ours
        error = UsageError if reply.get("unknown_services") else SyncdError
        raise error(str(reply["error"]))
    paused = reply.get("paused") or []
    print(f"paused: {', '.join(paused)}" if paused else "nothing is paused")
    return 0
