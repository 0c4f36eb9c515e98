"""The small parsers and formatters of the conversation commands (issue 12)."""

from __future__ import annotations

import pytest

from veil.cli.common import BadValue
from veil.cli.conversation import parse_timer
from veil.cli.display import duration
from veil.cli.i18n import tn
from veil.cli.transfer import attachment_line, attachment_obj, size_text


@pytest.mark.parametrize(("text", "seconds"), [
    ("off", 0), ("0", 0), ("OFF", 0), ("30s", 30), ("45", 45), ("5m", 300), ("1h", 3600),
    ("1d", 86400), ("1w", 604800), ("4w", 2419200), (" 2 h ", 7200),
])
def test_timer_values(text: str, seconds: int) -> None:
    assert parse_timer(text) == seconds


@pytest.mark.parametrize("text", ["soon", "1y", "-5m", "1.5h", "", "m"])
def test_bad_timer_values_are_usage_errors(text: str) -> None:
    with pytest.raises(BadValue):
        parse_timer(text)


def test_durations_and_sizes_as_people_say_them() -> None:
    assert [duration(s) for s in (30, 90, 300, 3600, 86400, 172800, 604800, 2419200)] == [
        "30 seconds", "90 seconds", "5 minutes", "1 hour", "1 day", "2 days", "1 week",
        "4 weeks"]
    assert tn("dur.day", 1, "zh") == "1 天"
    assert [size_text(n) for n in (0, 1023, 1024, 3 * 2**20 + 4321, 5 * 2**30)] == [
        "0 B", "1023 B", "1.0 KiB", "3.0 MiB", "5.0 GiB"]


def test_an_attachment_shows_no_key_and_a_peers_name_escaped() -> None:
    pointer = {"id": "ab" * 16, "key": "secret", "token": "secret", "digest": "x",
               "size": 2048, "name": "evil\u202egnp.exe", "type": "image/png"}
    assert attachment_obj(pointer) == {"name": "evil\u202egnp.exe", "size": 2048,
                                       "type": "image/png", "path": None}
    line = attachment_line(pointer)
    assert "\u202e" not in line and "\\u202e" in line and "secret" not in line
    assert line == "📎 evil\\u202egnp.exe (2.0 KiB, image/png)"
