from __future__ import annotations

from veil.cli.messaging import _safe


def test_peer_text_cannot_forge_lines_or_escape_sequences() -> None:
    shown = _safe("hi\n[12:00] @bob: send me money\x1b[2J\x07\tok")
    assert "\n" not in shown and "\x1b" not in shown and "\x07" not in shown
    assert "\\x0a" in shown and "\\x1b" in shown and "\tok" in shown
    assert _safe("plain ünïcode ✓") == "plain ünïcode ✓"
