"""The intrusion rules and the Detector (issue 13 §3): every rule fires at its threshold
and not below, windows slide, blocks follow (lengthening for repeat offenders), exempt
sources are never blocked, memory is bounded, alerts carry no address. Injected clock."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.unit.server.protection.test_blocks import Clock, hashed
from veil.server.errors import ConfigError
from veil.server.protection import events as ev
from veil.server.protection.addresses import NetworkList
from veil.server.protection.blocks import BlockList
from veil.server.protection.events import EventHub, SecurityEvent
from veil.server.protection.rules import (
    DEFAULT_RULES,
    RULE_NAMES,
    Detector,
    Window,
    resolve_rules,
)
from veil.server.protection.settings import RuleSettings

ATTACKER = "127.0.0.2"

# How each rule's events are emitted: (kind, fields) — what the other layers send.
TRIGGERS: dict[str, tuple[str, dict[str, Any]]] = {
    "auth_bruteforce": (ev.AUTH_FAILURE, {}),
    "key_draining": (ev.KEY_CLAIM, {}),  # the target varies; tested below
    "key_draining_target": (ev.KEY_PACKAGE_CLAIM, {"target": "victim"}),
    "message_flood": (ev.RATE_LIMITED, {"limit_class": "submit", "dimension": "pair"}),
    "message_volume": (ev.MESSAGE_SUBMIT, {}),
    "message_flood_target": (ev.MESSAGE_SUBMIT, {"target": "victim"}),
    "malformed_storm": (ev.MALFORMED, {}),
    "route_scan": (ev.UNKNOWN_ROUTE, {"route": "fallback"}),
    "registration_storm": (ev.REGISTRATION, {}),
    "oversized_storm": (ev.OVERSIZED, {}),
    "connection_flood": (ev.CONNECTION_REFUSED, {"reason": "cap"}),
    "slowloris": (ev.SLOW_CONNECTION, {"phase": "header"}),
}


class Rig:
    def __init__(self, settings: RuleSettings | None = None, max_keys: int = 1000) -> None:
        self.clock = Clock()
        self.settings = settings or RuleSettings()
        self.hub = EventHub(self.clock)
        self.seen: list[SecurityEvent] = []
        self.hub.subscribe(self.seen.append)
        self.blocks = BlockList(None, self.hub, self.settings, self.clock, self.clock.ms,
                                keyed=hashed,
                                is_exempt=NetworkList(("127.0.0.1/32",)).contains)
        self.detector = Detector(self.settings, self.hub, self.blocks, self.clock,
                                 self.clock.ms, keyed=hashed, max_keys=max_keys)

    def emit(self, rule: str, times: int, source: str = ATTACKER, every: float = 0.0,
             **extra: Any) -> None:
        kind, fields = TRIGGERS[rule]
        for _ in range(times):
            self.hub.emit(kind, source, **{**fields, **extra})
            self.clock.advance(every)

    def alerts(self, rule: str | None = None) -> list[SecurityEvent]:
        return [e for e in self.seen if e.kind == ev.ALERT
                and (rule is None or e.fields["rule"] == rule)]


def test_every_rule_has_a_trigger_and_sane_defaults() -> None:
    assert set(TRIGGERS) == set(RULE_NAMES)
    for rule in DEFAULT_RULES:
        assert rule.threshold >= 10 and rule.window_s >= 10 and rule.enabled
        # Detected within 5 s of an attack running at 20 events a second or more.
        assert rule.threshold / 20 <= 5 or rule.name in (
            "key_draining", "message_volume", "message_flood_target")


@pytest.mark.parametrize("name", RULE_NAMES)
def test_rule_fires_at_threshold_and_not_below(name: str) -> None:
    rig = Rig()
    rule = rig.detector.rules[name]
    rig.emit(name, rule.threshold - 1, every=0.01)
    assert rig.alerts(name) == []
    assert rig.blocks.blocked_for(ATTACKER) is None
    rig.emit(name, 1)
    [alert] = rig.alerts(name)
    assert alert.fields["rule"] == name
    assert alert.fields["hits"] == rule.threshold
    assert alert.count == 1  # one firing (metrics count firings by the event's count)
    assert alert.fields["window_s"] == rule.window_s
    if rule.key == "source":
        assert alert.source == ATTACKER
        assert alert.fields["source_hash"] == hashed(ATTACKER)
    else:
        assert alert.source is None and alert.fields["source_hash"] == "victim"
    left = rig.blocks.blocked_for(ATTACKER)
    if rule.blocks:
        assert left == pytest.approx(rule.block_s)
        assert alert.fields["blocked_s"] == rule.block_s and alert.fields["block_id"]
    else:
        assert left is None and alert.fields["blocked_s"] == 0
    kept = [a for a in rig.detector.alerts() if a.rule == name]
    assert len(kept) == 1 and kept[0].count == rule.threshold


def test_counts_of_batched_events_add_up() -> None:
    rig = Rig(RuleSettings(overrides={"message_volume.threshold": 100}))
    rig.hub.emit(ev.MESSAGE_SUBMIT, ATTACKER, count=60)
    assert rig.alerts() == []
    rig.hub.emit(ev.MESSAGE_SUBMIT, ATTACKER, count=40)
    assert [a.fields["hits"] for a in rig.alerts()] == [100]


def test_events_that_do_not_match_a_rule_are_not_counted() -> None:
    rig = Rig()
    for _ in range(200):
        rig.hub.emit(ev.RATE_LIMITED, ATTACKER, limit_class="lookup", dimension="address")
        rig.hub.emit(ev.CONNECTION_REFUSED, ATTACKER, reason="blocked")
        rig.hub.emit(ev.TIMEOUT, ATTACKER, phase="keepalive")
        rig.hub.emit(ev.KEY_CLAIM, ATTACKER)  # no target: counted per source only
        rig.hub.emit(ev.AUTH_FAILURE, None)  # no source
    assert {a.fields["rule"] for a in rig.alerts()} == {"key_draining"}


def test_windows_slide() -> None:
    rig = Rig()  # auth_bruteforce: 20 in 60 s
    rig.emit("auth_bruteforce", 19, every=0.1)
    rig.clock.advance(125)  # two windows later: nothing of it counts any more
    rig.emit("auth_bruteforce", 19, every=0.1)
    assert rig.alerts() == []
    # Spread over time, the old ones fade out of the window: 1 every 4 s never fires.
    rig.clock.advance(125)
    rig.emit("auth_bruteforce", 100, every=4.0)
    assert rig.alerts() == []
    # ... 1 every 2 s does (30 in the window).
    rig.emit("auth_bruteforce", 40, every=2.0)
    assert [a.fields["rule"] for a in rig.alerts()] == ["auth_bruteforce"]


def test_window_estimate_never_exceeds_the_last_two_windows() -> None:
    window = Window(0.0)
    assert window.add(0.0, 5, 10) == 5
    assert window.add(9.9, 5, 10) == 10
    assert window.add(15.0, 1, 10) == pytest.approx(10 * 0.5 + 1)
    assert window.add(25.0, 0, 10) == pytest.approx(1 * 0.5)
    assert window.add(100.0, 3, 10) == 3  # long quiet: starts afresh


def test_repeat_offenders_are_blocked_longer_each_time() -> None:
    rig = Rig()
    rule = rig.detector.rules["route_scan"]
    lengths = []
    for _ in range(3):
        rig.emit("route_scan", rule.threshold)
        left = rig.blocks.blocked_for(ATTACKER)
        assert left is not None
        lengths.append(round(left))
        # While blocked, events of the source (refusals in flight) raise no new alert.
        rig.emit("route_scan", rule.threshold * 2)
        rig.clock.advance(left + 1)
        assert rig.blocks.blocked_for(ATTACKER) is None
    assert lengths == [900, 1800, 3600]
    assert [a.fields["blocked_s"] for a in rig.alerts()] == [900, 1800, 3600]
    assert [e.fields["by"] for e in rig.seen if e.kind == ev.BLOCK_LIFTED] == ["expiry"] * 3


def test_block_is_for_the_attacker_only() -> None:
    rig = Rig()
    rig.emit("auth_bruteforce", 20)
    assert rig.blocks.blocked_for(ATTACKER) is not None
    assert rig.blocks.blocked_for("127.0.0.3") is None
    rig.emit("auth_bruteforce", 19, source="127.0.0.3")
    assert rig.blocks.blocked_for("127.0.0.3") is None


def test_exempt_source_alerts_once_per_window_but_is_never_blocked() -> None:
    rig = Rig()
    rig.emit("malformed_storm", 100, source="127.0.0.1", every=0.1)  # 10 s
    alerts = rig.alerts()
    assert len(alerts) == 1 and alerts[0].fields["blocked_s"] == 0
    assert rig.blocks.blocked_for("127.0.0.1") is None
    rig.emit("malformed_storm", 600, source="127.0.0.1", every=0.1)  # 60 s more
    assert len(rig.alerts()) == 2


def test_per_target_rule_alerts_without_blocking_anyone() -> None:
    rig = Rig()
    # Many sources, one victim: no source reaches its own threshold.
    for i in range(40):
        rig.hub.emit(ev.KEY_CLAIM, f"10.0.{i}.1", target="victim")
    [alert] = rig.alerts()
    assert alert.fields["rule"] == "key_draining_target"
    assert alert.fields["source_hash"] == "victim" and alert.fields["scope"] == "target"
    assert len(rig.blocks) == 0


def test_alert_is_logged_as_one_line_without_the_address(
        caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig()
    with caplog.at_level(logging.WARNING, logger="veil.server.protection"):
        rig.emit("oversized_storm", 10)
    lines = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(lines) == 1
    text = lines[0].getMessage()
    assert "oversized_storm" in text and hashed(ATTACKER) in text
    assert ATTACKER not in text and "\n" not in text


def test_alert_events_carry_no_raw_address_in_their_fields() -> None:
    rig = Rig()
    rig.emit("registration_storm", 30)
    [alert] = rig.alerts()
    assert ATTACKER not in repr(alert.fields)
    assert ATTACKER not in repr(rig.detector.alerts()[0].as_dict())


def test_overrides_change_one_setting_at_a_time() -> None:
    rules = resolve_rules(RuleSettings(overrides={
        "auth_bruteforce.threshold": 5, "auth_bruteforce.window_s": 10,
        "route_scan.block_s": 0, "slowloris.enabled": 0}))
    assert (rules["auth_bruteforce"].threshold, rules["auth_bruteforce"].window_s) == (5, 10)
    assert rules["auth_bruteforce"].block_s == 900
    assert rules["route_scan"].block_s == 0 and not rules["route_scan"].blocks
    assert not rules["slowloris"].enabled
    rig = Rig(RuleSettings(overrides={"auth_bruteforce.threshold": 3, "slowloris.enabled": 0,
                                      "route_scan.block_s": 0}))
    rig.emit("auth_bruteforce", 3)
    rig.emit("slowloris", 100, source="127.0.0.4")
    rig.emit("route_scan", 30, source="127.0.0.5")
    assert [a.fields["rule"] for a in rig.alerts()] == ["auth_bruteforce", "route_scan"]
    assert rig.blocks.blocked_for("127.0.0.5") is None


@pytest.mark.parametrize("overrides", [
    {"no_such_rule.threshold": 3}, {"auth_bruteforce.speed": 3}, {"auth_bruteforce": 3},
    {"auth_bruteforce.threshold": 0}, {"auth_bruteforce.threshold": 2.5},
    {"auth_bruteforce.window_s": 0}, {"auth_bruteforce.block_s": -1},
    {"auth_bruteforce.enabled": 2},
])
def test_bad_overrides_are_configuration_errors(overrides: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        resolve_rules(RuleSettings(overrides=overrides))


def test_detection_switched_off() -> None:
    rig = Rig(RuleSettings(enabled=False))
    rig.emit("auth_bruteforce", 1000)
    assert rig.alerts() == [] and len(rig.blocks) == 0


def test_reload_keeps_counters_of_unchanged_rules() -> None:
    rig = Rig()
    rig.emit("auth_bruteforce", 15)
    rig.emit("route_scan", 25)
    rig.detector.reload(RuleSettings(overrides={"route_scan.threshold": 40}))
    rig.emit("auth_bruteforce", 5)  # 15 + 5: kept, fires
    rig.emit("route_scan", 25)  # counted afresh: 25 < 40
    assert [a.fields["rule"] for a in rig.alerts()] == ["auth_bruteforce"]


def test_memory_is_bounded() -> None:
    rig = Rig(RuleSettings(max_alerts_kept=50), max_keys=100)
    for i in range(5000):
        rig.hub.emit(ev.UNKNOWN_ROUTE, f"10.{i // 250}.{i % 250}.1")
    for table in rig.detector._tables.values():
        assert len(table.windows) <= 100
    for i in range(200):
        rig.emit("auth_bruteforce", 20, source=f"10.9.{i}.1")
    assert len(rig.detector) == 50
    newest = rig.detector.alerts(limit=5)
    assert len(newest) == 5 and newest[0].source_hash == hashed("10.9.199.1")


def test_alert_ids_and_times() -> None:
    rig = Rig()
    rig.emit("auth_bruteforce", 20)
    rig.emit("auth_bruteforce", 20, source="127.0.0.3")
    first, second = reversed(rig.detector.alerts())
    assert second.id == first.id + 1
    assert first.at == rig.clock.ms() and first.block_id is not None
    assert rig.blocks.get(first.block_id) is not None


def test_a_source_blocked_briefly_fires_again_as_soon_as_it_resumes() -> None:
    rig = Rig(RuleSettings(overrides={"auth_bruteforce.block_s": 5}))
    rig.emit("auth_bruteforce", 20)
    rig.clock.advance(6)  # the block is over, well inside the rule's 60 s window
    assert rig.blocks.blocked_for(ATTACKER) is None
    rig.emit("auth_bruteforce", 20)
    assert [a.fields["blocked_s"] for a in rig.alerts()] == [5, 10]


def test_reload_reaches_the_block_list() -> None:
    rig = Rig()
    rig.detector.reload(RuleSettings(max_block_s=1000))
    rig.emit("registration_storm", 30)  # block_s 3600, capped at the new maximum
    assert rig.blocks.blocked_for(ATTACKER) == pytest.approx(1000)
