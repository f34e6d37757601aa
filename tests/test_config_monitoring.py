"""The monitoring keys: [metrics] listen, [[webhook]] and the health check of [daemon]."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_config import SECRET, refusal, write

from syncd.config import MetricsConfig, WebhookConfig, load


def test_defaults_are_off(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, ""))
    assert (cfg.metrics, cfg.webhooks) == (None, ())
    assert load(write(tmp_path, "[metrics]\n")).metrics is None  # listen absent: off
    assert (cfg.daemon.healthcheck_url, cfg.daemon.healthcheck_interval) == ("", 300.0)


def test_all_keys(tmp_path: Path) -> None:
    (tmp_path / "hook_secret").write_text(f"{SECRET}\n")
    path = write(
        tmp_path,
        """
        [daemon]
        healthcheck_url = "https://hc-ping.com/abc/"
        healthcheck_interval = "1m"

        [metrics]
        listen = "[::1]:9187"

        [[webhook]]
        url = "https://hooks.example.com/syncd"
        secret_file = "hook_secret"

        [[webhook]]
        url = "http://127.0.0.1:9000/in"
        events = ["failed", "degraded"]
        secret = "s2"
        """,
    )
    cfg = load(path)
    assert cfg.daemon.healthcheck_url == "https://hc-ping.com/abc"
    assert cfg.daemon.healthcheck_interval == 60.0
    assert cfg.metrics == MetricsConfig("::1", 9187)
    assert cfg.webhooks == (
        WebhookConfig("https://hooks.example.com/syncd", SECRET, ("done", "failed")),
        WebhookConfig("http://127.0.0.1:9000/in", "s2", ("failed", "degraded")),
    )
    assert SECRET not in repr(cfg)


@pytest.mark.parametrize(
    ("text", "where", "problem"),
    [
        ('[metrics]\nlisten = "9187"', "[metrics] listen", 'expected "HOST:PORT"'),
        ("[metrics]\nport = 1", "[metrics] port", "unknown key"),
        ('[daemon]\nhealthcheck_url = "http://hc.example.com/x"', "[daemon] healthcheck_url",
         "plain http is allowed only to loopback hosts"),
        ("[daemon]\nhealthcheck_interval = 0", "[daemon] healthcheck_interval",
         "must be more than 0"),
        ('[[webhook]]\nsecret = "s"', "[[webhook]] #1 url", "required key is missing"),
        ('[[webhook]]\nurl = "https://h.example.com"\nsecret = "s"\nevents = ["sent"]',
         "[[webhook]] #1 events", "must name some of done, failed, paused"),
        ('[[webhook]]\nurl = "https://h.example.com"\nsecret = "s"\nevents = []',
         "[[webhook]] #1 events", "must name some of"),
        ('[[webhook]]\nurl = "https://h.example.com"\nsecret = "s"\nretries = 3',
         "[[webhook]] #1 retries", "unknown key"),
    ],
)  # fmt: skip
def test_refusals(tmp_path: Path, text: str, where: str, problem: str) -> None:
    path = write(tmp_path, text)
    message = refusal(path)
    assert message.startswith(f"{path}: {where}: {problem}"), message


def test_inline_webhook_secret_in_a_readable_file_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path, f'[[webhook]]\nurl = "https://h.example.com"\nsecret = "{SECRET}"\n', 0o644
    )
    assert "secret given inline in a file readable by other users" in refusal(path)
