"""A bare client of the sandbox, as the tests drive it: requests + requests-oauthlib."""

from __future__ import annotations

from email.utils import formatdate
from typing import Any

import requests
from oauthlib.oauth1 import Client
from requests_oauthlib import OAuth1

from syncd.sandbox import credentials

TIMEOUT = 10
SMALL = {"min_chunk": 1024, "max_chunk": 4096}
"""Tiny chunk limits keep the resumable tests fast (protocols.md 8 suggests them)."""


def oauth(**overrides: Any) -> OAuth1:
    """The sandbox user's signer; `overrides` replace any OAuth1 argument (e.g. timestamp)."""
    args: dict[str, Any] = {
        "client_key": credentials.CONSUMER_KEY,
        "client_secret": credentials.CONSUMER_SECRET,
        "resource_owner_key": credentials.ACCESS_TOKEN,
        "resource_owner_secret": credentials.ACCESS_TOKEN_SECRET,
    }
    return OAuth1(**{**args, **overrides})


VERIFY_CREDENTIALS = "https://api.twitter.com/1.1/account/verify_credentials.json"


def echo(
    provider: str = VERIFY_CREDENTIALS, signed_url: str | None = None, **overrides: Any
) -> dict[str, str]:
    """OAuth Echo headers as protocols.md 3.2 builds them: the Authorization a GET of
    `signed_url` (default: the provider URL) would carry; `overrides` go to the Client."""
    args: dict[str, Any] = {
        "client_key": credentials.CONSUMER_KEY,
        "client_secret": credentials.CONSUMER_SECRET,
        "resource_owner_key": credentials.ACCESS_TOKEN,
        "resource_owner_secret": credentials.ACCESS_TOKEN_SECRET,
        "realm": "http://api.twitter.com/",
    }
    _, headers, _ = Client(**{**args, **overrides}).sign(signed_url or provider, http_method="GET")
    return {
        "X-Auth-Service-Provider": provider,
        "X-Verify-Credentials-Authorization": headers["Authorization"],
    }


class Box:
    """A running sandbox plus a keep-alive HTTP session with a timeout on every call."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = requests.Session()

    def call(self, method: str, path: str, *, signed: bool = True, **kw: Any) -> requests.Response:
        kw.setdefault("timeout", TIMEOUT)
        kw.setdefault("allow_redirects", False)  # a 308 is TON's "resume incomplete"
        if signed:
            kw.setdefault("auth", oauth())
        target = path if path.startswith("http") else self.url + path
        return self.http.request(method, target, **kw)

    # -- control API ----------------------------------------------------------------

    def get(self, path: str) -> Any:
        reply = self.call("GET", f"/_sandbox/{path}", signed=False)
        assert reply.status_code == 200, reply.text
        return reply.json()

    def post(self, path: str, body: Any) -> Any:
        reply = self.call("POST", f"/_sandbox/{path}", signed=False, json=body)
        assert reply.status_code == 200, reply.text
        return reply.json()

    def settings(self, **ton: Any) -> None:
        self.post("settings", {"ton": ton})

    def fault(self, **spec: Any) -> int:
        fault_id: int = self.post("faults", spec)["id"]
        return fault_id

    def session(self, location: str) -> dict[str, Any]:
        (found,) = [s for s in self.get("ton/sessions") if s["location"] == location]
        return dict(found)

    # -- TON as a client speaks it (protocols.md 2) ---------------------------------

    def expires(self, days: float = 7) -> str:
        return formatdate(self.get("clock")["now"] + days * 86400, usegmt=True)

    def ton_post(
        self, data: Any, bucket: str = "syncd", media: str = "application/octet-stream", **h: str
    ) -> requests.Response:
        headers = {"Content-Type": media, **h}
        return self.call("POST", f"/1.1/ton/bucket/{bucket}", data=data, headers=headers)

    def ton_init(self, total: int, bucket: str = "syncd", media: str = "video/mp4") -> str:
        reply = self.call(
            "POST",
            f"/1.1/ton/bucket/{bucket}?resumable=true",
            data=b"",
            headers={
                "Content-Type": media,
                "X-TON-Content-Type": media,
                "X-TON-Content-Length": str(total),
                "X-TON-Expires": self.expires(),
            },
        )
        assert reply.status_code == 201, reply.text
        return reply.headers["Location"]

    def ton_put(
        self, location: str, data: bytes, first: int, total: int, media: str = "video/mp4"
    ) -> requests.Response:
        span = f"{first}-{first + len(data) - 1}" if data else "*"
        headers = {"Content-Type": media, "Content-Range": f"bytes {span}/{total}"}
        return self.call("PUT", location, data=data, headers=headers)
