"""The rate-limit policy (issue 13 §2): override parsing, the default table, checks
across dimensions, exemption, events, and persistence of registration buckets."""

from __future__ import annotations

from pathlib import Path

import pytest

from veil.server.errors import ConfigError, RateLimited
from veil.server.http.routes import ROUTES
from veil.server.protection import events as ev
from veil.server.protection.events import EventHub, SecurityEvent
from veil.server.protection.policy import (
    CLASSES,
    LimiterStore,
    Rate,
    RateLimits,
    parse_rate,
    resolve,
)
from veil.server.protection.settings import LimitSettings


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_parse_rate() -> None:
    assert parse_rate("10/3600s burst 20") == Rate(10, 3600, 20)
    assert parse_rate(" 2.5 / 1s  burst 5 ") == Rate(2.5, 1, 5)
    assert parse_rate("off") is None


@pytest.mark.parametrize("text", ["", "10", "10/s burst 1", "10/60 burst 1", "0/1s burst 1",
                                  "1/0s burst 1", "1/1s burst 0", "1/1s", "-1/1s burst 1",
                                  "1/1m burst 1", "lots"])
def test_bad_rates_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_rate(text)


@pytest.mark.parametrize("key", ["register", "register.", "nosuch.address",
                                 "register.galaxy", ".address"])
def test_unknown_limits_are_config_errors(key: str) -> None:
    with pytest.raises(ConfigError):
        resolve(LimitSettings(rates={key: "1/1s burst 1"}))


def test_overrides_replace_defaults_one_by_one() -> None:
    table = resolve(LimitSettings(rates={"register.address": "2/60s burst 3",
                                         "submit.pair": "off"}))
    assert table["register.address"] == Rate(2, 60, 3)
    assert table["submit.pair"] is None
    assert table["keys_claim.target"] is not None


def test_every_route_class_has_a_default() -> None:
    for route in ROUTES:
        assert route.rate_limit in CLASSES, route.rate_limit


def test_the_share_of_a_queue_follows_its_size() -> None:
    table = resolve(LimitSettings(), queue_size=400)
    share = table["submit.share"]
    assert share is not None and share.burst == 100


def _limits(clock: Clock, **rates: str) -> tuple[RateLimits, list[SecurityEvent]]:
    hub = EventHub(clock)
    seen: list[SecurityEvent] = []
    hub.subscribe(seen.append)
    return RateLimits(LimitSettings(rates=rates), hub, clock), seen


def test_check_refuses_with_retry_after_and_an_event() -> None:
    clock = Clock()
    limits, seen = _limits(clock, **{"register.address": "1/10s burst 2"})
    limits.check("register", address="10.0.0.1")
    limits.check("register", address="10.0.0.1")
    with pytest.raises(RateLimited) as info:
        limits.check("register", address="10.0.0.1")
    assert info.value.retry_after == 10
    assert info.value.details == {"retry_after": 10, "limit": "register"}
    assert [(e.kind, e.source, e.fields["limit_class"]) for e in seen] == [
        (ev.RATE_LIMITED, "10.0.0.1", "register")]
    limits.check("register", address="10.0.0.2")  # another address is not affected


def test_a_refusal_on_one_dimension_takes_nothing_from_the_others() -> None:
    clock = Clock()
    limits, _ = _limits(clock, **{"keys_claim.target": "1/3600s burst 1",
                                  "keys_claim.pair": "1/3600s burst 5"})
    limits.check("keys_claim", address="10.0.0.1", target="t", pair="10.0.0.1>t")
    for _ in range(3):
        with pytest.raises(RateLimited):
            limits.check("keys_claim", address="10.0.0.1", target="t", pair="10.0.0.1>t")
    # The pair bucket was refunded each time: four claims of another target still pass.
    for _ in range(4):
        limits.check("keys_claim", address="10.0.0.1", pair="10.0.0.1>t")


def test_exempt_addresses_skip_every_limit() -> None:
    clock = Clock()
    limits, seen = _limits(clock, **{"register.address": "1/3600s burst 1"})
    for _ in range(100):
        limits.check("register", address="127.0.0.1")
        limits.check("register", address="::1", account="a")
    assert not seen


def test_unknown_classes_take_the_fallback_bucket() -> None:
    clock = Clock()
    limits, _ = _limits(clock, **{"*.address": "1/3600s burst 1"})
    limits.check("brand_new", address="10.0.0.1")
    with pytest.raises(RateLimited):
        limits.check("brand_new", address="10.0.0.1")


def test_exhausted_and_spend_count_failures() -> None:
    clock = Clock()
    limits, _ = _limits(clock, **{"auth_failure.address": "1/60s burst 2"})
    assert limits.exhausted("auth_failure", "10.0.0.1") == 0.0
    limits.spend("auth_failure", "10.0.0.1")
    limits.spend("auth_failure", "10.0.0.1")
    assert limits.exhausted("auth_failure", "10.0.0.1") > 0.0
    clock.now += 60
    assert limits.exhausted("auth_failure", "10.0.0.1") == 0.0


async def test_registration_buckets_survive_a_restart_in_a_file(tmp_path: Path) -> None:
    rates = {"register.address": "1/3600s burst 2"}
    wall = [1_000_000]
    path = tmp_path / "limits.json"
    limits, _ = _limits(Clock(), **rates)
    store = LimiterStore(limits, object(), path, lambda: wall[0])
    await store.open()
    limits.check("register", address="10.0.0.9")
    limits.check("register", address="10.0.0.9")
    await store.close()
    wall[0] += 1000
    again, _ = _limits(Clock(), **rates)
    store = LimiterStore(again, object(), path, lambda: wall[0])
    await store.open()
    with pytest.raises(RateLimited):
        again.check("register", address="10.0.0.9")
    again.check("register", address="10.0.0.10")
    await store.close()


def test_a_bad_override_in_the_config_file_is_a_config_error(tmp_path: Path) -> None:
    from veil.server.config import load_config

    path = tmp_path / "server.toml"
    path.write_text('[limits]\nrates = {"register.address" = "many"}\n')
    with pytest.raises(ConfigError, match=r"register\.address"):
        load_config(path)
    path.write_text('[limits]\nrates = {"register.address" = "3/60s burst 3"}\n')
    assert load_config(path).limits.rates == {"register.address": "3/60s burst 3"}


def test_reload_keeps_unchanged_buckets_and_applies_new_rates() -> None:
    clock = Clock()
    limits, _ = _limits(clock, **{"register.address": "1/3600s burst 1",
                                  "lookup.address": "1/3600s burst 1"})
    limits.check("register", address="10.0.0.1")
    limits.check("lookup", address="10.0.0.1")
    limits.reload(LimitSettings(rates={"register.address": "1/3600s burst 1",
                                       "lookup.address": "1/3600s burst 3"}))
    with pytest.raises(RateLimited):
        limits.check("register", address="10.0.0.1")  # unchanged: still empty
    limits.check("lookup", address="10.0.0.1")  # changed: a new, full bucket
    limits.reload(LimitSettings(enabled=False))
    limits.check("register", address="10.0.0.1")
