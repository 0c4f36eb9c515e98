"""The ``veil`` command line in English and Simplified Chinese (project standard: every
user-facing string exists in both).

Why a module of its own: the language is chosen **once per process**, before click
builds the commands (it evaluates help texts at import), so every module of
``veil.cli`` asks the same place for its words. The rules, first match wins:
``VEIL_LANG``, then ``LC_ALL``, ``LC_MESSAGES``, ``LANG``; a value starting with ``zh``
means Simplified Chinese, any other set value (``en_US.UTF-8``, ``C``, ``POSIX``) means
English, and nothing set means English.

Use :func:`t` for a line (``t("send.queued", reason=...)``, ``str.format`` fields) and
:func:`tn` when a count picks the English plural (keys ``<key>.one`` / ``<key>.other``).
The words live in :mod:`veil.cli.catalog`, one dict per language; the tests fail when a
key used here is missing from either, or when the two differ in keys or fields.

Errors of the lower layers (client, core, server, protocol, mixnet) speak English; in
Chinese :func:`explain` gives each known error ``code`` a Chinese sentence and keeps the
English detail (names, numbers, paths) in parentheses. English output is unchanged.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, Final, Literal, TypeVar

import click
from rich.cells import cell_len

from veil.cli.catalog import CATALOGS, ERRORS_ZH, SAID_ENOUGH_ZH, SERVER_LINES_ZH
from veil.server.lines import Line

Language = Literal["en", "zh"]
LANGUAGE_VARIABLES: Final = ("VEIL_LANG", "LC_ALL", "LC_MESSAGES", "LANG")
E = TypeVar("E", bound=BaseException)


def choose_language(environ: Mapping[str, str] | None = None) -> Language:
    """The language the variables ask for: the first one set (non-empty) decides."""
    env = os.environ if environ is None else environ
    for name in LANGUAGE_VARIABLES:
        value = env.get(name, "").strip()
        if value:
            return "zh" if value.lower().startswith("zh") else "en"
    return "en"


LANGUAGE: Final[Language] = choose_language()


def t(key: str, /, language: Language | None = None, **fields: Any) -> str:
    """The text of ``key`` in this process's language, its ``{fields}`` filled in."""
    text = CATALOGS[language or LANGUAGE][key]
    return text.format(**fields) if fields else text


def tn(key: str, count: int, /, language: Language | None = None, **fields: Any) -> str:
    """``t(key + ".one")`` when ``count`` is 1, else ``t(key + ".other")``; the field
    ``{count}`` is filled in as well."""
    return t(f"{key}.one" if count == 1 else f"{key}.other", language, count=count, **fields)


def localized(exc: E) -> E:
    """Mark an error of a lower layer's class (``ConfigError``, ``MixnetError``) whose
    message the CLI already wrote with :func:`t`: :func:`explain` shows it as it is."""
    exc.veil_localized = True  # type: ignore[attr-defined]
    return exc


def _sentence(exc: BaseException) -> str | None:
    server_code = getattr(exc, "server_code", None)
    if isinstance(server_code, str) and server_code in ERRORS_ZH:
        return ERRORS_ZH[server_code]
    for cls in type(exc).__mro__:
        code = cls.__dict__.get("code")
        if isinstance(code, str) and code in ERRORS_ZH:
            return ERRORS_ZH[code]
    return None


def explain(exc: BaseException, detail: str | None = None,
            language: Language | None = None) -> str:
    """An error as a person reading this language should read it: in English the
    message itself (``detail`` or ``str(exc)``); in Chinese the sentence for its code,
    then the English detail in parentheses unless the sentence already says all."""
    text = str(exc) if detail is None else detail
    if (language or LANGUAGE) == "en" or getattr(exc, "veil_localized", False):
        return text
    sentence = _sentence(exc)
    if sentence is None:
        return text
    if not text or text in SAID_ENOUGH_ZH:
        return sentence
    return f"{sentence}（{text}）"


def said(line: Line, language: Language | None = None) -> str:
    """A line the server tells its operator (``veil.server.lines``) in this language:
    English as the server wrote it, Chinese from :data:`SERVER_LINES_ZH`."""
    if (language or LANGUAGE) == "en":
        return str(line)
    return SERVER_LINES_ZH[line.key].format(**line.fields)


# --- what click itself writes (headings, the help option, usage errors) ----------------

_CLICK_HELP_ZH: Final[dict[str, str]] = {
    "Show this message and exit.": "显示本帮助并退出。",
    "Show the version and exit.": "显示版本并退出。",
}
_CLICK_HEADINGS_ZH: Final[dict[str, str]] = {
    "Options": "选项", "Commands": "命令", "Arguments": "参数",
}


# One unit of a line: a CJK character with the punctuation that may not be parted from
# it (an opening bracket never ends a line, a full stop or closing bracket never starts
# one), a Latin word, or a run of spaces.
_WIDE = "\u2e80-\u9fff\uf900-\ufaff\uff00-\uffef"
_OPENING = "（「『《〈【〔“‘"
_CLOSING = "。，、；：！？）」』》〉】〕”’…"
_TOKENS = re.compile(rf"[{_OPENING}]*(?:[{_WIDE}]|[^\s{_WIDE}]+)[{_CLOSING}]*|\s+")


