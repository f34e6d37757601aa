"""TwitPic uploads and TwitLonger posts through OAuth Echo, the real daemon against the sandbox."""

from __future__ import annotations

import hashlib
import os
import signal
from pathlib import Path
from typing import Any

from conftest import SandboxClient, base_config, read_sidecar, sidecar_exists, wait_until
from sandbox.samples import png, video

from syncd.sandbox import credentials


def echo_config(tmp_path: Path, sandbox: SandboxClient, **twitlonger: Any) -> dict[str, Any]:
    config = base_config(tmp_path, sandbox.url)
    config["services"]["photos"] = {
        "type": "twitpic",
        "account": "main",
        "api_key": credentials.TWITPIC_API_KEY,
        "endpoint": sandbox.url,
        "message": "default caption",
    }
    config["services"]["notes"] = {
        "type": "twitlonger",
        "account": "main",
        "api_key": credentials.TWITLONGER_API_KEY,
        "endpoint": sandbox.url,
        "twitter_endpoint": sandbox.url,
        **twitlonger,
    }
    for name in ("photos", "notes"):
        (tmp_path / name).mkdir(exist_ok=True)
    config["watch"] = [
        {"path": str(tmp_path / "photos"), "service": "photos"},
        {"path": str(tmp_path / "notes"), "service": "notes", "include": ["*.txt"]},
    ]
    return config


def service_requests(sandbox: SandboxClient, prefix: str) -> list[dict[str, Any]]:
    return [r for r in sandbox.requests() if r["path"].startswith(prefix)]


def test_png_and_video_to_twitpic_with_a_caption(tmp_path, sandbox, make_daemon):
    daemon = make_daemon(echo_config(tmp_path, sandbox)).start()
    photo = tmp_path / "photos" / "photo.png"
    (tmp_path / "photos" / "photo.png.caption").write_text("A caption from the file\n")
    photo.write_bytes(png())
    clip = tmp_path / "photos" / "clip.mp4"
    with clip.open("wb") as out:
        out.write(video("mp4", 1024))
        for _ in range(50):
            out.write(os.urandom(1024 * 1024))
    daemon.wait_counts(done=2, timeout=120)
    uploads = {u["sha256"]: u for u in sandbox.get("twitpic/uploads")}
    for path, message in ((photo, "A caption from the file"), (clip, "default caption")):
        side = read_sidecar(path)
        issued = uploads[hashlib.sha256(path.read_bytes()).hexdigest()]
        assert side["type"] == "twitpic"
        assert side["result"]["id"] == issued["id"] and side["result"]["url"] == issued["url"]
        assert issued["message"] == message
    assert read_sidecar(photo)["result"]["width"] == 220
    assert read_sidecar(clip)["result"]["size"] == clip.stat().st_size


def test_twitpic_numbers_as_strings_are_read_leniently(tmp_path, sandbox, make_daemon):
    sandbox.post("settings", {"twitpic": {"numbers_as_strings": True}})
    daemon = make_daemon(echo_config(tmp_path, sandbox)).start()
    photo = tmp_path / "photos" / "photo.png"
    photo.write_bytes(png(48, 32))
    daemon.wait_counts(done=1)
    result = read_sidecar(photo)["result"]
    assert (result["width"], result["height"]) == (48, 32)


LONG_TEXT = ("A long thought that does not fit in a tweet. " * 45)[:2000]


def test_text_file_becomes_post_tweet_and_link(tmp_path, sandbox, make_daemon):
    daemon = make_daemon(echo_config(tmp_path, sandbox)).start()
    note = tmp_path / "notes" / "thought.txt"
    note.write_text(
        '+++\nreply_to_id = 1234567890123456789\nreply_to_screen_name = "someone"\n+++\n\n'
        + LONG_TEXT
        + "\n\n"
    )
    daemon.wait_counts(done=1)
    posts = sandbox.get("twitlonger/posts")
    tweets = sandbox.get("twitter/statuses")
    assert len(posts) == 1 and len(tweets) == 1
    post, tweet = posts[0], tweets[0]
    assert post["content"] == LONG_TEXT.rstrip()
    assert (post["reply_to_id"], post["reply_to_screen_name"]) == ("1234567890123456789", "someone")
    assert tweet["text"] == post["tweet_content"]
    assert post["puts"] == 1 and post["twitter_status_id"] == tweet["id_str"]
    result = read_sidecar(note)["result"]
    assert result == {
        "id": post["id"],
        "short_url": post["short_url"],
        "full_url": post["full_url"],
        "tweet_content": post["tweet_content"],
        "twitter_status_id": tweet["id_str"],
    }


