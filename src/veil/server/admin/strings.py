"""Every word of the admin dashboard, in English and Simplified Chinese (issue 13 §4).

The page is rendered in the language the browser asks for (``Accept-Language``) or
the one the operator last chose with the toggle (cookie ``veil_admin_lang``); both
catalogs travel with the page as a JSON data block, so the toggle switches in place.
tests/unit/server/protection/test_metrics.py checks that both have the same keys and fields.
"""

from __future__ import annotations

from typing import Final

EN: Final[dict[str, str]] = {
    "title": "Veil admin",
    "lang.toggle": "中文",
    "login.heading": "Sign in to the admin console",
    "login.token": "Admin token",
    "login.hint": "The token is in the file admin/token of the server's data directory "
    "(readable by the operator only).",
    "login.submit": "Sign in",
    "login.wrong": "That token is not right.",
    "logout": "Sign out",
    "live": "live",
    "offline": "reconnecting…",
    "card.traffic": "Requests per second",
    "card.latency": "Latency p50 / p99",
    "card.connections": "Connections",
    "card.alerts": "Alerts since start",
    "card.blocks": "Blocks in force",
    "card.messages": "Stored / delivered",
    "card.uptime": "Uptime",
    "chart.traffic": "Requests per second, last two minutes",
    "chart.latency": "Latency p99 (ms), last two minutes",
    "alerts.heading": "Recent alerts",
    "alerts.none": "No alerts.",
    "alerts.rule": "Rule",
    "alerts.count": "Events",
    "alerts.source": "Source (keyed hash)",
    "alerts.blocked": "Blocked for",
    "blocks.heading": "Active blocks",
    "blocks.none": "No address is blocked.",
    "blocks.id": "Block",
    "blocks.rule": "Rule",
    "blocks.source": "Source (keyed hash)",
    "blocks.left": "Time left",
    "blocks.count": "Offences",
    "blocks.lift": "Lift",
    "blocks.lifted": "Block {id} lifted.",
    "blocks.unavailable": "This server has no block list.",
    "deny.heading": "Deny a network",
    "deny.cidr": "CIDR (IPv4 or IPv6), e.g. 203.0.113.0/24",
    "deny.submit": "Deny",
    "deny.done": "Connections from {cidr} are now refused.",
    "deny.rules": "Deny rules added at run time",
    "deny.none": "No runtime deny rules.",
    "deny.remove": "Remove",
    "deny.removed": "Rule {cidr} removed.",
    "error.failed": "Failed: {message}",
    "kind.websocket": "WebSocket",
    "kind.sealed_websocket": "Sealed WebSocket",
    "kind.http": "HTTP",
    "kind.tcp": "TCP",
    "kind.other": "Other",
    "registration": "Registration: {mode}",
    "mode.open": "open",
    "mode.invite": "invite only",
    "mode.pow": "proof of work",
    "footer": "Veil {version} · Prometheus metrics at /metrics · no identifiers are "
    "shown here: sources are keyed hashes",
    "unit.ms": "ms",
    "unit.s": "s",
    "unit.min": "min",
    "unit.h": "h",
    "unit.d": "d",
}

ZH: Final[dict[str, str]] = {
    "title": "Veil 管理控制台",
    "lang.toggle": "English",
    "login.heading": "登录管理控制台",
    "login.token": "管理令牌",
    "login.hint": "令牌保存在服务器数据目录的 admin/token 文件中（只有运维人员可读）。",
    "login.submit": "登录",
    "login.wrong": "令牌不正确。",
    "logout": "退出登录",
    "live": "实时",
    "offline": "正在重新连接…",
    "card.traffic": "每秒请求数",
    "card.latency": "延迟 p50 / p99",
    "card.connections": "连接数",
    "card.alerts": "启动以来的警报",
    "card.blocks": "生效中的封禁",
    "card.messages": "已存储 / 已投递",
    "card.uptime": "运行时间",
    "chart.traffic": "每秒请求数（最近两分钟）",
    "chart.latency": "p99 延迟（毫秒，最近两分钟）",
    "alerts.heading": "最近的警报",
    "alerts.none": "没有警报。",
    "alerts.rule": "规则",
    "alerts.count": "事件数",
    "alerts.source": "来源（带密钥哈希）",
    "alerts.blocked": "封禁时长",
    "blocks.heading": "生效中的封禁",
    "blocks.none": "没有被封禁的地址。",
    "blocks.id": "封禁",
    "blocks.rule": "规则",
    "blocks.source": "来源（带密钥哈希）",
    "blocks.left": "剩余时间",
    "blocks.count": "违规次数",
    "blocks.lift": "解除",
    "blocks.lifted": "已解除封禁 {id}。",
    "blocks.unavailable": "此服务器没有封禁列表。",
    "deny.heading": "拒绝一个网段",
    "deny.cidr": "CIDR（IPv4 或 IPv6），例如 203.0.113.0/24",
    "deny.submit": "拒绝",
    "deny.done": "现在拒绝来自 {cidr} 的连接。",
    "deny.rules": "运行时添加的拒绝规则",
    "deny.none": "没有运行时拒绝规则。",
    "deny.remove": "移除",
    "deny.removed": "已移除规则 {cidr}。",
    "error.failed": "失败：{message}",
    "kind.websocket": "WebSocket",
    "kind.sealed_websocket": "密封 WebSocket",
    "kind.http": "HTTP",
    "kind.tcp": "TCP",
    "kind.other": "其他",
    "registration": "注册方式：{mode}",
    "mode.open": "开放",
    "mode.invite": "仅限邀请",
    "mode.pow": "工作量证明",
    "footer": "Veil {version} · Prometheus 指标在 /metrics · 此处不显示任何标识符："
    "来源均为带密钥的哈希",
    "unit.ms": "毫秒",
    "unit.s": "秒",
    "unit.min": "分钟",
    "unit.h": "小时",
    "unit.d": "天",
}

CATALOGS: Final[dict[str, dict[str, str]]] = {"en": EN, "zh": ZH}
LANG_COOKIE = "veil_admin_lang"


def choose_language(cookie: str | None, accept_language: str | None) -> str:
    """``"zh"`` or ``"en"``: the operator's toggle first, then the browser's wish."""
    if cookie in CATALOGS:
        return cookie
    best, best_q = "en", -1.0
    for part in (accept_language or "").split(","):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        lang = tag.strip().lower().split("-")[0]
        if lang in CATALOGS and q > best_q:
            best, best_q = lang, q
    return best


__all__ = [
    "CATALOGS",
    "EN",
    "LANG_COOKIE",
    "ZH",
    "choose_language",
]
