"""TON resumable uploads end to end: chunk sizes, kill -9, broken connections, expiry, resume."""

from __future__ import annotations

import base64
import hashlib
import random
from pathlib import Path
from typing import Any

import pytest
from conftest import SandboxClient, base_config, read_sidecar, wait_until

MiB = 1024 * 1024
NOTHING_HELD = base64.b64encode(
    b"HTTP/1.1 308 Resume Incomplete\r\nContent-Length: 0\r\n\r\n"
).decode()
"""A chunk's answer from a server that holds nothing of the upload (no Range)."""


def write_random(path: Path, size: int, seed: int) -> str:
    """A file of `size` pseudo-random bytes, written in pieces; returns its sha256."""
    rng = random.Random(seed)
    digest = hashlib.sha256()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        left = size
        while left:
            piece = rng.randbytes(min(left, 4 * MiB))
            out.write(piece)
            digest.update(piece)
            left -= len(piece)
    return digest.hexdigest()


def resumable_config(tmp_path: Path, sandbox: SandboxClient, **service: Any) -> dict[str, Any]:
    config = base_config(tmp_path, sandbox.url)
    config["services"]["ads"].update(service)
    (tmp_path / "drop").mkdir(exist_ok=True)
    config["watch"] = [{"path": str(tmp_path / "drop"), "service": "ads"}]
    return config


def chunk_puts(sandbox: SandboxClient) -> list[dict[str, Any]]:
    return [
        r
        for r in sandbox.requests()
        if r["method"] == "PUT" and r.get("content_range") and "*" not in r["content_range"]
    ]


def only_session(sandbox: SandboxClient) -> dict[str, Any]:
    sessions = sandbox.ton_sessions()
    assert len(sessions) == 1, sessions
    return sessions[0]


def test_300_mib_in_aligned_chunks(tmp_path, sandbox, make_daemon):
    daemon = make_daemon(resumable_config(tmp_path, sandbox, chunk_size="8MiB")).start()
    path = tmp_path / "drop" / "big.mp4"
    digest = write_random(path, 300 * MiB, 1)
    daemon.wait_counts(done=1, timeout=240)
    side = read_sidecar(path)
    assert side["sha256"] == digest and side["size"] == 300 * MiB
    stored = {o["location"]: o for o in sandbox.ton_objects()}[side["result"]["location"]]
    assert stored["sha256"] == digest
    session = only_session(sandbox)
    assert session["complete"]
    minimum = sandbox.get("settings")["ton"]["min_chunk"]
    assert all(length % minimum == 0 for length in session["chunks"][:-1])
    assert set(session["chunks"][:-1]) == {8 * MiB}


def test_chunk_rounded_to_a_minimum_that_is_not_a_power_of_two(tmp_path, sandbox, make_daemon):
    sandbox.post("settings", {"ton": {"min_chunk": 393216}})
    config = resumable_config(tmp_path, sandbox, chunk_size="1MiB", resumable_threshold="1MiB")
    daemon = make_daemon(config).start()
    path = tmp_path / "drop" / "odd.bin"
    digest = write_random(path, 5 * MiB + 123, 2)
    daemon.wait_counts(done=1)
    session = only_session(sandbox)
    assert session["chunks"][:-1] == [786432] * (len(session["chunks"]) - 1)
    assert read_sidecar(path)["sha256"] == digest


def test_kill_9_three_times_resends_at_most_a_chunk_each(tmp_path, sandbox, make_daemon):
    chunk = 8 * MiB
    total = 200 * MiB
    config = resumable_config(tmp_path, sandbox, chunk_size="8MiB")
    daemon = make_daemon(config).start()
    sandbox.fault(method="PUT", path="/1.1/ton/", delay_ms=150, count=10_000)
    path = tmp_path / "drop" / "killed.mov"
    digest = write_random(path, total, 3)
    rng = random.Random(3)
    for point in sorted(rng.sample(range(2 * chunk, total - 2 * chunk), 3)):

        def past(point: int = point) -> bool:
            sessions = sandbox.ton_sessions()
            return bool(sessions) and sessions[0]["bytes_received"] >= point

        wait_until(past, 120, f"{point} bytes at the server")
        daemon.kill()
        daemon.start()
    daemon.wait_counts(done=1, timeout=240)
    session = only_session(sandbox)
    assert session["complete"] and session["received"] == total
    resent = session["bytes_received"] - total
    assert resent <= 3 * chunk, resent
    assert read_sidecar(path)["sha256"] == digest


