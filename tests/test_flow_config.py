"""Flow control's keys, the timetable and the local-time arithmetic of quota days."""

from __future__ import annotations

import textwrap
from datetime import datetime
from pathlib import Path

import pytest

from syncd.config import load
from syncd.errors import ConfigError
from syncd.work.flow.bandwidth import scheduled_rate
from syncd.work.flow.clock import Clock

BASE = """
[daemon]
state_dir = "state"
{daemon}
[accounts.main]
consumer_key = "ck"
consumer_secret = "cs"
access_token = "at"
access_token_secret = "ats"

[services.ads]
type = "ton"
account = "main"
bucket = "b"
{service}
[[watch]]
path = "drop"
service = "ads"
{watch}
"""


def load_with(tmp_path: Path, daemon: str = "", service: str = "", watch: str = ""):
    (tmp_path / "drop").mkdir(exist_ok=True)
    path = tmp_path / "config.toml"
    path.write_text(textwrap.dedent(BASE).format(daemon=daemon, service=service, watch=watch))
    path.chmod(0o600)
    return load(path)


def test_defaults_change_nothing(tmp_path: Path) -> None:
    config = load_with(tmp_path)
    assert (config.daemon.bandwidth, config.daemon.bandwidth_schedule) == (0, ())
    ads = config.services["ads"]
    assert (ads.max_parallel, ads.bandwidth, ads.daily_files, ads.daily_bytes) == (0, 0, 0, 0)
    assert ads.quota_reset == 0
    assert (config.watches[0].order, config.watches[0].priority) == ("oldest", 0)


def test_every_key_read(tmp_path: Path) -> None:
    config = load_with(
        tmp_path,
        daemon='bandwidth = "8MiB"\nbandwidth_schedule = ["19:00 0", "08:00 2MiB"]',
        service='max_parallel = 2\nbandwidth = "1MiB"\ndaily_files = 10\n'
        'daily_bytes = "1GiB"\nquota_reset = "04:30"',
        watch='order = "newest"\npriority = 5',
    )
    assert config.daemon.bandwidth == 8 << 20
    assert config.daemon.bandwidth_schedule == ((8 * 60, 2 << 20), (19 * 60, 0))
    ads = config.services["ads"]
    assert (ads.max_parallel, ads.bandwidth, ads.daily_files) == (2, 1 << 20, 10)
    assert (ads.daily_bytes, ads.quota_reset) == (1 << 30, 4 * 60 + 30)
    assert (config.watches[0].order, config.watches[0].priority) == ("newest", 5)


@pytest.mark.parametrize(
    ("where", "text", "message"),
    [
        ("daemon", 'bandwidth_schedule = ["8:00"]', 'expected entries such as "08:00 2MiB"'),
        ("daemon", 'bandwidth_schedule = ["25:00 1MiB"]', 'expected a local time "HH:MM"'),
        ("daemon", 'bandwidth_schedule = ["08:00 1MiB", "08:00 0"]', "08:00 appears twice"),
        ("daemon", 'bandwidth = "fast"', "expected a size"),
        ("service", "max_parallel = -1", "must be 0 (no limit) or more"),
        ("service", 'quota_reset = "noon"', 'expected a local time "HH:MM"'),
        ("watch", 'order = "random"', "must be oldest, newest, smallest, largest or name"),
        ("watch", 'priority = "high"', "expected an integer"),
    ],
)
def test_refusals_name_the_key(tmp_path: Path, where: str, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_with(tmp_path, **{where: text})
    assert message in str(info.value)
    assert text.split(" =")[0] in str(info.value)


def test_timetable_wraps_around_midnight() -> None:
    schedule = ((8 * 60, 2), (19 * 60, 0))
    assert scheduled_rate(schedule, 9, 7 * 60 + 59) == 0  # before 08:00: last night's entry
    assert scheduled_rate(schedule, 9, 8 * 60) == 2
    assert scheduled_rate(schedule, 9, 23 * 60) == 0
    assert scheduled_rate((), 9, 0) == 9


def test_times_of_day_are_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Europe/Berlin")
    import time

    time.tzset()
    try:
        clock = Clock(offset_file="")
        # The night the clocks went back (2026-10-25): a day of 25 hours.
        before = datetime(2026, 10, 24, 12, 0).astimezone().timestamp()
        reset = clock.next_time_of_day(0, before)
        assert clock.local(reset).strftime("%Y-%m-%d %H:%M") == "2026-10-25 00:00"
        following = clock.next_time_of_day(0, reset)
        assert following - reset == 25 * 3600
        after = clock.next_time_of_day(4 * 60, reset)
        assert after - reset == 5 * 3600  # 04:00 comes an hour later that night
        assert clock.last_time_of_day(0, after) == reset
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_offset_file_moves_the_clock(tmp_path: Path) -> None:
    knob = tmp_path / "offset"
    clock = Clock(offset_file=str(knob))
    assert abs(clock.now() - datetime.now().timestamp()) < 5  # no file: no offset
    knob.write_text("3600")
    assert 3595 < clock.now() - datetime.now().timestamp() < 3605


def test_a_time_of_day_the_clocks_skip_comes_when_they_go_forward(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TZ", "Europe/Berlin")
    import time

    time.tzset()
    try:
        clock = Clock(offset_file="")
        # 2027-03-28: at 02:00 the clocks go forward to 03:00; 02:30 never shows.
        change = datetime(2027, 3, 28, 3, 0).astimezone().timestamp()
        evening = datetime(2027, 3, 27, 20, 0).astimezone().timestamp()
        for minute in (2 * 60, 2 * 60 + 30, 2 * 60 + 59):
            assert clock.next_time_of_day(minute, evening) == change  # not an hour early
            assert clock.last_time_of_day(minute, change + 600) == change
        assert clock.local(clock.next_time_of_day(150, change)).strftime("%d %H:%M") == "29 02:30"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
