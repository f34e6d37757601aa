"""The sandbox's webhook receiver and health-check endpoint, driven as a bare client."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
import requests

from syncd.sandbox import credentials

from .sandbox_client import Box


def signed(body: bytes, secret: str = credentials.WEBHOOK_SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-Syncd-Signature": f"sha256={digest}"}


def test_webhook_with_a_valid_signature_is_recorded(box: Box) -> None:
    body = json.dumps({"id": "e1", "event": "done"}).encode()
    reply = box.call("POST", "/hooks/webhook", signed=False, data=body, headers=signed(body))
    assert reply.status_code == 200, reply.text
    (delivery,) = box.get("hooks/webhooks")
    assert delivery["signature_valid"] is True
    assert delivery["event"] == {"id": "e1", "event": "done"}
    assert delivery["content_type"] == "application/json"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Syncd-Signature": "sha256=00"},
        {"X-Syncd-Signature": "md5=abc"},
        signed(b"another body"),
        signed(b'{"id": "e2"}', secret="wrong secret"),
    ],
)
def test_webhook_with_a_bad_signature_is_refused_and_recorded(
    box: Box, headers: dict[str, str]
) -> None:
    reply = box.call("POST", "/hooks/webhook", signed=False, data=b'{"id": "e2"}', headers=headers)
    assert reply.status_code == 401
    (delivery,) = box.get("hooks/webhooks")
    assert delivery["signature_valid"] is False
    assert delivery["event"] == {"id": "e2"}


def test_pings_and_fails_are_recorded(box: Box) -> None:
    assert box.call("GET", "/hc/abc-1", signed=False).status_code == 200
    assert (
        box.call("POST", "/hc/abc-1/fail", signed=False, data=b"2 files failed").status_code == 200
    )
    pings = box.get("hooks/pings")
    assert [(p["uuid"], p["kind"], p["method"], p["body"]) for p in pings] == [
        ("abc-1", "ok", "GET", ""),
        ("abc-1", "fail", "POST", "2 files failed"),
    ]


def test_down_answers_503_or_refuses_then_comes_back(box: Box) -> None:
    body = b"{}"
    box.post("hooks/down", {"seconds": 60, "how": "503"})
    assert (
        box.call(
            "POST", "/hooks/webhook", signed=False, data=body, headers=signed(body)
        ).status_code
        == 503
    )
    assert box.call("GET", "/hc/x", signed=False).status_code == 503
    box.post("hooks/down", {"seconds": 60, "how": "refuse"})
    with pytest.raises(requests.ConnectionError):
        box.call("GET", "/hc/x", signed=False)
    box.post("hooks/down", {"seconds": 0})
    assert box.call("GET", "/hc/x", signed=False).status_code == 200
    assert box.get("hooks/webhooks") == []
    assert len(box.get("hooks/pings")) == 1


@pytest.mark.parametrize(
    "spec", [{}, {"seconds": -1}, {"seconds": True}, {"seconds": 5, "how": "slow"}]
)
def test_down_refuses_bad_requests(box: Box, spec: dict[str, object]) -> None:
    reply = box.call("POST", "/_sandbox/hooks/down", signed=False, json=spec)
    assert reply.status_code == 400
    assert "seconds" in reply.json()["error"]


def test_reset_forgets_hooks(box: Box) -> None:
    box.call("GET", "/hc/x", signed=False)
    box.post("hooks/down", {"seconds": 60})
    box.post("reset", {})
    assert box.get("hooks/pings") == []
    assert box.call("GET", "/hc/x", signed=False).status_code == 200
