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
from syncd.services.http import RequestObserver, ServiceHttp
from syncd.services.oauth import echo_headers

NUMBERS = ("width", "height", "size")


def _number(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class TwitPicUploader:
    def __init__(self, config: TwitPicService, observe: RequestObserver | None = None) -> None:
        self.config = config
        self.http = ServiceHttp(config.name, observe=observe)
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
        if not isinstance(data, dict) or not data.get("id") or not data.get("url"):
            raise PermanentError(f"{self.config.name}: TwitPic answered 200 without an id and url")
        result: Result = {"id": str(data["id"]), "url": str(data["url"])}
        for key in NUMBERS:
            number = _number(data.get(key))
            if number is not None:
                result[key] = number
        if data.get("type"):
            result["type"] = str(data["type"])
        return result
