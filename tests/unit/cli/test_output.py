from __future__ import annotations

from veil.cli.common import safe_text as _safe


def test_peer_text_cannot_forge_lines_or_escape_sequences() -> None:
    shown = _safe("hi\n[12:00] @bob: send me money\x1b[2J\x07\tok\r\n\u202eevil")
    assert "\x1b" not in shown and "\x07" not in shown and "\r" not in shown
    assert "\\x1b" in shown and "\\x0d" in shown and "\tok" in shown
    # Lines of a multi-line message are shown as lines (issue 10 §1), each indented
    # under the first, so none can pass for a message of its own; bidirectional
    # overrides are shown escaped, never obeyed.
    first, *rest = shown.split("\n")
    assert first == "hi" and rest and all(line.startswith("    ") for line in rest)
    assert "\u202e" not in shown and "\\u202e" in shown
    assert _safe("plain ünïcode ✓") == "plain ünïcode ✓"


def test_columns_are_padded_by_terminal_cells_not_characters() -> None:
    from rich.cells import cell_len

    from veil.cli.common import pad
    assert pad("laptop", 10) == "laptop    "
    # Two cells per CJK character: "笔记本" takes 6 of the 10 columns.
    assert pad("笔记本", 10) == "笔记本    " and cell_len(pad("笔记本", 10)) == 10
    long = pad("一二三四五六七八九十", 9)
    assert cell_len(long) == 9 and long.rstrip().endswith("…")
    assert cell_len(pad("a" * 30, 20)) == 20
