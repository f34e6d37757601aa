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
from syncd.services.http import HttpLimits
from syncd.services.oneall.signer import Signer
from syncd.services.oneall.uploader import OneAllUploader
from syncd.services.ton import TonUploader
from syncd.services.twitlonger import TwitLongerUploader
from syncd.services.twitpic import TwitPicUploader


def make_uploader(
    config: ServiceConfig, signer: Signer | None, limits: HttpLimits | None = None
) -> Uploader:
    """The uploader for a configured service; each owns its HTTP session."""
    if isinstance(config, TonService):
        return TonUploader(config, limits)
    if isinstance(config, TwitPicService):
        return TwitPicUploader(config, limits)
    if isinstance(config, TwitLongerService):
        return TwitLongerUploader(config, limits)
    if isinstance(config, OneAllService):
        if signer is None:
            raise SyncdError(f"[services.{config.name}]: oneall needs a [media_server] table")
        return OneAllUploader(config, signer, limits)
    raise SyncdError(f"[services.{config.name}] type: unknown service type {config.type!r}")