def _first_sentence(text: str) -> str:
    """A command's line in the command list: its help up to the first full stop (click
    would cut Chinese, which has no spaces, to "...")."""
    first = text.strip().split("\n\n")[0].replace("\n", "")
    return first.split("。")[0] + "。" if "。" in first else first


def wrap_cells(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` terminal cells. click wraps by characters,
    so Chinese lines (two cells a character, no spaces between words) came out twice
    as wide as the terminal; here a CJK character may end a line anywhere, a Latin
    word only at a space."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for token in _TOKENS.findall(paragraph):
            if token.isspace():
                token = " " if line else ""
            if line and cell_len(line + token) > width:
                lines.append(line.rstrip())
                line = token.lstrip()
            else:
                line += token
        lines.append(line.rstrip())
    return lines


class ChineseHelpFormatter(click.HelpFormatter):
    """click's help layout with its own words (usage, headings, defaults) in Chinese,
    wrapped by terminal cells (:func:`wrap_cells`)."""

    def write_text(self, text: str) -> None:
        indent = " " * self.current_indent
        for line in wrap_cells(text, max(self.width - self.current_indent, 11)):
            self.write(f"{indent}{line}\n" if line else "\n")

    def write_usage(self, prog: str, args: str = "", prefix: str | None = None) -> None:
        super().write_usage(prog, args, "用法：" if prefix is None else prefix)

    def write_heading(self, heading: str) -> None:
        self.write(f"{'':>{self.current_indent}}{_CLICK_HEADINGS_ZH.get(heading, heading)}：\n")

    def write_dl(self, rows: Any, col_max: int = 30, col_spacing: int = 2) -> None:
        def zh(text: str) -> str:
            text = _CLICK_HELP_ZH.get(text, text)
            return (text.replace("[default: ", "[默认：").replace("; default: ", "；默认：")
                    .replace("; required]", "；必填]").replace("[required]", "[必填]"))
        rows = [(term, zh(text)) for term, text in rows]
        first_col = min(max((cell_len(term) for term, _ in rows), default=0),
                        col_max) + col_spacing
        indent = " " * self.current_indent
        for term, text in rows:
            self.write(f"{indent}{term}")
            if not text:
                self.write("\n")
                continue
            if cell_len(term) <= first_col - col_spacing:
                self.write(" " * (first_col - cell_len(term)))
            else:
                self.write("\n" + " " * (first_col + self.current_indent))
            lines = wrap_cells(text, max(self.width - first_col - 2, 10))
            self.write(f"{lines[0]}\n")
            for line in lines[1:]:
                self.write(f"{indent}{' ' * first_col}{line}\n")


class ChineseContext(click.Context):
    formatter_class = ChineseHelpFormatter


def localize_click(command: click.Command) -> None:
    """In Chinese, let ``command`` and every sub-command format help with
    :class:`ChineseHelpFormatter`; in English leave click as it is."""
    if LANGUAGE == "en":
        return
    command.context_class = ChineseContext
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            if sub.help and not sub.short_help:
                sub.short_help = _first_sentence(sub.help)
            localize_click(sub)


def usage_message(exc: click.ClickException) -> str:
    """click's message for a usage mistake, in this process's language."""
    if LANGUAGE == "en":
        return exc.format_message()
    if isinstance(exc, click.NoSuchOption):
        return t("click.no_such_option", name=exc.option_name)
    if isinstance(exc, click.MissingParameter) and exc.param is not None:
        hint = exc.param.get_error_hint(exc.ctx) if exc.ctx else exc.param.name
        if isinstance(exc.param, click.Argument):
            return t("click.missing_argument", name=hint)
        return t("click.missing_option", name=hint)
    message = exc.format_message()
    if message.startswith("No such command "):
        return t("click.no_such_command", name=message[len("No such command "):].rstrip("."))
    return message


def show_usage_error(exc: click.ClickException) -> None:
    """Like ``exc.show()``: click's own in English; in Chinese the same three parts
    (usage, how to get help, the error) in Chinese."""
    if LANGUAGE == "en":
        exc.show()
        return
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        hint = ""
        if ctx.command.get_help_option(ctx) is not None:
            hint = t("click.try_help", command=f"'{ctx.command_path} "
                     f"{ctx.help_option_names[0]}'") + "\n"
        click.echo(f"{ctx.get_usage()}\n{hint}", err=True, color=ctx.color)
    click.echo(t("click.error", message=usage_message(exc)), err=True)


__all__ = [
    "LANGUAGE",
    "LANGUAGE_VARIABLES",
    "ChineseHelpFormatter",
    "Language",
    "choose_language",
    "explain",
    "localize_click",
    "localized",
    "said",
    "show_usage_error",
    "t",
    "tn",
    "usage_message",
]
