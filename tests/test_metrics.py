"""/metrics during a mixed run, checked name by name against the status reply and against what
the sandbox recorded: uploads by outcome, bytes, requests by code, retries after injected
503s, the oldest pending file while an upload is held up, and the contract's every name."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import requests
from conftest import SandboxClient, base_config, wait_until
from harness import Samples, free_port, scrape
from sandbox.samples import png

from syncd.sandbox import credentials

KiB = 1024


def by_label(samples: Samples, name: str, *keys: str) -> dict[tuple[str, ...], float]:
    """One metric's samples keyed by the values of `keys`."""
    found = {}
    for (sample, labels), value in samples.items():
        if sample == name:
            values = dict(labels)
            found[tuple(values[k] for k in keys)] = value
    return found


def mixed_config(tmp_path: Path, sandbox: SandboxClient, port: int) -> dict[str, Any]:
    config = base_config(tmp_path, sandbox.url)
    config["metrics"] = {"listen": f"127.0.0.1:{port}"}
    config["services"]["ads"].update(resumable_threshold="200KiB", chunk_size="64KiB")
    config["services"]["bad"] = {
        **config["services"]["ads"],
        "bucket": credentials.TON_BUCKET_FORBIDDEN,
    }
    config["services"]["pics"] = {
        "type": "twitpic",
        "account": "main",
        "api_key": credentials.TWITPIC_API_KEY,
        "endpoint": sandbox.url,
    }
    for name in ("ads", "bad", "pics"):
        (tmp_path / name).mkdir()
    config["watch"] = [{"path": str(tmp_path / n), "service": n} for n in ("ads", "bad", "pics")]
    return config


def service_of(path: str) -> str | None:
    """Which configured service a request the sandbox recorded came from."""
    if path.startswith("/2/upload.json"):
        return "pics"
    if "/ta_partner" in path:
        return "ads"
    if "/forbidden" in path:
        return "bad"
    return None


def test_metrics_agree_with_status_and_sandbox(tmp_path, sandbox, make_daemon):
    sandbox.post("settings", {"ton": {"min_chunk": KiB}})
    # The first two single POSTs meet an outage: each is retried (Retry-After: 0).
    sandbox.fault(
        method="POST", path=r"^/1\.1/ton/bucket/ta_partner$", status=503, count=2, retry_after=0
    )
    port = free_port()
    started = time.time()
    daemon = make_daemon(mixed_config(tmp_path, sandbox, port)).start()
    url = f"http://127.0.0.1:{port}/metrics"
    sizes = {"a.bin": 10 * KiB, "b.bin": 20 * KiB, "c.bin": 30 * KiB, "big.bin": 300 * KiB}
    for seed, (name, size) in enumerate(sizes.items()):
        (tmp_path / "ads" / name).write_bytes(bytes([seed]) * size)
    (tmp_path / "bad" / "refused.bin").write_bytes(b"x" * KiB)
    (tmp_path / "pics" / "p.png").write_bytes(png())
    daemon.wait_counts(done=5, failed=1, timeout=90)
    # Same content as a.bin, once a.bin is done: recorded as a duplicate.
    (tmp_path / "ads" / "copy.bin").write_bytes(bytes([0]) * sizes["a.bin"])
    daemon.wait_counts(done=6, failed=1, timeout=60)

    samples, types = scrape(url)
    status = daemon.status()
    recorded = sandbox.requests()

    # syncd_files{state}: every state of the status reply, the same numbers.
    assert by_label(samples, "syncd_files", "state") == {
        (state,): float(n) for state, n in status["counts"].items()
    }
    assert types["syncd_files"] == "gauge"

    uploads = by_label(samples, "syncd_uploads_total", "service", "outcome")
    assert uploads[("ads", "done")] == 4
    assert uploads[("ads", "duplicate")] == 1
    assert uploads[("ads", "failed")] == 0
    assert uploads[("bad", "failed")] == 1
    assert uploads[("pics", "done")] == 1
    assert sum(uploads.values()) == status["counts"]["done"] + status["counts"]["failed"]

    # Bytes: what TON stored for the service, which excludes the duplicate.
    stored = [o for o in sandbox.ton_objects() if o["bucket"] == credentials.TON_BUCKET_TA_PARTNER]
    assert (
        by_label(samples, "syncd_upload_bytes_total", "service")[("ads",)]
        == sum(o["size"] for o in stored)
        == sum(sizes.values())
    )
    assert by_label(samples, "syncd_upload_bytes_total", "service")[("pics",)] == len(png())

    # Requests by code: exactly what reached the sandbox, service by service.
    seen = Counter((service_of(r["path"]), str(r["status"])) for r in recorded)
    assert by_label(samples, "syncd_requests_total", "service", "code") == {
        key: float(n) for key, n in seen.items()
    }
    assert seen[("ads", "503")] == 2 and seen[("bad", "403")] == 1

    retries = by_label(samples, "syncd_retries_total", "service")
    assert retries == {("ads",): 2.0, ("bad",): 0.0, ("pics",): 0.0}

    durations = by_label(samples, "syncd_upload_duration_seconds_count", "service")
    assert durations == {("ads",): 5.0, ("bad",): 0.0, ("pics",): 1.0}
    assert (
        by_label(samples, "syncd_upload_duration_seconds_bucket", "service", "le")[("ads", "+Inf")]
        == 5.0
    )
    assert types["syncd_upload_duration_seconds"] == "histogram"

    last = by_label(samples, "syncd_last_success_timestamp_seconds", "service")
    assert set(last) == {("ads",), ("pics",)}
    assert all(started <= at <= time.time() for at in last.values())

    assert by_label(samples, "syncd_paused", "service") == {
        ("ads",): 0.0,
        ("bad",): 0.0,
        ("pics",): 0.0,
    }
    assert types["syncd_quota_remaining"] == "gauge"
    assert by_label(samples, "syncd_quota_remaining", "service", "unit") == {}
    assert samples[("syncd_watches", ())] == len(status["watches"]) == 3
    assert samples[("syncd_oldest_pending_seconds", ())] == 0
    assert by_label(samples, "syncd_build_info", "version") == {(status["version"],): 1.0}
    assert samples[("process_resident_memory_bytes", ())] > 0
    assert ("process_cpu_seconds_total", ()) in samples
    # Every counter has its _created.
    for name, kind in types.items():
        if kind == "counter" and name.startswith("syncd_"):
            assert any(s == f"{name}_created" for s, _ in samples), name


