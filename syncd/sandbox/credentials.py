"""The sandbox's fixed test credentials: the only accounts and keys its emulators accept.

They are public on purpose (the sandbox prints them on start), so a machine with no real
credentials can run syncd end to end. Nothing here is a secret of any real service.
"""

# ruff: noqa: S105 (fixed, published test credentials are the point of this module)

from __future__ import annotations

from dataclasses import dataclass

CONSUMER_KEY = "sandboxConsumerKey0000001"
"""The Twitter app's OAuth 1.0a consumer key."""
CONSUMER_SECRET = "sandboxConsumerSecret00000000000000000000000001"
"""The consumer secret that signs with CONSUMER_KEY."""
ACCESS_TOKEN = "1000000001-sandboxAccessToken000000000000000001"
"""The one user's access token; Twitter prefixes tokens with the user id."""
ACCESS_TOKEN_SECRET = "sandboxAccessTokenSecret000000000000000000001"
"""The secret that signs with ACCESS_TOKEN."""


@dataclass(frozen=True, slots=True)
class TwitterUser:
    """The identity an access token stands for."""

    id: str
    """As `id_str`: user ids are strings on the wire that syncd records."""
    screen_name: str
    name: str


USER = TwitterUser(id="1000000001", screen_name="syncd_demo", name="syncd demo")
"""The fixed Twitter user behind ACCESS_TOKEN."""

CONSUMERS: dict[str, str] = {CONSUMER_KEY: CONSUMER_SECRET}
"""consumer key -> consumer secret."""
TOKENS: dict[str, tuple[str, TwitterUser]] = {ACCESS_TOKEN: (ACCESS_TOKEN_SECRET, USER)}
"""access token -> (token secret, user)."""

TON_BUCKET_TA_PARTNER = "ta_partner"
"""Whitelisted; like the real Tailored Audiences bucket it requires X-TON-Expires."""
TON_BUCKET_SYNCD = "syncd"
"""Whitelisted; X-TON-Expires optional (objects then never expire)."""
TON_BUCKET_FORBIDDEN = "forbidden"
"""Known but not whitelisted for the app: 403 with an empty body (protocols.md 2.7)."""
TON_BUCKETS: dict[str, bool] = {
    TON_BUCKET_TA_PARTNER: True,
    TON_BUCKET_SYNCD: True,
    TON_BUCKET_FORBIDDEN: False,
}
"""bucket -> whitelisted. Any other bucket name is unknown: 400 (protocols.md 2.7)."""
TON_BUCKETS_REQUIRING_EXPIRES = frozenset({TON_BUCKET_TA_PARTNER})
"""Buckets where a missing X-TON-Expires is refused with 403 (protocols.md 8)."""

TWITPIC_API_KEY = "sandbox-twitpic-api-key-0001"
"""Reserved for the TwitPic emulator: the `key` form field it accepts."""
TWITLONGER_API_KEY = "sandbox-twitlonger-api-key-0001"
"""Reserved for the TwitLonger emulator: the X-API-KEY it accepts."""
ONEALL_PUBLIC_KEY = "sandbox-oneall-public-key-0001"
"""Reserved for the OneAll emulator: the HTTP Basic user name."""
ONEALL_PRIVATE_KEY = "sandbox-oneall-private-key-0001"
"""Reserved for the OneAll emulator: the HTTP Basic password."""
ONEALL_IDENTITY_TOKEN = "sandbox-oneall-identity-token-0001"
"""Reserved for the OneAll emulator: the one identity_token it knows."""

WEBHOOK_SECRET = "sandbox-webhook-secret-0001"
"""The webhook receiver's shared secret: a syncd [[webhook]] signs with it (secret_file)."""
