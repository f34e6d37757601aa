"""The Twitter endpoints against protocols.md 7 and 8."""

from __future__ import annotations

from typing import Any

import requests

from .sandbox_client import Box, oauth

UPDATE = "/1.1/statuses/update.json"


def tweet(box: Box, **form: str) -> requests.Response:
    return box.call("POST", UPDATE, data=form)


def errors(reply: requests.Response) -> list[dict[str, Any]]:
    return list(reply.json()["errors"])


def test_verify_credentials(box: Box) -> None:
    reply = box.call("GET", "/1.1/account/verify_credentials.json")
    assert reply.status_code == 200
    user = reply.json()
    assert (user["id"], user["id_str"], user["screen_name"]) == (
        1000000001,
        "1000000001",
        "syncd_demo",
    )
    assert int(reply.headers["x-rate-limit-remaining"]) < int(reply.headers["x-rate-limit-limit"])


def test_update_posts_a_tweet(box: Box) -> None:
    reply = tweet(box, status="read more: http://tl.gd/n_1", in_reply_to_status_id="12345")
    assert reply.status_code == 200
    posted = reply.json()
    assert posted["id_str"].isdigit() and int(posted["id_str"]) > 2**53
    assert posted["id"] == int(posted["id_str"])
    assert posted["text"] == "read more: http://tl.gd/n_1"
    assert posted["in_reply_to_status_id_str"] == "12345"
    assert posted["user"]["screen_name"] == "syncd_demo"
    assert posted["created_at"].endswith(" +0000 " + posted["created_at"][-4:])
    assert box.get("twitter/statuses") == [posted]
    later = tweet(box, status="another").json()
    assert int(later["id_str"]) > int(posted["id_str"])


def test_duplicate_status_is_187(box: Box) -> None:
    assert tweet(box, status="same words").status_code == 200
    again = tweet(box, status="same words")
    assert again.status_code == 403
    assert errors(again) == [{"code": 187, "message": "Status is a duplicate."}]
    assert tweet(box, status="other words").status_code == 200
    assert tweet(box, status="same words").status_code == 200  # only the previous one counts


def test_status_length_and_presence(box: Box) -> None:
    assert tweet(box, status="x" * 280).status_code == 200
    too_long = tweet(box, status="y" * 281)
    assert too_long.status_code == 403 and errors(too_long)[0]["code"] == 186
    assert tweet(box).status_code == 400
    assert tweet(box, status="").status_code == 400


def test_form_body_is_signed(box: Box) -> None:
    request = requests.Request(
        "POST", box.url + UPDATE, data={"status": "signed text"}, auth=oauth()
    ).prepare()
    request.body = "status=tampered+text"
    request.headers["Content-Length"] = str(len(request.body))
    reply = box.http.send(request, timeout=10)
    assert reply.status_code == 401
    assert errors(reply) == [{"code": 32, "message": "Could not authenticate you."}]
    assert box.get("twitter/statuses") == []


def test_rate_limit_exhausted_is_429_code_88(box: Box) -> None:
    box.post("settings", {"twitter": {"rate_limit": 2}})
    remaining = [tweet(box, status=f"n{i}").headers["x-rate-limit-remaining"] for i in range(2)]
    assert remaining == ["1", "0"]
    refused = tweet(box, status="n3")
    assert refused.status_code == 429 and errors(refused)[0]["code"] == 88
    box.post("clock", {"advance": 901})  # a new 15-minute window
    assert tweet(box, status="n4").status_code == 200
