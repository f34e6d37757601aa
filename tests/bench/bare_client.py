"""The baseline: the plainest correct TON client, one requests.Session and OAuth1.

What a person would write by hand with requests and requests-oauthlib, with none of
syncd's journal, hashing, settle detection or sidecars. The benchmarks run it in a
subprocess against the same sandbox as syncd and print its JSON timings beside syncd's.

    bare_client.py single URL LISTFILE          POST each file named in LISTFILE
    bare_client.py threads N URL LISTFILE       the same from N threads, a Session each
    bare_client.py resumable URL FILE CHUNK     init, then PUT CHUNK-byte pieces to 201
"""

from __future__ import annotations

import email.utils
import json
import mimetypes
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urljoin

import requests
from requests_oauthlib import OAuth1

from syncd.sandbox import credentials

EXPIRES_AHEAD = 7 * 86400


def session() -> tuple[requests.Session, OAuth1]:
    auth = OAuth1(
        credentials.CONSUMER_KEY,
        client_secret=credentials.CONSUMER_SECRET,
        resource_owner_key=credentials.ACCESS_TOKEN,
        resource_owner_secret=credentials.ACCESS_TOKEN_SECRET,
    )
    return requests.Session(), auth


def bucket_url(base: str) -> str:
    return f"{base}/1.1/ton/bucket/{credentials.TON_BUCKET_TA_PARTNER}"


def headers_for(path: Path) -> dict[str, str]:
    media = mimetypes.guess_type(path.name, strict=False)[0] or "application/octet-stream"
    expires = email.utils.formatdate(time.time() + EXPIRES_AHEAD, usegmt=True)
    return {"Content-Type": media, "X-TON-Expires": expires}


def single(base: str, listfile: Path) -> dict[str, float]:
    """One POST per file, in order, each read whole into memory."""
    paths = [Path(line) for line in listfile.read_text().splitlines() if line]
    http, auth = session()
    url = bucket_url(base)
    started_epoch = time.time()
    started = time.perf_counter()
    for path in paths:
        reply = http.post(url, data=path.read_bytes(), headers=headers_for(path), auth=auth)
        if reply.status_code != 201:
            raise RuntimeError(f"{path}: {reply.status_code} {reply.text[:200]}")
    return {"seconds": time.perf_counter() - started, "files": len(paths), "started": started_epoch}


def threaded(count: int, base: str, listfile: Path) -> dict[str, float]:
    """`count` threads, each with its own Session, POSTing the next file of LISTFILE."""
    paths = iter([Path(line) for line in listfile.read_text().splitlines() if line])
    take = threading.Lock()
    errors: list[str] = []
    url = bucket_url(base)

    def loop() -> None:
        http, auth = session()
        while not errors:
            with take:
                path = next(paths, None)
            if path is None:
                return
            reply = http.post(url, data=path.read_bytes(), headers=headers_for(path), auth=auth)
            if reply.status_code != 201:
                errors.append(f"{path}: {reply.status_code} {reply.text[:200]}")

    threads = [threading.Thread(target=loop) for _ in range(count)]
    started_epoch = time.time()
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(errors[0])
    return {"seconds": time.perf_counter() - started, "started": started_epoch}


def resumable(base: str, path: Path, chunk: int) -> dict[str, float]:
    """Init (`?resumable=true`), then the chunks in order with Content-Range, to 201."""
    http, auth = session()
    total = path.stat().st_size
    started_epoch = time.time()
    started = time.perf_counter()
    headers = headers_for(path)
    reply = http.post(
        bucket_url(base) + "?resumable=true",
        data=b"",
        auth=auth,
        headers={
            **headers,
            "X-TON-Content-Type": headers["Content-Type"],
            "X-TON-Content-Length": str(total),
        },
    )
    if reply.status_code != 201:
        raise RuntimeError(f"init: {reply.status_code} {reply.text[:200]}")
    location = urljoin(base + "/", reply.headers["Location"])
    offset = 0
    with path.open("rb") as file:
        while offset < total:
            data = file.read(chunk)
            last = offset + len(data) - 1
            reply = http.put(
                location,
                data=data,
                auth=auth,
                headers={**headers, "Content-Range": f"bytes {offset}-{last}/{total}"},
                allow_redirects=False,
            )
            if reply.status_code not in (201, 308):
                raise RuntimeError(f"chunk at {offset}: {reply.status_code} {reply.text[:200]}")
            offset = last + 1
    if reply.status_code != 201:
        raise RuntimeError(f"the last chunk got {reply.status_code}, not 201")
    return {"seconds": time.perf_counter() - started, "started": started_epoch}


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "single":
        result = single(argv[1], Path(argv[2]))
    elif len(argv) == 4 and argv[0] == "threads":
        result = threaded(int(argv[1]), argv[2], Path(argv[3]))
    elif len(argv) == 4 and argv[0] == "resumable":
        result = resumable(argv[1], Path(argv[2]), int(argv[3]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
