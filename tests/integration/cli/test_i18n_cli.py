"""The real ``veil`` console script in Simplified Chinese (``LANG=zh_CN.UTF-8``): help,
a sub-command's help and errors in Chinese, with the same exit codes as in English."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from rich.cells import cell_len

from veil.cli.catalog import ERRORS_ZH, ZH

SCRIPT = str(Path(sys.executable).with_name("veil"))


def veil(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("VEIL_LANG", "LC_ALL", "LC_MESSAGES", "LANG", "VEIL_HOME",
                          "VEIL_PASSPHRASE")}
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True,
                          env={**clean, **env}, stdin=subprocess.DEVNULL, timeout=60,
                          check=False)


def test_help_in_chinese() -> None:
    proc = veil("--help", LANG="zh_CN.UTF-8")
    assert proc.returncode == 0 and proc.stderr == ""
    out = proc.stdout
    assert out.startswith("用法：veil [OPTIONS] COMMAND [ARGS]...")
    assert ZH["cmd.veil"] in out and "选项：" in out and "命令：" in out
    assert "显示本帮助并退出。" in out and "Show this message" not in out
    assert "创建身份并在服务器上注册。" in out          # veil init's line


def _flat(text: str) -> str:
    """Help text without its line breaks and indentation (lines are wrapped by width)."""
    return re.sub(r"\s+", "", text)


def test_send_help_in_chinese() -> None:
    proc = veil("send", "--help", LANG="zh_CN.UTF-8", COLUMNS="80")
    assert proc.returncode == 0
    out = proc.stdout
    assert out.startswith("用法：veil send [OPTIONS] TO [TEXT]")
    assert _flat(ZH["opt.send.wait"]) in _flat(out) and _flat(ZH["opt.home"]) in _flat(out)
    assert "发件箱" in out and "[默认：direct]" in out
    # Wrapped by terminal cells: a Chinese line is no wider than the terminal (but for
    # a Latin word longer than the space left, which is never cut).
    assert all(cell_len(line) <= 80 for line in out.splitlines() if "socks5://" not in line)
    assert "Send TEXT to TO" not in out


def test_an_error_in_chinese_keeps_its_detail_and_exit_code(tmp_path: Path) -> None:
    home = tmp_path / "nonexistent"
    proc = veil("id", "--home", str(home), LANG="zh_CN.UTF-8")
    assert proc.returncode == 1 and proc.stdout == ""
    line = proc.stderr.strip()
    assert line.startswith("veil: " + ERRORS_ZH["not_initialised"]) and str(home) in line
    assert "Traceback" not in proc.stderr
    as_json = veil("id", "--home", str(home), "--json", LANG="zh_CN.UTF-8")
    error = json.loads(as_json.stderr)["error"]
    assert as_json.returncode == 1 and error["code"] == "not_initialised"   # codes stay
    assert error["message"].startswith(ERRORS_ZH["not_initialised"])


def test_a_usage_error_in_chinese() -> None:
    proc = veil("--home", "/nonexistent", "whoami", LANG="zh_CN.UTF-8")
    assert proc.returncode == 2
    assert "错误：没有这个选项：--home" in proc.stderr
    assert "运行 'veil -h' 查看帮助。" in proc.stderr


def test_veil_lang_wins_over_lang(tmp_path: Path) -> None:
    home = tmp_path / "nonexistent"
    proc = veil("id", "--home", str(home), VEIL_LANG="en", LANG="zh_CN.UTF-8")
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"veil: no Veil identity in {home}; run 'veil init' first"
    chinese = veil("send", VEIL_LANG="zh", LANG="C")
    assert chinese.returncode == 2 and "缺少参数 'TO'。" in chinese.stderr