def test_a_post_of_several_paragraphs_keeps_its_lines(tmp_path, sandbox, make_daemon):
    """Most notes have more than one line: TwitLonger's tweet_content then has line breaks
    too, and it is text for people, not an id (a Windows file's CR LF as well)."""
    daemon = make_daemon(echo_config(tmp_path, sandbox)).start()
    note = tmp_path / "notes" / "paragraphs.txt"
    paragraphs = "A first paragraph.\r\n\r\nA second one,\r\n\twith a tab.\r\n"
    note.write_bytes(paragraphs.encode())
    daemon.wait_counts(done=1)
    [post], [tweet] = sandbox.get("twitlonger/posts"), sandbox.get("twitter/statuses")
    assert post["content"] == paragraphs.rstrip() and "\n" in post["tweet_content"]
    assert tweet["text"] == post["tweet_content"]
    assert read_sidecar(note)["result"]["tweet_content"] == post["tweet_content"]


def test_no_tweet_when_the_front_matter_says_so(tmp_path, sandbox, make_daemon):
    daemon = make_daemon(echo_config(tmp_path, sandbox)).start()
    note = tmp_path / "notes" / "quiet.txt"
    note.write_text("+++\ntweet = false\n+++\nJust a post.\n")
    daemon.wait_counts(done=1)
    assert len(sandbox.get("twitlonger/posts")) == 1
    assert sandbox.get("twitter/statuses") == []
    assert "twitter_status_id" not in read_sidecar(note)["result"]


def test_kill_after_the_post_and_before_the_tweet(tmp_path, sandbox, make_daemon):
    daemon = make_daemon(echo_config(tmp_path, sandbox)).start()
    sandbox.fault(method="POST", path="/1.1/statuses/update", status=503, count=1000)
    note = tmp_path / "notes" / "interrupted.txt"
    note.write_text(LONG_TEXT)
    wait_until(lambda: daemon.status()["counts"]["retry_wait"] == 1, 30, "the tweet failing")
    assert len(sandbox.get("twitlonger/posts")) == 1
    daemon.kill()
    sandbox.clear_faults()
    daemon.start()
    daemon.wait_counts(done=1)
    posts = sandbox.get("twitlonger/posts")
    assert len(posts) == 1 and posts[0]["puts"] == 1
    assert len(sandbox.get("twitter/statuses")) == 1
    assert sidecar_exists(note)


def test_wrong_consumer_secret_fails_without_leaking_it(tmp_path, sandbox, make_daemon):
    config = echo_config(tmp_path, sandbox)
    config["accounts"]["main"]["consumer_secret"] = "this-secret-must-not-leak"
    daemon = make_daemon(config).start()
    (tmp_path / "photos" / "photo.png").write_bytes(png())
    (tmp_path / "notes" / "note.txt").write_text("hello")
    daemon.wait_counts(failed=2)
    reply = daemon.status()
    assert all("authentication failed" in f["error"] for f in reply["failures"])
    shown = daemon.cli("status", "--json").stdout + daemon.cli("status").stdout
    assert "this-secret-must-not-leak" not in shown + daemon.log() + str(reply)


def test_bad_text_files_fail_before_any_request(tmp_path, sandbox, make_daemon):
    daemon = make_daemon(echo_config(tmp_path, sandbox)).start()
    (tmp_path / "notes" / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "notes" / "empty.txt").write_bytes(b"\n\n  \n")
    (tmp_path / "notes" / "half.txt").write_text('+++\nreply_to_id = "1"\n+++\nhello')
    daemon.wait_counts(failed=3)
    reasons = {Path(f["path"]).name: f["error"] for f in daemon.status()["failures"]}
    assert "not UTF-8" in reasons["latin1.txt"]
    assert "empty" in reasons["empty.txt"]
    assert "reply_to_screen_name" in reasons["half.txt"]
    assert service_requests(sandbox, "/2/posts") == []


def test_twitlonger_error_codes_read_as_reasons(tmp_path, sandbox, make_daemon):
    config = echo_config(tmp_path, sandbox)
    config["services"]["notes"]["api_key"] = "an-unknown-key"
    daemon = make_daemon(config).start()
    (tmp_path / "notes" / "note.txt").write_text("hello")
    daemon.wait_counts(failed=1)
    assert "X-API-KEY" in daemon.status()["failures"][0]["error"]


def test_kill_after_the_tweet_left_but_before_its_id_was_kept(tmp_path, sandbox, make_daemon):
    """The tweet lands while the daemon is gone: after a restart it is found, not re-sent."""
    daemon = make_daemon(echo_config(tmp_path, sandbox)).start()
    sandbox.fault(method="POST", path="/1.1/statuses/update", delay_ms=3000, count=1)
    note = tmp_path / "notes" / "in-the-air.txt"
    note.write_text(LONG_TEXT)

    def tweet_in_flight() -> bool:
        return any(
            r["path"] == "/1.1/statuses/update.json" and r["status"] is None
            for r in sandbox.requests()
        )

    wait_until(tweet_in_flight, 30, "the tweet on its way")
    daemon.kill()
    wait_until(lambda: sandbox.get("twitter/statuses"), 30, "the tweet landing anyway")
    daemon.start()
    daemon.wait_counts(done=1)
    tweets = sandbox.get("twitter/statuses")
    posts = sandbox.get("twitlonger/posts")
    assert len(tweets) == 1 and len(posts) == 1
    assert posts[0]["puts"] == 1 and posts[0]["twitter_status_id"] == tweets[0]["id_str"]
    assert read_sidecar(note)["result"]["twitter_status_id"] == tweets[0]["id_str"]


