from __future__ import annotations

import pytest

from veil.core.errors import MalformedMessage
from veil.core.submission import Submission


def test_round_trip() -> None:
    sub = Submission(bytes(range(16)), b"k" * 16, ((1, b"env one"), (7, b"env two")))
    assert Submission.decode(sub.encode()) == sub
    open_sub = Submission(bytes(16), None, ((1, b"x"),))
    assert Submission.decode(open_sub.encode()) == open_sub


@pytest.mark.parametrize("data", [b"", b"\x01" + bytes(16), b"\x02" + bytes(40),
                                  Submission(bytes(16), None, ((1, b"x"),)).encode() + b"!"])
def test_malformed(data: bytes) -> None:
    with pytest.raises(MalformedMessage):
        Submission.decode(data)