def test_connection_reset_mid_chunk_resumes(tmp_path, sandbox, make_daemon):
    chunk = 256 * 1024
    sandbox.post("settings", {"ton": {"min_chunk": 64 * 1024}})
    config = resumable_config(tmp_path, sandbox, chunk_size="256KiB", resumable_threshold="1MiB")
    daemon = make_daemon(config).start()
    path = tmp_path / "drop" / "reset.bin"
    total = 4 * MiB
    sandbox.fault(method="PUT", path="/1.1/ton/", reset_after_bytes=100_000, count=1)
    digest = write_random(path, total, 4)
    daemon.wait_counts(done=1)
    session = only_session(sandbox)
    assert session["complete"]
    assert session["bytes_received"] - total <= chunk
    assert read_sidecar(path)["sha256"] == digest


def _interrupt_mid_upload(sandbox: SandboxClient, daemon: Any, path: Path, size: int) -> None:
    """Start a slow upload of `path` and kill the daemon once part of it is at the server."""
    sandbox.fault(method="PUT", path="/1.1/ton/", delay_ms=100, count=10_000)
    write_random(path, size, 5)
    wait_until(
        lambda: any(s["received"] >= size // 4 for s in sandbox.ton_sessions()),
        60,
        "a quarter of the file at the server",
    )
    daemon.kill()
    sandbox.clear_faults()


def small_chunks(tmp_path: Path, sandbox: SandboxClient) -> dict[str, Any]:
    sandbox.post("settings", {"ton": {"min_chunk": 64 * 1024}})
    return resumable_config(tmp_path, sandbox, chunk_size="128KiB", resumable_threshold="1MiB")


def test_session_expired_while_down_starts_a_new_one(tmp_path, sandbox, make_daemon):
    daemon = make_daemon(small_chunks(tmp_path, sandbox)).start()
    path = tmp_path / "drop" / "expired.bin"
    _interrupt_mid_upload(sandbox, daemon, path, 4 * MiB)
    sandbox.post("clock", {"advance": 2 * 3600})
    daemon.start()
    daemon.wait_counts(done=1)
    sessions = sandbox.ton_sessions()
    assert len(sessions) == 2 and sum(s["complete"] for s in sessions) == 1
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert read_sidecar(path)["sha256"] == digest


def test_file_replaced_while_down_uploads_the_new_content(tmp_path, sandbox, make_daemon):
    daemon = make_daemon(small_chunks(tmp_path, sandbox)).start()
    path = tmp_path / "drop" / "replaced.bin"
    _interrupt_mid_upload(sandbox, daemon, path, 4 * MiB)
    replacement = tmp_path / "replacement.bin"
    new_digest = write_random(replacement, 3 * MiB, 6)
    replacement.replace(path)
    daemon.start()
    daemon.wait_counts(done=1)
    side = read_sidecar(path)
    assert side["sha256"] == new_digest and side["size"] == 3 * MiB
    stored = {o["location"]: o for o in sandbox.ton_objects()}[side["result"]["location"]]
    assert stored["sha256"] == new_digest
    assert len(sandbox.ton_sessions()) == 2


def test_server_without_status_query_resumes_from_the_journal(tmp_path, sandbox, make_daemon):
    daemon = make_daemon(small_chunks(tmp_path, sandbox)).start()
    sandbox.post("settings", {"ton": {"status_query": False}})
    path = tmp_path / "drop" / "noquery.bin"
    total = 4 * MiB
    _interrupt_mid_upload(sandbox, daemon, path, total)
    daemon.start()
    daemon.wait_counts(done=1)
    session = only_session(sandbox)
    assert session["complete"]
    assert session["bytes_received"] - total <= 128 * 1024
    assert read_sidecar(path)["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_status_shows_resumable_progress(tmp_path, sandbox, make_daemon):
    daemon = make_daemon(small_chunks(tmp_path, sandbox)).start()
    sandbox.fault(method="PUT", path="/1.1/ton/", delay_ms=100, count=10_000)
    write_random(tmp_path / "drop" / "progress.bin", 4 * MiB, 7)

    def partway() -> dict[str, Any] | None:
        uploads = daemon.status()["uploads"]
        return uploads[0] if uploads and 0 < uploads[0]["sent"] < uploads[0]["total"] else None

    upload = wait_until(partway, 60, "a partial upload")
    assert upload["total"] == 4 * MiB and upload["sent"] % (128 * 1024) == 0
    assert upload["rate"] > 0
    assert "uploading:" in daemon.cli("status").stdout


def test_an_endpoint_below_a_path_prefix_gets_every_request(tmp_path, sandbox, make_daemon):
    """Clients build a Location's URL as the endpoint + Location (protocols.md 2.1): with an
    emulator mounted below a prefix, the chunks and the recorded url keep that prefix."""
    sandbox.post("settings", {"ton": {"min_chunk": 64 * 1024}})
    endpoint = f"{sandbox.url}/mnt/ton"
    config = resumable_config(
        tmp_path, sandbox, endpoint=endpoint, chunk_size="64KiB", resumable_threshold="64KiB"
    )
    daemon = make_daemon(config).start()
    path = tmp_path / "drop" / "prefixed.mp4"
    digest = write_random(path, 200_000, 7)
    daemon.wait_counts(done=1)
    ton = [r for r in sandbox.requests() if "/ton/" in r["path"]]
    assert len(ton) == 5 and all(r["path"].startswith("/mnt/ton/1.1/ton/") for r in ton)
    result = read_sidecar(path)["result"]
    assert result["location"].startswith("/1.1/ton/bucket/")
    assert result["url"] == endpoint + result["location"]
    assert only_session(sandbox)["complete"] and read_sidecar(path)["sha256"] == digest


VARIANTS = [
    {"range_prefix": False},
    {"location_shape": "data"},
    {"strict_offsets": False, "partial_chunk": "aligned"},
    {"partial_chunk": "aligned", "status_query": False},
]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: ",".join(v))
def test_the_server_variants_protocols_md_leaves_open(tmp_path, sandbox, make_daemon, variant):
    """Each undocumented choice a TON may make (protocols.md 2.3-2.5, 8), with a connection
    cut mid-chunk: the upload completes, and re-sends at most what the server never confirmed."""
    sandbox.post("settings", {"ton": {"min_chunk": 64 * 1024, **variant}})
    config = resumable_config(tmp_path, sandbox, chunk_size="256KiB", resumable_threshold="1MiB")
    daemon = make_daemon(config).start()
    sandbox.fault(method="PUT", path="/ton/", reset_after_bytes=150_000, count=1)
    path = tmp_path / "drop" / "variant.mp4"
    digest = write_random(path, 2 * MiB + 5, 8)
    daemon.wait_counts(done=1)
    session = only_session(sandbox)
    # At most the cut chunk again, and without a status query also the one chunk the
    # server refuses (400 with its Range) for starting where the journal says.
    assert session["complete"] and session["bytes_received"] - session["total"] <= 512 * 1024
    side = read_sidecar(path)
    stored = {o["location"]: o for o in sandbox.ton_objects()}[side["result"]["location"]]
    assert stored["sha256"] == side["sha256"] == digest


def chunks_lost(
    tmp_path: Path, sandbox: SandboxClient, make_daemon: Any, count: int, **ton: Any
) -> Any:
    """A daemon on 64 KiB chunks whose next `count` chunks are answered NOTHING_HELD."""
    sandbox.post("settings", {"ton": {"min_chunk": 64 * 1024, **ton}})
    config = resumable_config(tmp_path, sandbox, chunk_size="64KiB", resumable_threshold="1MiB")
    daemon = make_daemon(config).start()
    sandbox.fault(method="PUT", path="/1.1/ton/", raw_reply=NOTHING_HELD, count=count)
    return daemon


@pytest.mark.parametrize("strict", [True, False])
def test_a_chunk_answered_308_without_range_is_not_taken_as_stored(
    tmp_path, sandbox, make_daemon, strict
):
    """A 308 without `Range` says the server holds nothing (protocols.md 2.5, after Google's
    resumable protocol): here its first chunk was lost (a proxy answered, say). The upload
    goes on from what the server holds, not past a chunk it never took, whether the server
    then refuses a chunk at the wrong offset (400, no Range: it holds nothing) or answers it
    308 (no Range again)."""
    daemon = chunks_lost(tmp_path, sandbox, make_daemon, 1, strict_offsets=strict)
    path = tmp_path / "drop" / "lost-chunk.bin"
    digest = write_random(path, MiB, 11)
    daemon.wait_counts(done=1)
    session = only_session(sandbox)
    assert session["complete"] and session["received"] == MiB
    assert read_sidecar(path)["sha256"] == digest
    stored = {o["location"]: o for o in sandbox.ton_objects()}
    assert stored[read_sidecar(path)["result"]["location"]]["sha256"] == digest


def test_a_server_that_takes_no_chunk_is_retried_later_not_fed_for_ever(
    tmp_path, sandbox, make_daemon
):
    """Every chunk answered 308 without Range (nothing held): after three the upload waits
    to be retried (status says why) instead of sending the same chunk round for ever, and
    goes through once the server takes chunks again."""
    daemon = chunks_lost(tmp_path, sandbox, make_daemon, 1000)
    path = tmp_path / "drop" / "refused.bin"
    digest = write_random(path, MiB, 12)
    daemon.wait_counts(retry_wait=1)
    retrying = daemon.status()["retrying"]
    assert "TON took none of the last 3 chunks sent" in retrying[0]["error"], retrying
    sandbox.clear_faults()
    daemon.wait_counts(done=1, timeout=120)
    assert read_sidecar(path)["sha256"] == digest
