"""HTTP chaos and malformed answers from every service: each file ends done (or failed with
a reason, then done after `syncd retry`), nothing is uploaded twice, no thread dies."""

from __future__ import annotations

import random

import pytest
from conftest import SCALE, wait_until
from mixed import Dropper, check_sidecars, mixed_config, uploads_twice

PATHS = ("/1.1/ton/", "/2/upload", "/2/posts", "/1.1/statuses/", "/1.1/account/", "/push/")


@pytest.mark.timeout(300 * SCALE + 120)
def test_http_chaos_on_every_service(tmp_path, sandbox, make_daemon, figures):
    for path in PATHS:
        sandbox.fault(path=path, status=503, probability=0.15, count=1_000_000)
        sandbox.fault(path=path, reset_connection=True, probability=0.08, count=1_000_000)
        sandbox.fault(path=path, status=429, retry_after=1, probability=0.03, count=1_000_000)
        sandbox.fault(path=path, delay_ms=150, probability=0.2, count=1_000_000)
    sandbox.fault(method="PUT", path="/1.1/ton/", reset_after_bytes=70_000, probability=0.1)
    daemon = make_daemon(mixed_config(tmp_path, sandbox)).start()
    dropper = Dropper(tmp_path, random.Random(13))
    files = [path for _ in range(SCALE) for path in dropper.batch()]
    # Chaos until most files are through. A resumable upload makes several requests, each
    # faulted a third of the time, so a few files can sit deep in backoff (up to 5 min) when
    # the rest are done: once the faults stop, `syncd retry` brings them forward.
    wait_until(
        lambda: daemon.status()["counts"]["done"] >= len(files) * 0.8,
        240 * SCALE,
        "most files done under chaos",
    )
    sandbox.clear_faults()
    retried = daemon.cli("retry", "--all-failed")
    assert retried.returncode == 0, retried.stderr
    daemon.wait_counts(done=len(files), timeout=120 * SCALE)
    daemon.stop()
    check_sidecars(tmp_path, files)
    faulted = [r for r in sandbox.requests() if r["fault"] is not None]
    figures["files"] = len(files)
    figures["requests"] = len(sandbox.requests())
    figures["faulted_requests"] = len(faulted)
    assert uploads_twice(sandbox) == {"ads": 0, "photos": 0, "notes": 0, "social": 0}


MALFORMED = [
    # (method, path, status, body): answers no client should trust
    ("POST", "/1.1/ton/bucket/", 201, "no Location header, and not JSON either {"),
    ("POST", "/2/upload", 200, "<html>an error page from a proxy</html>"),
    ("POST", "/2/upload", 200, '{"id": null, "url": 12}'),
    ("POST", "/2/posts", 200, "[1, 2"),
    ("POST", "/2/posts", 200, '{"id": "", "tweet_content": null}'),
    ("POST", "/1.1/statuses/", 200, '"a string, not a tweet"'),
    ("POST", "/push/", 200, '{"response": {"result": {"data": []}}}'),
    ("POST", "/push/", 200, "x" * 200_000),
]


def test_malformed_answers_fail_one_file_each_and_nothing_else(
    tmp_path, sandbox, make_daemon, figures
):
    for method, path, status, body in MALFORMED:
        sandbox.fault(method=method, path=path, status=status, body=body, count=1)
    daemon = make_daemon(mixed_config(tmp_path, sandbox)).start()
    dropper = Dropper(tmp_path, random.Random(17))
    files = dropper.batch()

    def settled() -> dict[str, int] | None:
        counts = daemon.status()["counts"]
        busy = ("seen", "hashed", "uploading", "retry_wait", "uploaded", "awaiting_callback")
        return counts if not any(counts[s] for s in busy) and sandbox.get("faults") == [] else None

    counts = wait_until(settled, 120, "every file done or failed")
    failures = daemon.status()["failures"]
    figures["failed_by_malformed_answers"] = counts["failed"]
    for failure in failures:
        assert failure["error"] and "internal error" not in failure["error"], failure
    assert "Traceback" not in daemon.log()
    retried = daemon.cli("retry", "--all-failed")
    assert retried.returncode == 0, retried.stderr
    files += dropper.batch()  # the workers are all alive: new work goes through too
    daemon.wait_counts(done=len(files), failed=0, timeout=120)
    daemon.stop()
    check_sidecars(tmp_path, files)
    assert uploads_twice(sandbox) == {"ads": 0, "photos": 0, "notes": 0, "social": 0}
