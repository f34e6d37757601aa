"""OAuth 1.0a verification, server side, with oauthlib's signature functions (protocols.md 3.3).

Deliberately not the client's signing code: the sandbox rebuilds the base string from what
arrived on the wire (method, the URL with its query as the client sent it, the Host it
sent, form parameters only for a form body) so a client that signs something else fails.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from oauthlib.common import Request
from oauthlib.oauth1.rfc5849 import signature

from syncd.sandbox.credentials import CONSUMERS, TOKENS, TwitterUser
from syncd.sandbox.web import Exchange, twitter_error

TIMESTAMP_WINDOW = 300.0
"""Allowed clock skew in seconds: Twitter's is undocumented, "about 5 minutes" [INF]
(protocols.md 1)."""

BAD_AUTH = (32, "Could not authenticate you.")
STALE_TIMESTAMP = (135, "Timestamp out of bounds.")


ECHO_PROVIDER = "X-Auth-Service-Provider"
ECHO_AUTHORIZATION = "X-Verify-Credentials-Authorization"
"""OAuth Echo's two headers (protocols.md 3.1); header names are case-insensitive."""


def echo_headers(ex: Exchange) -> tuple[str | None, str | None]:
    """(provider URL, authorization) of an OAuth Echo request; None for a missing one."""
    return ex.header(ECHO_PROVIDER), ex.header(ECHO_AUTHORIZATION)


def provider_is(provider: str, accepted: Iterable[str]) -> bool:
    """Whether `provider` is one of the `accepted` identity URLs. Its query is not compared:
    extra parameters are honoured (protocols.md 3.1, 5), and signed, so the signature is
    still checked over the URL exactly as sent."""
    parts = urlsplit(provider)
    bare = f"{parts.scheme}://{parts.netloc}{parts.path}"
    return not parts.fragment and bare in accepted


class AuthError(Exception):
    """A request that does not authenticate, with Twitter's error code for it."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class OAuthVerifier:
    """Checks signatures against the fixed credentials, the timestamp window on the sandbox
    clock, and nonce reuse: a `(consumer_key, nonce, timestamp)` is accepted once."""

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self._seen: dict[tuple[str, str, str], float] = {}
        self._prune_at = 1024
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self._seen.clear()

    def authenticate(self, ex: Exchange) -> TwitterUser:
        """The user behind an OAuth-signed request, or 401 with Twitter's error body."""
        try:
            return self.verify(ex.method, ex.url, ex.header("Authorization"), ex.form_text())
        except AuthError as exc:
            raise twitter_error(401, exc.code, exc.message) from None

    def verify_echo(self, provider_url: str, authorization: str | None) -> TwitterUser:
        """Verify an OAuth Echo `X-Verify-Credentials-Authorization` offline, as the GET of
        `provider_url` it was signed for (protocols.md 3.1, 3.3). Checking that the provider
        URL is one the delegator trusts is the caller's job."""
        return self.verify("GET", provider_url, authorization, "")

    def verify(
        self, method: str, url: str, authorization: str | None, form_body: str
    ) -> TwitterUser:
        """The user a request was signed for; `form_body` is "" unless the body is a form."""
        if not authorization:
            raise AuthError(*BAD_AUTH)
        try:
            oauth = dict(
                signature.collect_parameters(
                    headers={"Authorization": authorization}, exclude_oauth_signature=False
                )
            )
            params = signature.collect_parameters(
                uri_query=urlsplit(url).query,
                body=form_body,
                headers={"Authorization": authorization},
            )
            request = Request(url, http_method=method)
        except ValueError:
            raise AuthError(*BAD_AUTH) from None
        consumer_secret = CONSUMERS.get(oauth.get("oauth_consumer_key", ""))
        token = TOKENS.get(oauth.get("oauth_token", ""))
        if (
            consumer_secret is None
            or token is None
            or oauth.get("oauth_signature_method") != "HMAC-SHA1"
            or oauth.get("oauth_version", "1.0") != "1.0"
        ):
            raise AuthError(*BAD_AUTH)
        token_secret, user = token
        request.params = params
        request.signature = oauth.get("oauth_signature", "")
        if not signature.verify_hmac_sha1(request, consumer_secret, token_secret):
            raise AuthError(*BAD_AUTH)
        self._check_fresh(oauth)
        return user

    def _check_fresh(self, oauth: dict[str, str]) -> None:
        stamp = oauth.get("oauth_timestamp", "")
        nonce = oauth.get("oauth_nonce", "")
        if not stamp.isdigit() or not nonce:
            raise AuthError(*BAD_AUTH)
        now = self._now()
        if abs(now - int(stamp)) > TIMESTAMP_WINDOW:
            raise AuthError(*STALE_TIMESTAMP)
        key = (oauth["oauth_consumer_key"], nonce, stamp)
        with self._lock:
            if key in self._seen:
                raise AuthError(*BAD_AUTH)
            self._seen[key] = int(stamp)
            if len(self._seen) >= self._prune_at:
                # A nonce older than the window fails the timestamp check anyway.
                horizon = now - TIMESTAMP_WINDOW
                self._seen = {k: t for k, t in self._seen.items() if t >= horizon}
                self._prune_at = max(1024, 2 * len(self._seen))
