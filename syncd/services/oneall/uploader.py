"""OneAll Push API: a picture or a video to the identity's Twitter account, by URL.

OneAll downloads the file from syncd's media server (a signed, expiring URL for this one
file). A picture's `picture_id` comes back at once; a video is queued and its `video_id`
arrives later at a signed callback URL, so the upload ends in `AwaitCallback`
(protocols.md section 6). The documented limits are checked before any request: a
picture at most 5 MiB in jpeg, bmp, png, gif or tiff, a video in one of the listed
formats, both told by their first bytes rather than their names.
"""

from __future__ import annotations

import time
from typing import Any

from requests.auth import HTTPBasicAuth

from syncd.config import OneAllService
from syncd.errors import PermanentError
from syncd.services.base import AwaitCallback, Job, Result
from syncd.services.http import ServiceHttp
from syncd.services.oneall.signing import Signer

PICTURE_MAX = 5 * 1024 * 1024
"""5 MB in the 1024-based units the TON document uses (protocols.md, syncd's choices)."""
PICTURE_URL_LIFETIME = 3600.0
"""OneAll fetches a picture while we wait for its answer; an hour is ample."""
URL_MARGIN = 3600.0
"""A video's URLs outlive its callback deadline by this much."""
SNIFF = 16


def picture_format(head: bytes) -> str | None:
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith(b"BM"):
        return "bmp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    return None


def video_format(head: bytes) -> str | None:
    """3gpp, avi, flv, mov, mpeg4, mpegps, webm or wmv (seed 002), by their signatures."""
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        return "3gpp" if brand.startswith(b"3g") else "mov" if brand == b"qt  " else "mpeg4"
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip"):
        return "mov"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "avi"
    if head.startswith(b"FLV"):
        return "flv"
    if head.startswith(b"\x00\x00\x01\xba"):
        return "mpegps"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "webm"
    if head.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"):
        return "wmv"
    return None


def callback_outcome(data: dict[str, Any]) -> Result | str:
    """A callback's envelope: the video's result, or OneAll's reason for failing it."""
    response = data.get("response") if isinstance(data.get("response"), dict) else {}
    status = response.get("request", {}).get("status", {}) if isinstance(response, dict) else {}
    if isinstance(status, dict) and status.get("flag") == "error":
        return str(status.get("info") or f"error {status.get('code', '?')}")
    result = response.get("result", {}) if isinstance(response, dict) else {}
    found = result.get("data", {}) if isinstance(result, dict) else {}
    if isinstance(found, dict) and found.get("video_id"):
        outcome: Result = {"video_id": str(found["video_id"])}
        if found.get("date_creation"):
            outcome["date_creation"] = str(found["date_creation"])
        return outcome
    return "the callback carried neither a video_id nor an error"


class OneAllUploader:
    def __init__(self, config: OneAllService, signer: Signer) -> None:
        self.config = config
        self.signer = signer
        self.http = ServiceHttp(config.name)
        self.auth = HTTPBasicAuth(config.public_key, config.private_key)
        self.base = f"{config.endpoint}/push/identities/{config.identity_token}/twitter"

    def still_valid(self, result: Result) -> bool:
        """A picture_id lives 24 h unattached; a duplicate must not reuse a stale one."""
        return "video_id" in result

    def upload(self, job: Job) -> Result | AwaitCallback:
        job.file.seek(0)
        head = job.file.read(SNIFF)
        picture = picture_format(head)
        if picture is not None:
            if job.size > PICTURE_MAX:
                raise PermanentError(
                    f"{job.path.name}: {job.size} bytes is over OneAll's 5 MB picture limit"
                )
            return self._picture(job)
        if video_format(head) is not None:
            return self._video(job)
        raise PermanentError(
            f"{job.path.name}: not a picture OneAll takes (jpeg, bmp, png, gif, tiff) nor a"
            " video (3gpp, avi, flv, mov, mpeg4, mpegps, webm, wmv)"
        )

    def _push(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        reply = self.http.send(
            "POST",
            f"{self.base}/{kind}.json",
            expect=(200, 201),
            auth=self.auth,
            json_body={"request": {"push": {kind: body}}},
        )
        data = reply.json()
        response = data.get("response") if isinstance(data, dict) else None
        if not isinstance(response, dict):
            raise PermanentError(f"{self.config.name}: OneAll answered without an envelope")
        return response

    def _picture(self, job: Job) -> Result:
        url = self.signer.media_url(job.row_id, job.path.name, time.time() + PICTURE_URL_LIFETIME)
        body: dict[str, Any] = {"url": url}
        if job.caption:
            body["description"] = job.caption
        response = self._push("picture", body)
        found = response.get("result", {}).get("data", {})
        if not isinstance(found, dict) or not found.get("picture_id"):
            raise PermanentError(f"{self.config.name}: OneAll answered without a picture_id")
        job.progress(job.size)
        result: Result = {"picture_id": str(found["picture_id"])}
        if found.get("expires_in") is not None:
            result["expires_in"] = str(found["expires_in"])
        return result

    def _video(self, job: Job) -> AwaitCallback:
        deadline = time.time() + self.config.callback_timeout
        expires = deadline + URL_MARGIN
        body: dict[str, Any] = {
            "video_url": self.signer.media_url(job.row_id, job.path.name, expires),
            "callback_url": self.signer.callback_url(job.row_id, expires),
        }
        self._push("video", body)
        job.progress(job.size)
        return AwaitCallback(deadline)
