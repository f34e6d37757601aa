"""OAuth 1.0a for Twitter user context, and OAuth Echo headers for TwitPic and TwitLonger.

requests-oauthlib signs at the moment a request is prepared, so every attempt carries a
fresh nonce and timestamp. It signs a body only when its Content-Type says form, which is
what Twitter wants: binary and multipart bodies are never part of the signature.
"""

from __future__ import annotations

from oauthlib.oauth1 import Client
from requests_oauthlib import OAuth1

from syncd.config import Account

ECHO_REALM = "http://api.twitter.com/"
"""Unsigned (RFC 5849 3.4.1.3.1); the value Twitter's OAuth Echo examples use."""


def user_auth(account: Account) -> OAuth1:
    """Signs each request it is attached to with the account's user context."""
    return OAuth1(
        account.consumer_key,
        client_secret=account.consumer_secret,
        resource_owner_key=account.access_token,
        resource_owner_secret=account.access_token_secret,
    )


def echo_headers(account: Account, provider_url: str) -> dict[str, str]:
    """A fresh delegation: the header we would send for a GET of `provider_url`.

    Nothing is sent to Twitter; the delegator (TwitPic, TwitLonger) replays it.
    """
    client = Client(
        account.consumer_key,
        client_secret=account.consumer_secret,
        resource_owner_key=account.access_token,
        resource_owner_secret=account.access_token_secret,
        realm=ECHO_REALM,
    )
    _, headers, _ = client.sign(provider_url, http_method="GET")
    return {
        "X-Auth-Service-Provider": provider_url,
        "X-Verify-Credentials-Authorization": headers["Authorization"],
    }
