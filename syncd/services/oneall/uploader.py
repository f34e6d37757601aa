"""OneAll Push API: a picture or a video to the identity's Twitter account, by URL.

OneAll downloads the file from syncd's media server (a signed, expiring URL for this one
file). A picture's `picture_id` comes back at once; a video is queued and its `video_id`
arrives later at a signed callback URL, so the upload ends in `AwaitCallback`
(protocols.md section 6). The documented limits are checked before any request: a
picture at most 5 MiB in jpeg, bmp, png, gif or tiff, a video in one of the listed
formats, both told by their first bytes rather than their names.
"""

from __future__ import annotations

import re
import time
from typing import Any

from syncd.config import OneAllService
from syncd.errors import PermanentError
from syncd.services.base import AwaitCallback, Job, Result
from syncd.services.http import (
    HttpLimits,
    RequestObserver,
    ServiceHttp,
    dig,
    one_line,
    text_of,
)
from syncd.services.oneall.formats import SNIFF, picture_format, url_name, video_format
from syncd.services.oneall.signer import Signer
from syncd.services.transport import basic_auth

PICTURE_MAX = 5 * 1024 * 1024
"""5 MB in the 1024-based units the TON document uses (protocols.md, syncd's choices)."""
PICTURE_URL_LIFETIME = 3600.0
"""OneAll fetches a picture while we wait for its answer; an hour is ample."""
URL_MARGIN = 3600.0
"""A video's URLs outlive its callback deadline by this much."""
PUSH = "push"
"""The key in a row's progress that counts its pushes: URLs name the push they were made
for, so those of an earlier push (an earlier attempt, an earlier version) are refused."""
VIDEO_ID = re.compile(r"[0-9]{1,32}")


def callback_outcome(data: Any) -> Result | str | None:
    """A callback's envelope: the video's result, OneAll's reason for failing it, or None
    when it is neither (nothing is then stored, and the sender is answered 400)."""
    status = dig(data, "response", "request", "status")
    flag = dig(status, "flag")
    if flag == "error":
        info, code = dig(status, "info"), dig(status, "code")
        reason = one_line(info) if isinstance(info, str) else ""
        if not reason and isinstance(code, int) and not isinstance(code, bool):
            reason = f"error {code}"
        return reason or "an error without a reason"
    if flag not in (None, "success"):
        return None
    found = dig(data, "response", "result", "data")
    video_id = dig(found, "video_id")
    if isinstance(video_id, int) and not isinstance(video_id, bool):
        video_id = str(video_id)
    if not isinstance(video_id, str) or not VIDEO_ID.fullmatch(video_id):
        return None
    outcome: Result = {"video_id": video_id}
    created = dig(found, "date_creation")
    if isinstance(created, str) and one_line(created):
        outcome["date_creation"] = one_line(created, 64)
    return outcome


def begin_push(job: Job) -> int:
    """The number of this push, committed before any URL naming it is given out. It
    replaces the row's whole progress, so a callback kept from an earlier push is gone."""
    previous = job.store.load().get(PUSH)
    if isinstance(previous, bool) or not isinstance(previous, int) or previous < 0:
        previous = 0
    push = previous + 1
    job.store.save({PUSH: push})
    return push


class OneAllUploader:
    def __init__(
        self,
        config: OneAllService,
        signer: Signer,
        limits: HttpLimits | None = None,
        observe: RequestObserver | None = None,
    ) -> None:
        self.config = config
        self.signer = signer
        self.http = ServiceHttp(config.name, limits=limits, observe=observe)
        self.auth = basic_auth(config.public_key, config.private_key)
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
            return self._picture(job, url_name(job.path.name, picture))
        video = video_format(head)
        if video is not None:
            return self._video(job, url_name(job.path.name, video))
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
        response = dig(reply.json(), "response")
        if not isinstance(response, dict):
            raise PermanentError(f"{self.config.name}: OneAll answered without an envelope")
        return response

    def _picture(self, job: Job, name: str) -> Result:
        push = begin_push(job)
        expires = time.time() + PICTURE_URL_LIFETIME
        body: dict[str, Any] = {"url": self.signer.media_url(job.row_id, push, name, expires)}
        if job.caption:
            body["description"] = job.caption
        response = self._push("picture", body)
        picture_id = text_of(dig(response, "result", "data", "picture_id"))
        if picture_id is None:
            raise PermanentError(f"{self.config.name}: OneAll answered without a picture_id")
        job.progress(job.size)
        result: Result = {"picture_id": picture_id}
        expires_in = text_of(dig(response, "result", "data", "expires_in"))
        if expires_in is not None:
            result["expires_in"] = expires_in
        return result

    def _video(self, job: Job, name: str) -> AwaitCallback:
        push = begin_push(job)
        deadline = time.time() + self.config.callback_timeout
        expires = deadline + URL_MARGIN
        body: dict[str, Any] = {
            "video_url": self.signer.media_url(job.row_id, push, name, expires),
            "callback_url": self.signer.callback_url(job.row_id, push, expires),
        }
        self._push("video", body)
        job.progress(job.size)
        return AwaitCallback(deadline)
