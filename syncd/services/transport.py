"""One request on the wire, through urllib3's pools: what requests' Session did for us,
and only that.

requests prepared, merged and post-processed every request (settings and cookie merges,
hooks, run-time Protocol checks, an `isdir` of the CA bundle, cookie extraction from the
reply): over half of the CPU of a small file's POST, most of what a small file costs the
daemon. syncd sends a few kinds of request to a few configured origins, so it builds them
as requests built them, and the wire stays the same:
- the same default headers, in the same order, the caller's after them;
- `Content-Length` whenever the body's length is known (`0` for a POST or PUT without a
  body), chunked only for a stream whose length is not;
- forms and JSON encoded as requests encodes them, `Content-Type` set unless given;
- header names and values checked as requests checks them (an error never quotes one);
- the environment's proxies (never for loopback), TLS verified against certifi's bundle or
  the one REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE names.
No redirect is followed and nothing is retried here (http.py says why).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

import certifi
from urllib3 import BaseHTTPResponse, HTTPHeaderDict, PoolManager, Timeout
from urllib3.util import make_headers

from syncd import __version__
from syncd.config.values import is_loopback
from syncd.services.base import Sign
from syncd.services.deadline import pools, proxied_pools
from syncd.services.loading import load
from syncd.services.metering import length_of
from syncd.services.oauth import FORM

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 120.0
"""Between two socket operations, sending included: a chunk that stalls this long fails."""
POOL_SIZE = 16
"""Connections kept per origin: more than any service's workers."""
DEFAULT_HEADERS = {
    "User-Agent": f"syncd/{__version__}",
    "Accept-Encoding": "identity",
    "Accept": "*/*",
    "Connection": "keep-alive",
}
TIMEOUT = Timeout(connect=CONNECT_TIMEOUT, read=READ_TIMEOUT)
_NAME = re.compile(r"[^:\s][^:\r\n]*")
_VALUE = re.compile(r"(?:\S[^\r\n]*)?")
_BODILESS = ("GET", "HEAD")


class InvalidHeader(ValueError):
    """A header name or value HTTP does not allow (which one is never said: it may be a
    credential)."""


class UnsupportedUrl(ValueError):
    """A URL that is not http:// or https:// with a host."""


def basic_auth(user: str, password: str) -> Sign:
    """HTTP Basic authentication (OneAll's keys). The header is made at each request, so a
    key that cannot be sent fails that request, as any header HTTP does not allow does."""
    return lambda method, url, form: make_headers(basic_auth=f"{user}:{password}")["authorization"]


def _verify_settings() -> dict[str, str]:
    """TLS always verified: against the bundle the environment names, else certifi's."""
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    bundle = bundle or certifi.where()
    where = "ca_cert_dir" if os.path.isdir(bundle) else "ca_certs"
    return {"cert_reqs": "CERT_REQUIRED", where: bundle}


class Transport:
    """The pools of one service: direct, and one a proxy the environment names."""

    def __init__(self) -> None:
        self._settings: dict[str, Any] = {"maxsize": POOL_SIZE, **_verify_settings()}
        self._direct = pools(**self._settings)
        self._proxied: dict[str, PoolManager] = {}
        self._routes: dict[str, PoolManager] = {}
        """Each origin's pools, chosen once: the environment of a daemon does not change."""

    def close(self) -> None:
        for manager in (self._direct, *self._proxied.values()):
            manager.clear()

    def open(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        data: Any,
        json_body: Any,
        auth: Sign | None,
    ) -> BaseHTTPResponse:
        """Send the request; the reply's head is read, its body is left to stream."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UnsupportedUrl(f"cannot send to {url[:200]!r}: not an http(s) URL with a host")
        sent = HTTPHeaderDict(DEFAULT_HEADERS)
        for name, value in (headers or {}).items():
            _check(name, value)
            sent[name] = value
        body, content_type, form = _encoded(data, json_body)
        length = length_of(body) if body is not None else 0
        chunked = False
        if length:
            sent["Content-Length"] = str(length)
        elif body is not None and not isinstance(body, bytes) and length is None:
            sent["Transfer-Encoding"] = "chunked"
            chunked = True
        elif method not in _BODILESS:
            sent["Content-Length"] = "0"
        if content_type is not None and "Content-Type" not in sent:
            sent["Content-Type"] = content_type
        if auth is not None:
            signed = (form or "") if FORM in sent.get("Content-Type", "") else None
            sent["Authorization"] = auth(method, url, signed)
        return self._route(parts.scheme, parts.netloc, parts.hostname).urlopen(
            method,
            url,
            body=body,
            headers=sent,
            redirect=False,
            retries=False,
            timeout=TIMEOUT,
            preload_content=False,
            decode_content=False,
            chunked=chunked,
        )

    def _route(self, scheme: str, netloc: str, host: str) -> PoolManager:
        origin = f"{scheme}://{netloc}"
        route = self._routes.get(origin)
        if route is None:
            proxy = None if is_loopback(host) else _environ_proxy(origin)
            route = self._direct if proxy is None else self._proxied_through(proxy)
            self._routes[origin] = route
        return route

    def _proxied_through(self, proxy: str) -> PoolManager:
        if proxy not in self._proxied:
            if proxy.lower().startswith("socks"):
                raise UnsupportedUrl("SOCKS proxies are not supported: name an HTTP(S) proxy")
            user, password = load("requests.utils").get_auth_from_url(proxy)
            settings = dict(self._settings)
            if user:
                credentials = make_headers(proxy_basic_auth=f"{user}:{password}")
                settings["proxy_headers"] = {
                    "Proxy-Authorization": credentials["proxy-authorization"]
                }
            self._proxied[proxy] = proxied_pools(proxy, **settings)
        return self._proxied[proxy]


def _environ_proxy(origin: str) -> str | None:
    """The proxy the environment names for `origin` (NO_PROXY heeded), as requests reads
    the environment."""
    utils = load("requests.utils")
    proxy: str | None = utils.select_proxy(origin, utils.get_environ_proxies(origin))
    return utils.prepend_scheme_if_needed(proxy, "http") if proxy else None


def _check(name: str, value: str) -> None:
    if not isinstance(name, str) or not isinstance(value, str):
        raise InvalidHeader("a header name or value that is not text")
    if not _NAME.fullmatch(name) or not _VALUE.fullmatch(value):
        raise InvalidHeader("a header name or value with a character HTTP does not allow")


def _encoded(data: Any, json_body: Any) -> tuple[Any, str | None, str | None]:
    """(the body, the Content-Type it implies, the body as text when it is a form)."""
    if json_body is not None and not data:
        return json.dumps(json_body, allow_nan=False).encode(), "application/json", None
    if isinstance(data, Mapping):
        form = urlencode([(k, v) for k, v in data.items() if v is not None], doseq=True)
        return form.encode(), FORM, form
    return data, None, None
