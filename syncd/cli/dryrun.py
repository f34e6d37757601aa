"""`syncd run --once --dry-run`: what a run would upload, where, and how, without doing it.

Nothing is sent and nothing is written: the journal is opened read-only (and not created
when there is none), no sidecar, no state folder, no key file. Files are hashed to find
duplicates, both of earlier uploads the journal knows and of each other. They are listed
in the order the workers would take them (`priority`, then the watch's `order`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from syncd.cli.journal import FLEET_EXTRA
from syncd.config import Config, ServiceConfig, TonService
from syncd.errors import SyncdError
from syncd.files import Identity, Vanished, identity_of, locate, sha256_of
from syncd.intake.routing import route
from syncd.intake.scan import Scanner
from syncd.journal.reader import JournalReader, Reader
from syncd.journal.rules import queue_rank
from syncd.services import make_uploader
from syncd.services.base import Uploader
from syncd.services.oneall.signer import Signer
from syncd.work.flow import rank


@dataclass(frozen=True, slots=True)
class Planned:
    path: Path
    service: str
    identity: Identity
    sha256: str


def dry_run(config: Config) -> int:
    reader = _reader(config)
    try:
        uploaders = _uploaders(config)
        first_copy: dict[tuple[str, str], Path] = {}
        counts = {"upload": 0, "duplicate": 0, "already uploaded": 0}
        for planned in _planned(config):
            service = config.services[planned.service]
            kind, note = _decide(planned, service, uploaders[planned.service], reader, first_copy)
            counts[kind] += 1
            size = planned.identity.size
            print(f"{planned.path}: {planned.service}, {size} bytes, {_how(service, size)}{note}")
        print(
            f"dry run: {counts['upload']} to upload, {counts['duplicate']} duplicates,"
            f" {counts['already uploaded']} already uploaded; nothing sent, nothing written"
        )
    finally:
        reader.close()
    return 0


def _reader(config: Config) -> Reader:
    """The journal in force: a fleet's database, else state_dir's SQLite journal."""
    if config.journal is None:
        return JournalReader(config.daemon.state_dir / "journal.sqlite")
    try:
        from syncd.journal.pg_reader import PgJournalReader
    except ImportError:
        raise SyncdError(FLEET_EXTRA) from None
    return PgJournalReader(config.journal.url, config.journal.password)


def _uploaders(config: Config) -> dict[str, Uploader]:
    """Only for `still_valid`: whether an earlier result can stand for a duplicate."""
    public_url = config.media_server.public_url if config.media_server else "https://localhost"
    signer = Signer(bytes(32), public_url)  # never signs: nothing is served in a dry run
    return {name: make_uploader(s, signer) for name, s in config.services.items()}


def _how(service: ServiceConfig, size: int) -> str:
    if isinstance(service, TonService) and size >= service.resumable_threshold:
        return "resumable"
    return "single"


def _decide(
    planned: Planned,
    service: ServiceConfig,
    uploader: Uploader,
    reader: Reader,
    first_copy: dict[tuple[str, str], Path],
) -> tuple[str, str]:
    """What the pipeline's begin_upload would answer, from reads alone."""
    known = reader.row(os.fsencode(planned.path))
    if (
        known is not None
        and known.result is not None
        and known.uploaded_sha256 == planned.sha256
        and uploader.still_valid(known.result)
    ):
        return "already uploaded", ", already uploaded"
    for row in reader.uploaded(service.name, planned.sha256):
        if row.result is not None and uploader.still_valid(row.result):
            original = os.fsdecode(row.duplicate_of or row.path)
            return "duplicate", f", duplicate of {original}"
    key = (service.name, planned.sha256)
    if key in first_copy:
        return "duplicate", f", duplicate of {first_copy[key]}"
    first_copy[key] = planned.path
    return "upload", ""


def _planned(config: Config) -> list[Planned]:
    """Every file the watches take, hashed, in the order the workers would take them."""
    found: dict[Path, tuple[int, int | bytes]] = {}

    def take(path: Path, st: os.stat_result) -> bool:
        watch = route(config.watches, path)
        if watch is None or path in found:
            return False
        identity = Identity.of(st)
        found[path] = (-watch.priority, rank(watch.order, os.fsencode(path), identity))
        return True

    Scanner(None, lambda folder, opened: None).full(config.watches, take)
    planned = []
    for path in sorted(found, key=lambda p: (found[p][0], queue_rank(found[p][1]))):
        watch = route(config.watches, path)
        assert watch is not None
        try:
            with locate(watch.path, path) as place, place.open_regular() as file:
                planned.append(Planned(path, watch.service, identity_of(file), sha256_of(file)))
        except Vanished:
            continue
        except OSError as exc:
            raise SyncdError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return planned
