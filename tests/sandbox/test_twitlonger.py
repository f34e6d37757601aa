"""The TwitLonger emulator against protocols.md 5 and 8, driven by a bare client."""

from __future__ import annotations

import calendar
import re
import time
from typing import Any

import pytest
import requests

from syncd.sandbox.credentials import TWITLONGER_API_KEY

from .sandbox_client import VERIFY_CREDENTIALS, Box, echo

POSTS = "/2/posts"
KEY = {"X-API-KEY": TWITLONGER_API_KEY}


def create(box: Box, headers: dict[str, str] | None = None, **kw: Any) -> requests.Response:
    """POST /2/posts with the key and a fresh echo unless `headers` says otherwise."""
    kw.setdefault("data", {"content": "Hello from syncd."})
    sent = {**KEY, **echo()} if headers is None else headers
    return box.call("POST", POSTS, signed=False, headers=sent, **kw)


def put(box: Box, post_id: str, **form: str) -> requests.Response:
    headers = {**KEY, **echo()}
    return box.call("PUT", f"{POSTS}/{post_id}", signed=False, headers=headers, data=form)


def error(reply: requests.Response) -> tuple[int, int]:
    (only,) = reply.json()["errors"]
    assert only["message"]
    return reply.status_code, only["code"]


def test_create_get_and_link(box: Box) -> None:
    form = {"content": "Short enough.", "reply_to_id": "54321", "reply_to_screen_name": "bob"}
    reply = create(box, data=form)
    assert reply.status_code == 200, reply.text
    post = reply.json()
    post_id = post["id"]
    assert re.fullmatch(r"[a-z0-9][a-z0-9_]{3,7}", post_id)
    assert post == {
        "id": post_id,
        "short_url": f"http://tl.gd/{post_id}",
        "full_url": f"http://www.twitlonger.com/show/{post_id}",
        "screen_name": "syncd_demo",
        "post_time": post["post_time"],
        "reply_to_id": "54321",
        "reply_to_screen_name": "bob",
        "twitter_status_id": None,
        "tweet_content": "Short enough.",
        "content": "Short enough.",
    }
    posted = calendar.timegm(time.strptime(post["post_time"], "%Y-%m-%d %H:%M:%S"))
    assert abs(posted - time.time()) < 60

    fetched = box.call("GET", f"{POSTS}/{post_id}", signed=False, headers=KEY)
    assert (fetched.status_code, fetched.json()) == (200, post)

    linked = put(box, post_id, twitter_status_id="1234567890123456789")
    assert linked.status_code == 200
    assert linked.json() == {**post, "twitter_status_id": "1234567890123456789"}
    assert put(box, post_id, twitter_status_id="1234567890123456789").status_code == 200
    (shown,) = box.get("twitlonger/posts")
    assert shown == {**post, "twitter_status_id": "1234567890123456789", "puts": 2}


@pytest.mark.parametrize("limit", [280, 140])
def test_long_content_is_cut_for_the_tweet(box: Box, limit: int) -> None:
    box.post("settings", {"twitlonger": {"tweet_limit": limit}})
    content = " ".join(f"word{i}" for i in range(200))
    post = create(box, data={"content": content}).json()
    suffix = f" (cont) {post['short_url']}"
    tweet = post["tweet_content"]
    assert len(tweet) <= limit and tweet.endswith(suffix)
    text = tweet.removesuffix(suffix)
    assert content.startswith(text) and content[len(text)] == " "  # cut between words
    assert len(tweet) > limit - 10
    assert post["content"] == content
    exact = create(box, data={"content": "x" * limit}).json()
    assert exact["tweet_content"] == "x" * limit


def test_get_needs_only_the_key(box: Box) -> None:
    missing = box.call("GET", f"{POSTS}/nope", signed=False, headers=KEY)
    assert error(missing) == (404, 3)
    assert error(box.call("GET", f"{POSTS}/nope", signed=False)) == (403, 4)


@pytest.mark.parametrize("key", [None, "", "unknown-key"])
def test_missing_or_unknown_key_is_403_code_4(box: Box, key: str | None) -> None:
    headers = echo() if key is None else {**echo(), "X-API-KEY": key}
    assert error(create(box, headers=headers)) == (403, 4)


def test_disabled_key_is_code_5_and_banned_user_code_7(box: Box) -> None:
    box.post("settings", {"twitlonger": {"disabled_keys": [TWITLONGER_API_KEY]}})
    assert error(create(box)) == (403, 5)
    box.post(
        "settings", {"twitlonger": {"disabled_keys": [], "banned_screen_names": ["SYNCD_demo"]}}
    )
    assert error(create(box)) == (403, 7)
    assert box.get("twitlonger/posts") == []


def test_routing_errors(box: Box) -> None:
    assert error(box.call("DELETE", f"{POSTS}/abc", signed=False, headers=KEY)) == (405, 1)
    assert error(box.call("GET", POSTS, signed=False, headers=KEY)) == (405, 1)
    assert error(box.call("POST", f"{POSTS}/abc", signed=False, headers=KEY)) == (405, 1)
    assert error(box.call("GET", "/2/statuses/abc", signed=False, headers=KEY)) == (501, 2)
    assert error(box.call("POST", "/2/users", signed=False, headers=KEY)) == (501, 2)