def test_a_hurried_stop_after_a_post_closes_the_journal(tmp_path, sandbox, make_daemon):
    daemon = make_daemon(echo_config(tmp_path, sandbox)).start()
    (tmp_path / "notes" / "last.txt").write_text(LONG_TEXT)
    daemon.wait_counts(done=1)
    daemon.signal(signal.SIGINT)
    daemon.signal(signal.SIGINT)  # the second: leave at once
    assert daemon.process is not None and daemon.process.wait(30) == 0
    assert "left unfinished" not in daemon.log(), "nothing was in flight"
    wal = tmp_path / "state" / "journal.sqlite-wal"
    assert not wal.exists() or wal.stat().st_size == 0, "the journal was not closed"


def test_a_retried_tweet_needs_no_verify_credentials(tmp_path, sandbox, make_daemon):
    """protocols.md 8 gives the Twitter emulator statuses/update only: a retry after a 503
    must not depend on GET verify_credentials existing (here it answers 404)."""
    sandbox.fault(method="GET", path="/1.1/account/verify_credentials", status=404, count=1000)
    sandbox.fault(method="POST", path="/1.1/statuses/update", status=503, count=1)
    daemon = make_daemon(echo_config(tmp_path, sandbox)).start()
    note = tmp_path / "notes" / "retried.txt"
    note.write_text(LONG_TEXT)
    daemon.wait_counts(done=1)
    tweets = sandbox.get("twitter/statuses")
    assert len(tweets) == 1
    assert read_sidecar(note)["result"]["twitter_status_id"] == tweets[0]["id_str"]


def test_a_duplicate_after_a_retried_tweet_means_it_is_out(tmp_path, sandbox, make_daemon):
    """The tweet lands while the daemon is gone and Twitter has no verify_credentials to
    find it by: the second attempt gets 403 code 187, which after a retry means the first
    went through (protocols.md 7, 8): done, one tweet, no PUT of an id nobody knows."""
    sandbox.fault(method="GET", path="/1.1/account/verify_credentials", status=404, count=1000)
    daemon = make_daemon(echo_config(tmp_path, sandbox)).start()
    sandbox.fault(method="POST", path="/1.1/statuses/update", delay_ms=3000, count=1)
    note = tmp_path / "notes" / "twice.txt"
    note.write_text(LONG_TEXT)
    wait_until(
        lambda: any(r["path"] == "/1.1/statuses/update.json" for r in sandbox.requests()),
        30,
        "the tweet on its way",
    )
    daemon.kill()
    wait_until(lambda: sandbox.get("twitter/statuses"), 30, "the tweet landing anyway")
    daemon.start()
    daemon.wait_counts(done=1)
    (tweet,) = sandbox.get("twitter/statuses")
    (post,) = sandbox.get("twitlonger/posts")
    assert tweet["text"] == post["tweet_content"] and post["puts"] == 0
    assert "twitter_status_id" not in read_sidecar(note)["result"]


def test_a_first_tweet_refused_as_a_duplicate_fails(tmp_path, sandbox, make_daemon):
    """Only a retried tweet's 187 means "already out"; a first attempt's is a failure."""
    daemon = make_daemon(echo_config(tmp_path, sandbox)).start()
    (tmp_path / "notes" / "first.txt").write_text("Same words twice.")
    daemon.wait_counts(done=1)
    (tmp_path / "notes" / "second.txt").write_text("Same words twice.\n\n")  # other bytes
    daemon.wait_counts(done=1, failed=1)
    assert "duplicate of the account's last one" in daemon.status()["failures"][0]["error"]
    assert len(sandbox.get("twitter/statuses")) == 1


def test_a_tweet_content_too_long_for_a_tweet_is_cut_keeping_the_link(
    tmp_path, sandbox, make_daemon
):
    """protocols.md 5: "still check its length before tweeting, and keep the tl.gd link in
    it": a TwitLonger that cuts for a longer limit than Twitter's 280 (here 400) gets a
    tweet of 280 characters ending in its link, not Twitter's 403 code 186."""
    sandbox.post("settings", {"twitlonger": {"tweet_limit": 400}})
    daemon = make_daemon(echo_config(tmp_path, sandbox)).start()
    note = tmp_path / "notes" / "long.txt"
    note.write_text("word " * 200)
    daemon.wait_counts(done=1)
    [post] = sandbox.get("twitlonger/posts")
    [tweet] = sandbox.get("twitter/statuses")
    assert len(post["tweet_content"]) > 280
    assert 270 < len(tweet["text"]) <= 280, tweet["text"]
    assert tweet["text"].endswith(" (cont) " + post["short_url"])
    assert post["tweet_content"].startswith(tweet["text"].split(" (cont) ")[0])
    assert read_sidecar(note)["result"]["twitter_status_id"] == tweet["id_str"]
