"""One module per service type, each behind the Uploader protocol of `base`.

A service module, and what it imports (urllib3, OAuth, the multipart encoder),
is loaded when its first upload starts, not when the daemon starts: the imports take
longer than a restart's whole scan of tens of thousands of done files.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from syncd.config import (
    OneAllService,
    ServiceConfig,
    TonService,
    TwitLongerService,
    TwitPicService,
)
from syncd.errors import SyncdError
from syncd.services.base import AwaitCallback, HttpLimits, Job, RequestObserver, Result, Uploader
from syncd.services.loading import load

if TYPE_CHECKING:  # loaded with [media_server] only
    from syncd.services.oneall.signer import Signer


def make_uploader(
    config: ServiceConfig,
    signer: Signer | None,
    limits: HttpLimits | None = None,
    observe: RequestObserver | None = None,
) -> Uploader:
    """The uploader for a configured service; each owns its HTTP session. `observe` is told
    the status of every reply (metrics), so no service needs to know who is counting. The
    configuration is checked now, the uploader itself built at its first use."""
    if isinstance(config, OneAllService) and signer is None:
        raise SyncdError(f"[services.{config.name}]: oneall needs a [media_server] table")
    if not isinstance(config, TonService | TwitPicService | TwitLongerService | OneAllService):
        raise SyncdError(f"[services.{config.name}] type: unknown service type {config.type!r}")
    return _Deferred(lambda: _build(config, signer, limits, observe))


def ready(uploader: Uploader) -> Uploader:
    """`uploader`, built now if `make_uploader` deferred it: a row says `uploading` only
    once its service is ready to send (OneAll may call back as soon as it is asked)."""
    return uploader.built() if isinstance(uploader, _Deferred) else uploader


def _build(
    config: ServiceConfig,
    signer: Signer | None,
    limits: HttpLimits | None,
    observe: RequestObserver | None,
) -> Uploader:
    uploader: Uploader
    if isinstance(config, TonService):
        uploader = load("syncd.services.ton").TonUploader(config, limits, observe)
    elif isinstance(config, TwitPicService):
        uploader = load("syncd.services.twitpic").TwitPicUploader(config, limits, observe)
    elif isinstance(config, TwitLongerService):
        uploader = load("syncd.services.twitlonger").TwitLongerUploader(config, limits, observe)
    else:
        assert isinstance(config, OneAllService) and signer is not None, "checked by make_uploader"
        oneall = load("syncd.services.oneall.uploader")
        uploader = oneall.OneAllUploader(config, signer, limits, observe)
    return uploader


class _Deferred:
    """An Uploader that builds the real one, once, when it is first asked to work."""

    def __init__(self, build: Callable[[], Uploader]) -> None:
        self._build = build
        self._lock = threading.Lock()
        self._built: Uploader | None = None

    def built(self) -> Uploader:
        with self._lock:
            if self._built is None:
                self._built = self._build()
            return self._built

    def upload(self, job: Job) -> Result | AwaitCallback:
        return self.built().upload(job)

    def still_valid(self, result: Result) -> bool:
        return self.built().still_valid(result)
