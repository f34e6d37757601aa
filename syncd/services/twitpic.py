"""TwitPic v2 `upload.json`: one multipart POST, authenticated by OAuth Echo.

The body is streamed from the file (requests-toolbelt's MultipartEncoder), so memory does
not grow with the file; the echo header is signed afresh for every attempt. Numbers in
the reply may come back as strings (protocols.md section 4): they are read leniently.
"""

from __future__ import annotations

from typing import Any

from requests_toolbelt import MultipartEncoder, MultipartEncoderMonitor

from syncd.config import TwitPicService
from syncd.errors import PermanentError
from syncd.services.base import Job, Result
from syncd.services.http import HttpLimits, RequestObserver, ServiceHttp, dig, text_of
from syncd.services.oauth import echo_headers

NUMBERS = ("width", "height", "size")


def _number(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    try:
        return int(value)
    except ValueError:
        return None


class TwitPicUploader:
    def __init__(
        self,
        config: TwitPicService,
        limits: HttpLimits | None = None,
        observe: RequestObserver | None = None,
    ) -> None:
        self.config = config
        self.http = ServiceHttp(config.name, limits=limits, observe=observe)
        self.url = f"{config.endpoint}/2/upload.json"

    def still_valid(self, result: Result) -> bool:
        return True

    def upload(self, job: Job) -> Result:
        job.file.seek(0)
        message = job.caption if job.caption is not None else self.config.message
        encoder = MultipartEncoder(
            fields={
                "key": self.config.api_key,
                "message": message,
                "media": (job.path.name, job.file, job.media_type),
            }
        )
        body = MultipartEncoderMonitor(encoder, lambda m: job.progress(min(m.bytes_read, job.size)))
        reply = self.http.send(
            "POST",
            self.url,
            expect=(200,),
            headers={
                "Content-Type": body.content_type,
                **echo_headers(self.config.account, self.config.verify_credentials_url),
            },
            data=body,
        )
        data = reply.json()
        photo_id, url = text_of(dig(data, "id")), text_of(dig(data, "url"), 2048)
        if photo_id is None or url is None:
            raise PermanentError(f"{self.config.name}: TwitPic answered 200 without an id and url")
        result: Result = {"id": photo_id, "url": url}
        for key in NUMBERS:
            number = _number(dig(data, key))
            if number is not None:
                result[key] = number
        kind = text_of(dig(data, "type"))
        if kind is not None:
            result["type"] = kind
        return result