def test_maintenance_is_503_code_6(box: Box) -> None:
    box.post("settings", {"twitlonger": {"maintenance": True}})
    assert error(create(box)) == (503, 6)
    assert error(box.call("GET", f"{POSTS}/abc", signed=False, headers=KEY)) == (503, 6)
    box.post("settings", {"twitlonger": {"maintenance": False}})
    assert create(box).status_code == 200


def test_injected_503_is_code_6(box: Box) -> None:
    box.fault(path="^/2/posts", status=503, retry_after=3)
    reply = create(box)
    assert error(reply) == (503, 6) and reply.headers["Retry-After"] == "3"


# -- the echo -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "provider",
    [
        "https://api.twitter.com/1/account/verify_credentials.json",
        "http://api.twitter.com/1.1/account/verify_credentials.json",
        "https://api.twitter.com/1.1/account/verify_credentials.xml",
    ],
)
def test_other_provider_is_403_code_9(box: Box, provider: str) -> None:
    assert error(create(box, headers={**KEY, **echo(provider)})) == (403, 9)


def test_missing_echo(box: Box) -> None:
    headers = echo()
    assert error(create(box, headers=KEY)) == (403, 9)
    authorization_only = {
        **KEY,
        "X-Verify-Credentials-Authorization": headers["X-Verify-Credentials-Authorization"],
    }
    assert error(create(box, headers=authorization_only)) == (403, 9)
    provider_only = {**KEY, "X-Auth-Service-Provider": VERIFY_CREDENTIALS}
    assert error(create(box, headers=provider_only)) == (401, 32)


def test_provider_with_extra_parameters_is_honoured(box: Box) -> None:
    provider = VERIFY_CREDENTIALS + "?include_email=true"
    assert create(box, headers={**KEY, **echo(provider)}).status_code == 200
    unsigned_query = echo(provider, signed_url=VERIFY_CREDENTIALS)
    assert error(create(box, headers={**KEY, **unsigned_query})) == (401, 32)


def test_bad_or_stale_echo_is_401(box: Box) -> None:
    assert error(create(box, headers={**KEY, **echo(client_secret="wrong")})) == (401, 32)
    stale = echo(timestamp=str(int(time.time()) - 400))
    assert error(create(box, headers={**KEY, **stale})) == (401, 135)
    headers = {**KEY, **echo()}
    assert create(box, headers=headers).status_code == 200
    assert error(create(box, headers=headers)) == (401, 32)  # replayed nonce


def test_put_needs_the_echo_too(box: Box) -> None:
    post_id = create(box).json()["id"]
    reply = box.call(
        "PUT", f"{POSTS}/{post_id}", signed=False, headers=KEY, data={"twitter_status_id": "1"}
    )
    assert error(reply) == (403, 9)


# -- parameters ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "form",
    [
        {},
        {"content": ""},
        {"content": "   "},
        {"content": "hi", "reply_to_id": "123"},
        {"content": "hi", "reply_to_screen_name": "bob"},
    ],
)
def test_bad_create_parameters_are_400_code_8(box: Box, form: dict[str, str]) -> None:
    assert error(create(box, data=form)) == (400, 8)


def test_content_limit(box: Box) -> None:
    assert create(box, data={"content": "y" * 100_000}).status_code == 200
    assert error(create(box, data={"content": "y" * 100_001})) == (400, 8)
    box.post("settings", {"twitlonger": {"content_max": 10}})
    assert error(create(box, data={"content": "y" * 11})) == (400, 8)


def test_bad_put_parameters(box: Box) -> None:
    post_id = create(box).json()["id"]
    for form in ({}, {"twitter_status_id": ""}, {"twitter_status_id": "12a"}, {"x": "1"}):
        assert error(put(box, post_id, **form)) == (400, 8)
    assert error(put(box, "no_such", twitter_status_id="1")) == (404, 3)
    (shown,) = box.get("twitlonger/posts")
    assert (shown["puts"], shown["twitter_status_id"]) == (0, None)


def test_json_bodies_only_when_accepted(box: Box) -> None:
    body = {"content": "as json", "reply_to_id": 5, "reply_to_screen_name": "al"}
    assert error(create(box, data=None, json=body)) == (400, 8)
    box.post("settings", {"twitlonger": {"accept_json": True}})
    post = create(box, data=None, json=body).json()
    assert (post["content"], post["reply_to_id"]) == ("as json", "5")
    assert error(create(box, data=None, json=["content"])) == (400, 8)


def test_settings_are_validated(box: Box) -> None:
    for bad in ({"tweet_limit": 10}, {"disabled_keys": [1]}, {"maintenance": "yes"}):
        reply = box.call("POST", "/_sandbox/settings", signed=False, json={"twitlonger": bad})
        assert reply.status_code == 400, bad
