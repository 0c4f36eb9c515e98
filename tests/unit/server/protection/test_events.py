"""The event hub: every subscriber in order, per-kind subscriptions, faults kept apart."""

from __future__ import annotations

import logging

import pytest

from veil.server.protection import events as ev
from veil.server.protection.events import EventHub, SecurityEvent


def test_subscribers_see_events_in_subscription_order_and_only_their_kinds() -> None:
    hub = EventHub(lambda: 5.0)
    seen: list[tuple[str, str]] = []
    hub.subscribe(lambda e: seen.append(("all", e.kind)))
    hub.subscribe(lambda e: seen.append(("alerts", e.kind)), (ev.ALERT,))
    hub.subscribe(lambda e: seen.append(("all2", e.kind)))
    hub.emit(ev.MESSAGE_SUBMIT, "127.0.0.2", target="t")
    hub.emit(ev.ALERT, "127.0.0.2", rule="x")
    assert seen == [("all", ev.MESSAGE_SUBMIT), ("all2", ev.MESSAGE_SUBMIT),
                    ("all", ev.ALERT), ("alerts", ev.ALERT), ("all2", ev.ALERT)]


def test_an_event_nobody_wants_is_not_built() -> None:
    hub = EventHub(lambda: 1.0)
    alerts: list[SecurityEvent] = []
    hub.subscribe(alerts.append, (ev.ALERT,))
    assert not hub.wanted(ev.MESSAGE_SUBMIT)
    assert hub.emit(ev.MESSAGE_SUBMIT, "127.0.0.2") is None
    assert hub.wanted(ev.ALERT)
    event = hub.emit(ev.ALERT, "127.0.0.2", count=3, rule="r")
    assert event is not None and alerts == [event]
    assert (event.kind, event.source, event.at, event.count, event.fields) == (
        ev.ALERT, "127.0.0.2", 1.0, 3, {"rule": "r"})


def test_a_subscriber_added_or_removed_later_changes_who_is_called() -> None:
    hub = EventHub(lambda: 0.0)
    first: list[str] = []
    late: list[str] = []
    hub.subscribe(lambda e: first.append(e.kind), (ev.TIMEOUT,))
    hub.emit(ev.TIMEOUT)  # the per-kind list is cached now
    hub.subscribe(lambda e: late.append(e.kind))
    hub.emit(ev.TIMEOUT)
    assert first == [ev.TIMEOUT, ev.TIMEOUT] and late == [ev.TIMEOUT]

    def gone(e: SecurityEvent) -> None:
        raise AssertionError("unsubscribed, still called")

    hub.subscribe(gone)
    hub.unsubscribe(gone)
    hub.emit(ev.TIMEOUT)
    assert len(first) == 3 and len(late) == 2


def test_a_failing_subscriber_is_logged_and_the_others_still_run(
        caplog: pytest.LogCaptureFixture) -> None:
    hub = EventHub(lambda: 0.0)
    after: list[str] = []

    def broken(e: SecurityEvent) -> None:
        raise RuntimeError("a bug in a counter")

    hub.subscribe(broken)
    hub.subscribe(lambda e: after.append(e.kind))
    with caplog.at_level(logging.ERROR, logger="veil.server.protection"):
        hub.emit(ev.MALFORMED, "127.0.0.2")
    assert after == [ev.MALFORMED]
    assert "subscriber failed on malformed" in caplog.text
