"""One module per service type, each behind the Uploader protocol of `base`."""

from __future__ import annotations

from syncd.config import (
    OneAllService,
    ServiceConfig,
    TonService,
    TwitLongerService,
    TwitPicService,
)
from syncd.errors import SyncdError
from syncd.services.base import Uploader
from syncd.services.http import HttpLimits, RequestObserver
from syncd.services.oneall.signer import Signer
from syncd.services.oneall.uploader import OneAllUploader
from syncd.services.ton import TonUploader
from syncd.services.twitlonger import TwitLongerUploader
from syncd.services.twitpic import TwitPicUploader


def make_uploader(
    config: ServiceConfig,
    signer: Signer | None,
    limits: HttpLimits | None = None,
    observe: RequestObserver | None = None,
) -> Uploader:
    """The uploader for a configured service; each owns its HTTP session. `observe` is told
    the status of every reply (metrics), so no service needs to know who is counting."""
    if isinstance(config, TonService):
        return TonUploader(config, limits, observe)
    if isinstance(config, TwitPicService):
        return TwitPicUploader(config, limits, observe)
    if isinstance(config, TwitLongerService):
        return TwitLongerUploader(config, limits, observe)
    if isinstance(config, OneAllService):
        if signer is None:
            raise SyncdError(f"[services.{config.name}]: oneall needs a [media_server] table")
        return OneAllUploader(config, signer, limits, observe)
    raise SyncdError(f"[services.{config.name}] type: unknown service type {config.type!r}")
