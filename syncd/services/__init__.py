"""One module per service type, each behind the Uploader protocol of `base`."""

from __future__ import annotations

from syncd.config import ServiceConfig, TonService
from syncd.http import ServiceHttp
from syncd.services.base import Uploader
from syncd.services.ton import TonUploader


def make_uploader(config: ServiceConfig) -> Uploader:
    """The uploader for a configured service; each owns its HTTP session."""
    http = ServiceHttp(config.name)
    if isinstance(config, TonService):
        return TonUploader(config, http)
    raise NotImplementedError(f"service type {config.type!r} is not available yet")
