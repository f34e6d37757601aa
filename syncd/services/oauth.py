"""OAuth 1.0a for Twitter user context, and OAuth Echo headers for TwitPic and TwitLonger.

Each attempt at a request is signed when it is sent, so every attempt carries a fresh nonce
and timestamp. A body is signed only when it is a form, which is what Twitter wants: binary
and multipart bodies are never part of the signature.

A user-context request is signed with oauthlib's own steps (collect, normalise, base
string, HMAC-SHA1, header), not through its `Client.sign`, which builds and checks a whole
request object first: half the signature's CPU, for every small file
(tests/test_oauth.py holds the two to the same header).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from oauthlib.common import generate_nonce, generate_timestamp
from oauthlib.oauth1 import Client
from oauthlib.oauth1.rfc5849 import parameters, signature

from syncd.config import Account
from syncd.services.base import Sign

ECHO_REALM = "http://api.twitter.com/"
"""Unsigned (RFC 5849 3.4.1.3.1); the value Twitter's OAuth Echo examples use."""
FORM = "application/x-www-form-urlencoded"


def _client(account: Account, realm: str | None = None) -> Client:
    return Client(
        account.consumer_key,
        client_secret=account.consumer_secret,
        resource_owner_key=account.access_token,
        resource_owner_secret=account.access_token_secret,
        realm=realm,
    )


def user_auth(account: Account) -> Sign:
    """Signs each request it is given with the account's user context."""
    keys = _client(account)

    def sign(method: str, url: str, form: str | None) -> str:
        oauth = [
            ("oauth_nonce", generate_nonce()),
            ("oauth_timestamp", generate_timestamp()),
            ("oauth_version", "1.0"),
            ("oauth_signature_method", "HMAC-SHA1"),
            ("oauth_consumer_key", account.consumer_key),
            ("oauth_token", account.access_token),
        ]
        signed = signature.collect_parameters(urlsplit(url).query, form or None) + oauth
        base = signature.signature_base_string(
            method.upper(),
            signature.base_string_uri(url),
            signature.normalize_parameters(signed),
        )
        digest = signature.sign_hmac_sha1_with_client(base, keys)
        header: str = parameters.prepare_headers([*oauth, ("oauth_signature", digest)])[
            "Authorization"
        ]
        return header

    return sign


def echo_headers(account: Account, provider_url: str) -> dict[str, str]:
    """A fresh delegation: the header we would send for a GET of `provider_url`.

    Nothing is sent to Twitter; the delegator (TwitPic, TwitLonger) replays it.
    """
    _, headers, _ = _client(account, ECHO_REALM).sign(provider_url, http_method="GET")
    return {
        "X-Auth-Service-Provider": provider_url,
        "X-Verify-Credentials-Authorization": headers["Authorization"],
    }