def test_oldest_pending_while_a_file_settles_and_while_it_is_held_up(
    tmp_path, sandbox, make_daemon
):
    """A file still being written is `settling` in status, not pending yet; from the moment
    it is complete and journaled, it is the oldest pending file until done."""
    port = free_port()
    config = base_config(tmp_path, sandbox.url, [{"path": str(tmp_path / "drop")}])
    config["metrics"] = {"listen": f"127.0.0.1:{port}"}
    (tmp_path / "drop").mkdir()
    daemon = make_daemon(config).start()
    url = f"http://127.0.0.1:{port}/metrics"
    sandbox.fault(method="POST", path="/1.1/ton/bucket/", delay_ms=6000)
    writing = threading.Event()
    done_writing = threading.Event()

    def slow_writer() -> None:
        with (tmp_path / "drop" / "slow.bin").open("wb") as out:
            while not done_writing.is_set():
                out.write(b"s" * 512)
                out.flush()
                writing.set()
                done_writing.wait(0.1)  # a writer that trickles: never still for 0.5 s

    writer = threading.Thread(target=slow_writer)
    writer.start()
    try:
        writing.wait(10)
        settling = wait_until(lambda: (s := daemon.status())["settling"] and s, 30, "settling")
        during, _ = scrape(url)
        assert settling["counts"]["seen"] == 0
        assert during[("syncd_oldest_pending_seconds", ())] == 0
        assert by_label(during, "syncd_files", "state")[("seen",)] == 0
    finally:
        done_writing.set()
        writer.join()
    written = time.time()
    reply = wait_until(lambda: (s := daemon.status())["uploads"] and s, 30, "the upload")
    first, _ = scrape(url)
    assert by_label(first, "syncd_uploads_in_flight", "service") == {("ads",): 1.0}
    assert by_label(first, "syncd_files", "state")[("uploading",)] == reply["counts"]["uploading"]
    age = first[("syncd_oldest_pending_seconds", ())]
    assert 0 < age <= time.time() - written
    second, _ = wait_until(
        lambda: (s := scrape(url))[0][("syncd_oldest_pending_seconds", ())] > age + 0.5 and s,
        10,
        "the oldest pending file to age",
    )
    assert by_label(second, "syncd_uploads_in_flight", "service") == {("ads",): 1.0}
    daemon.wait_counts(done=1, timeout=60)
    final, _ = scrape(url)
    assert final[("syncd_oldest_pending_seconds", ())] == 0
    assert by_label(final, "syncd_uploads_in_flight", "service") == {("ads",): 0.0}


def test_the_metrics_server_is_bounded(tmp_path, sandbox, make_daemon):
    """Stalled clients hold no thread; a body is refused; only /metrics is served; a port in
    use is a clear error."""
    port = free_port()
    config = base_config(tmp_path, sandbox.url)
    config["metrics"] = {"listen": f"127.0.0.1:{port}"}
    daemon = make_daemon(config).start()
    url = f"http://127.0.0.1:{port}/metrics"
    stalled = []
    for _ in range(6):  # more than the server has threads, each stuck mid-request
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        stalled.append(sock)
    try:
        samples, _ = scrape(url)
        assert samples[("syncd_watches", ())] == 0
        posted = requests.post(url, data=b"x" * 1024, timeout=10)
        assert posted.status_code == 413
        for elsewhere in ("/", "/metrics/", "/favicon.ico", "/status", "/metricsx"):
            refused = requests.get(f"http://127.0.0.1:{port}{elsewhere}", timeout=10)
            assert (refused.status_code, refused.text) == (404, "Not Found\n"), elsewhere
    finally:
        for sock in stalled:
            sock.close()
    daemon.stop()
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", port))
        taken.listen()
        result = daemon.cli("run")
    assert result.returncode == 1
    assert f"[metrics] listen: cannot listen on 127.0.0.1:{port}" in result.stderr
