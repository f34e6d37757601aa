"""Health pings: the URL at the interval while healthy, URL/fail with a summary after a
permanent failure, plain pings again once `syncd retry` has mended it."""

from __future__ import annotations

import itertools
import os
from typing import Any

from conftest import SandboxClient, base_config, wait_until

INTERVAL = 1.0


def pings(sandbox: SandboxClient) -> list[dict[str, Any]]:
    return [p for p in sandbox.get("hooks/pings") if p["uuid"] == "check-1"]


def checked_daemon(tmp_path, sandbox, make_daemon, url_tail: str = "") -> Any:
    """A daemon pinging the sandbox's check-1 (`url_tail` after it) every INTERVAL."""
    (tmp_path / "drop").mkdir()
    config = base_config(
        tmp_path,
        sandbox.url,
        [{"path": str(tmp_path / "drop")}],
        healthcheck_url=f"{sandbox.url}/hc/check-1{url_tail}",
        healthcheck_interval=INTERVAL,
    )
    return make_daemon(config).start()


def test_pings_fail_and_recover(tmp_path, sandbox, make_daemon):
    daemon = checked_daemon(tmp_path, sandbox, make_daemon)
    healthy = wait_until(lambda: len(p := pings(sandbox)) >= 4 and p, 30, "four pings")
    assert {p["kind"] for p in healthy} == {"ok"}
    gaps = [b["at"] - a["at"] for a, b in itertools.pairwise(healthy)]
    assert all(gap >= 0.9 * INTERVAL for gap in gaps), gaps

    # TON refuses the upload once, for good: the file is failed until someone retries it.
    sandbox.fault(method="POST", path="/1.1/ton/bucket/", status=403, body="Forbidden.")
    path = tmp_path / "drop" / "report.bin"
    path.write_bytes(b"r" * 2048)
    daemon.wait_counts(failed=1)
    fail = wait_until(
        lambda: [p for p in pings(sandbox) if p["kind"] == "fail"], 30, "a /fail ping"
    )[0]
    assert fail["method"] == "POST"
    assert fail["body"].startswith("1 files failed; latest: ")
    assert str(path) in fail["body"] and "\n" not in fail["body"]
    before_retry = len(pings(sandbox))
    wait_until(lambda: len(pings(sandbox)) >= before_retry + 2, 30, "more pings")
    assert {p["kind"] for p in pings(sandbox)[before_retry:]} == {"fail"}, "fails every interval"

    retried = daemon.cli("retry", "--all-failed")
    assert retried.returncode == 0, retried.stderr
    daemon.wait_counts(done=1, failed=0)
    recovered = wait_until(
        lambda: (p := pings(sandbox)) and p[-1]["kind"] == "ok" and p, 30, "an ok ping"
    )
    mark = len(recovered)
    wait_until(lambda: len(pings(sandbox)) >= mark + 2, 30, "two more pings")
    assert {p["kind"] for p in pings(sandbox)[mark:]} == {"ok"}


def test_fail_goes_before_the_query(tmp_path, sandbox, make_daemon):
    """healthchecks.io's `/KEY/SLUG?create=1`: the failure goes to `/KEY/SLUG/fail?create=1`."""
    daemon = checked_daemon(tmp_path, sandbox, make_daemon, "?create=1")
    sandbox.fault(method="POST", path="/1.1/ton/bucket/", status=403, body="Forbidden.")
    (tmp_path / "drop" / "report.bin").write_bytes(b"r" * 2048)
    daemon.wait_counts(failed=1)
    fail = wait_until(
        lambda: [p for p in pings(sandbox) if p["kind"] == "fail"], 30, "a /fail ping"
    )[0]
    assert fail["body"].startswith("1 files failed; latest: ")


def test_a_failed_name_that_is_not_utf8_is_summarised_escaped(tmp_path, sandbox, make_daemon):
    """A file name is data: in the one-line summary its stray bytes and control characters
    are escaped, and the pings go on."""
    daemon = checked_daemon(tmp_path, sandbox, make_daemon)
    sandbox.fault(method="POST", path="/1.1/ton/bucket/", status=403, body="Forbidden.")
    with open(os.fsencode(tmp_path / "drop") + b"/bad-\xff\n.bin", "wb") as out:
        out.write(b"r" * 2048)
    daemon.wait_counts(failed=1)
    fails = wait_until(
        lambda: len(f := [p for p in pings(sandbox) if p["kind"] == "fail"]) >= 2 and f,
        30,
        "two /fail pings",
    )
    assert "/drop/bad-\\xff\\n.bin: " in fails[0]["body"], fails[0]["body"]


def test_a_health_that_cannot_be_read_is_a_fail_ping_and_the_check_goes_on(sandbox):
    """What the summary reads can itself fail (the journal out of reach): that is the
    problem to report, and the thread pinging the URL must not end with it."""
    from syncd.errors import SyncdError
    from syncd.outputs.healthcheck import HealthCheck

    answers = iter([SyncdError("the journal database is unavailable: refused"), None])

    def problem() -> str | None:
        answer = next(answers, None)
        if isinstance(answer, Exception):
            raise answer
        return answer

    check = HealthCheck(f"{sandbox.url}/hc/check-1", INTERVAL, problem)
    check.start()
    try:
        wait_until(lambda: [p for p in pings(sandbox) if p["kind"] == "ok"], 30, "an ok ping")
    finally:
        check.stop()
    kinds = [(p["kind"], p["body"]) for p in pings(sandbox)]
    assert kinds[0] == ("fail", "the journal database is unavailable: refused"), kinds
