"""The CLI in English and Simplified Chinese: the two catalogs agree, every key the code
uses exists, no user-facing English literal bypasses the catalog, the language rule."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import string
from pathlib import Path

import click
import pytest

from veil.cli import entry, i18n
from veil.cli.catalog import CATALOGS, EN, ERRORS_ZH, SAID_ENOUGH_ZH, ZH
from veil.cli.i18n import choose_language, explain, localized, t, tn
from veil.core.errors import VeilError

CLI = Path(i18n.__file__).parent
SOURCES = sorted(p for p in CLI.glob("*.py") if p.name not in ("catalog.py",))
ERROR_MODULES = ("veil.core.errors", "veil.client.errors", "veil.protocol.errors",
                 "veil.server.errors", "veil.mixnet.errors")
# ZH values without Chinese characters: nothing in them to translate.
NO_WORDS = {"main.error_line", "opt.mix.proxy", "outbox.last_error"}


def _fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


# --- the catalogs ----------------------------------------------------------------------

def test_both_catalogs_have_the_same_keys_and_fields() -> None:
    assert set(EN) == set(ZH), (set(EN) ^ set(ZH))
    different = {k: (_fields(EN[k]), _fields(ZH[k])) for k in EN
                 if _fields(EN[k]) != _fields(ZH[k])}
    assert not different
    assert set(CATALOGS) == {"en", "zh"}


def test_the_chinese_catalog_is_chinese() -> None:
    cjk = re.compile(r"[\u4e00-\u9fff]")
    untranslated = [k for k, v in ZH.items() if k not in NO_WORDS and not cjk.search(v)]
    assert not untranslated


def _calls_of_t(tree: ast.AST) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and isinstance(n.func, ast.Name) and n.func.id in ("t", "tn")]


def _used_keys() -> dict[str, str]:
    used: dict[str, str] = {}
    for path in SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for call in _calls_of_t(tree):
            first = call.args[0]
            if path.name == "i18n.py" and not isinstance(first, ast.Constant):
                continue                       # tn's own t(f"{key}.one" ...)
            assert isinstance(first, ast.Constant) and isinstance(first.value, str), \
                f"{path.name}:{call.lineno}: the key must be a literal string"
            keys = [first.value + ".one", first.value + ".other"] \
                if call.func.id == "tn" else [first.value]  # type: ignore[attr-defined]
            for key in keys:
                used[key] = f"{path.name}:{call.lineno}"
    return used


def test_every_key_the_cli_uses_exists_and_every_entry_is_used() -> None:
    used = _used_keys()
    assert len(used) > 100
    missing = {k: where for k, where in used.items() if k not in EN}
    assert not missing
    assert set(EN) - set(used) == set(), "catalog entries no code uses"


def test_every_error_code_of_the_lower_layers_has_a_chinese_sentence() -> None:
    codes = set()
    for name in ERROR_MODULES:
        module = importlib.import_module(name)
        codes |= {cls.code for _, cls in inspect.getmembers(module, inspect.isclass)
                  if issubclass(cls, VeilError) and cls.__module__ == name}
    assert len(codes) > 50
    assert codes - set(ERRORS_ZH) == set()


def test_every_line_the_server_tells_its_operator_has_chinese_with_the_same_fields() -> None:
    from string import Formatter

    from veil.cli.catalog import SERVER_LINES_ZH
    from veil.cli.i18n import said
    from veil.server.lines import LINES, line

    def fields(template: str) -> set[str]:
        return {name for _, name, _, _ in Formatter().parse(template) if name}
    assert set(SERVER_LINES_ZH) == set(LINES)
    for key, english in LINES.items():
        assert fields(SERVER_LINES_ZH[key]) == fields(english), key
        assert re.search(r"[\u4e00-\u9fff]", SERVER_LINES_ZH[key]), key
    news = line("listening", url="http://127.0.0.1:8470", data="veil-data")
    assert said(news, "en") == str(news) == \
        "veil server listening on http://127.0.0.1:8470 (data in veil-data)"
    assert said(news, "zh") == "veil 服务器正在 http://127.0.0.1:8470 上监听（数据在 veil-data）"


# --- no English literal bypasses the catalog ---------------------------------------------

_SINK_NAMES = {"echo", "secho", "prompt", "confirm", "print", "rule", "add_row", "Table",
               "ClickException", "UsageError", "BadParameter", "BadValue"}
_MARKUP = re.compile(r"\[/?[a-z ]*\]")
_WORD = re.compile(r"[A-Za-z]{2,}")


def _name(func: ast.expr) -> str:
    return func.attr if isinstance(func, ast.Attribute) else \
        func.id if isinstance(func, ast.Name) else ""


def _english_literals(node: ast.AST) -> list[ast.Constant]:
    """String literals with English words that ``node`` writes as they are: markup, JSON
    objects (dicts), subscripts, comparisons and other calls' arguments are not output text; the
    fields of a ``t()`` call are."""
    found: list[ast.Constant] = []

    def visit(n: ast.AST) -> None:
        if isinstance(n, ast.Constant):
            if isinstance(n.value, str) and _WORD.search(_MARKUP.sub("", n.value)):
                found.append(n)
        elif isinstance(n, ast.Call):
            if _name(n.func) in ("t", "tn"):
                for kw in n.keywords:
                    visit(kw.value)
        elif isinstance(n, (ast.Dict, ast.Subscript, ast.Compare)):
            return
        else:
            for child in ast.iter_child_nodes(n):
                visit(child)
    visit(node)
    return found


def bypasses(source: str) -> list[str]:
    """Every place in ``source`` where user-facing English skips the catalog: a literal
    in what is echoed, printed, prompted or raised; a ``help=`` that is not ``t(...)``;
    a click command or group without ``help=t(...)`` (its docstring would be shown)."""
    problems: list[str] = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _name(node.func)
            args: list[ast.expr] = []
            if name in _SINK_NAMES or name.endswith("Error"):
                args = [*node.args, *(kw.value for kw in node.keywords)]
            elif name == "_emit" and len(node.args) == 3:
                args = [node.args[2]]          # (as_json, json_object, text)
            for arg in args:
                problems += [f"{c.lineno}: {c.value!r}" for c in _english_literals(arg)]
            for kw in node.keywords:
                if kw.arg == "help" and not (isinstance(kw.value, ast.Call)
                                             and _name(kw.value.func) == "t"):
                    problems.append(f"{node.lineno}: help= not from the catalog")
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for deco in node.decorator_list:
                if isinstance(deco, ast.Call) and _name(deco.func) in ("command", "group") \
                        and not any(kw.arg == "help" for kw in deco.keywords):
                    problems.append(f"{deco.lineno}: command {node.name} has no help=t(...)")
                elif isinstance(deco, ast.Attribute) and deco.attr in ("command", "group"):
                    problems.append(f"{deco.lineno}: command {node.name} has no help=t(...)")
    return problems


@pytest.mark.parametrize("path", [p for p in SOURCES if p.name != "entry.py"],
                         ids=lambda p: p.name)
def test_no_user_facing_english_bypasses_the_catalog(path: Path) -> None:
    assert bypasses(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("source", [
    'click.echo("the outbox is empty")',
    'click.echo(f"sent to {to}")',
    'click.echo(t("outbox.empty") + " (done)")',
    'raise BadValue("give the text")',
    'raise ConfigError(f"{path} exists")',
    '_emit(as_json, {"status": "sent"}, f"cancelled {id}")',
    'click.option("--wait", is_flag=True, help="Keep trying.")',
    '@click.command()\ndef send() -> None:\n    """Send TEXT to TO."""',
    '@server.command(name="invite")\ndef invite() -> None:\n    """Mint tokens."""',
    '@mix.group\ndef mix() -> None:\n    """Anonymous routing."""',
    'click.echo(t("send.queued", reason="the server is down"))',
])
def test_the_check_finds_english_that_bypasses_the_catalog(source: str) -> None:
    assert bypasses(source)


@pytest.mark.parametrize("source", [
    'click.echo(t("outbox.empty"))',
    'click.echo(json.dumps({"error": {"code": code}}), err=True)',
    '_emit(as_json, {"status": "sent", "id": m.id}, f"[{_when(ts)}] {who}: {text}")',
    '_err.print(f"[bold red]{t(\'recv.identity_changed\', who=w)}[/]")',
    'click.echo(t("id.lines", username=("@" + name) if name else "-"))',
    '@click.command("id", help=t("cmd.id"))\ndef show_id() -> None:\n    """Show."""',
])
def test_the_check_lets_json_markup_and_catalog_text_through(source: str) -> None:
    assert bypasses(source) == []


def test_entry_says_interrupted_in_the_same_words() -> None:
    # entry.py cannot import the catalog (a Ctrl-C may come while it loads), so it
    # carries the two lines itself.
    for language in ("en", "zh"):
        line = t("main.error_line", language, message=t("main.interrupted", language))
        assert entry.INTERRUPTED[language] == line + "\n"


# --- choosing the language -------------------------------------------------------------

@pytest.mark.parametrize(("environ", "language"), [
    ({}, "en"),
    ({"LANG": "zh_CN.UTF-8"}, "zh"),
    ({"LANG": "zh_TW.UTF-8"}, "zh"),
    ({"LANG": "zh"}, "zh"),
    ({"LANG": "en_US.UTF-8"}, "en"),
    ({"LANG": "C"}, "en"),
    ({"LANG": "POSIX"}, "en"),
    ({"LANG": "C.UTF-8"}, "en"),
    ({"LANG": "fr_FR.UTF-8"}, "en"),
    ({"LANG": ""}, "en"),
    ({"LC_MESSAGES": "zh_CN.UTF-8", "LANG": "en_US.UTF-8"}, "zh"),
    ({"LC_ALL": "C", "LC_MESSAGES": "zh_CN.UTF-8"}, "en"),
    ({"LC_ALL": "zh_CN.UTF-8", "LANG": "C"}, "zh"),
    ({"LC_ALL": "", "LANG": "zh_CN.UTF-8"}, "zh"),
    ({"VEIL_LANG": "zh", "LC_ALL": "en_US.UTF-8"}, "zh"),
    ({"VEIL_LANG": "en", "LANG": "zh_CN.UTF-8"}, "en"),
    ({"VEIL_LANG": "ZH-Hans", "LANG": "C"}, "zh"),
    ({"VEIL_LANG": " ", "LANG": "zh_CN.UTF-8"}, "zh"),
])
def test_the_language_rule(environ: dict[str, str], language: str,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    assert choose_language(environ) == language
    for name in i18n.LANGUAGE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert entry.language() == language == choose_language()


def test_these_tests_run_in_english() -> None:
    assert i18n.LANGUAGE == "en"
    assert t("outbox.empty") == "the outbox is empty"


# --- t, tn, explain ---------------------------------------------------------------------

def test_fields_and_plurals() -> None:
    assert t("verify.done", to="@bob") == "@bob is now verified"
    assert t("verify.done", "zh", to="@bob") == "@bob 已验证"
    assert tn("send.sent", 1, to="@bob", sealed="", route="direct") == \
        "sent to @bob (1 device, via direct)"
    assert tn("send.sent", 2, to="@bob", sealed=t("send.sealed"), route="mixnet") == \
        "sent to @bob (2 devices, sealed sender, via mixnet)"
    assert tn("send.sent", 2, "zh", to="@bob", sealed=t("send.sealed", "zh"),
              route=t("route.mixnet", "zh")) == "已发送给 @bob（2 台设备，密封发送，经由混合网络）"
    with pytest.raises(KeyError):
        t("no.such.key")


def test_errors_keep_english_and_get_a_chinese_sentence() -> None:
    from veil.client.errors import NotInitialised, ServerRejected, WrongPassphrase
    from veil.mixnet.errors import MixnetError

    missing = NotInitialised("no Veil identity in /tmp/张三; run 'veil init' first")
    assert explain(missing, language="en") == str(missing)
    zh = explain(missing, language="zh")
    assert zh.startswith(ERRORS_ZH["not_initialised"]) and "/tmp/张三" in zh
    assert explain(WrongPassphrase("wrong passphrase"), language="zh") == "口令错误"
    assert "wrong passphrase" in SAID_ENOUGH_ZH
    taken = ServerRejected(409, "username_taken", "username is taken")
    assert explain(taken, language="zh") == \
        f"{ERRORS_ZH['username_taken']}（{taken}）"
    said = localized(MixnetError(t("relay.timeout", "zh")))
    assert explain(said, language="zh") == t("relay.timeout", "zh")

    class NewKind(NotInitialised):          # a code added later: its parent's sentence
        code = "brand_new_code"
    assert explain(NewKind("x"), language="zh") == f"{ERRORS_ZH['not_initialised']}（x）"
    assert explain(ValueError("plain"), language="zh") == "plain"


def test_click_usage_errors_in_chinese(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(i18n, "LANGUAGE", "zh")

    @click.command()
    @click.argument("to")
    def cmd(to: str) -> None:
        """x"""

    ctx = click.Context(cmd, info_name="send")
    assert i18n.usage_message(click.NoSuchOption("--bogus", ctx=ctx)) == \
        "没有这个选项：--bogus"
    assert i18n.usage_message(click.MissingParameter(ctx=ctx, param=cmd.params[0])) == \
        "缺少参数 'TO'。"
    formatter = i18n.ChineseHelpFormatter()
    formatter.write_usage("veil", "[OPTIONS]")
    formatter.write_heading("Options")
    formatter.write_dl([("-h, --help", "Show this message and exit."),
                        ("--via", "Route.  [default: direct]")])
    text = formatter.getvalue()
    assert text.startswith("用法：veil [OPTIONS]") and "选项：" in text
    assert "显示本帮助并退出。" in text and "[默认：direct]" in text


def test_chinese_help_is_wrapped_by_terminal_cells() -> None:
    from rich.cells import cell_len

    from veil.cli.i18n import ChineseHelpFormatter, wrap_cells
    text = "通过 SOCKS5 代理连接，例如 socks5://127.0.0.1:9050（Tor）。消息会先存入发件箱。"
    lines = wrap_cells(text, 20)
    assert "".join(lines).replace(" ", "") == text.replace(" ", "")
    assert all(cell_len(line) <= 20 for line in lines if " " in line or len(line) < 20)
    assert not any(line.startswith(("。", "，", "）")) for line in lines)
    assert not any(line.endswith("（") for line in lines)
    formatter = ChineseHelpFormatter(width=40)
    formatter.write_dl([("--proxy TEXT", text), ("-h, --help", "Show this message and exit.")])
    written = formatter.getvalue().splitlines()
    assert all(cell_len(line) <= 40 for line in written if "socks5://" not in line)
    assert written[-1].strip() == "-h, --help    显示本帮助并退出。"   # aligned
