"""How anonymous is the mixnet? A discrete-event simulation with a global passive adversary.

Model (Loopix, Piotrowska et al., USENIX Security 2017, sections 3 and 5):

* N users, L layers of W mix nodes, then the provider. Every packet takes one random node
  per layer and is held at each for an exponentially distributed delay (mean D / L, so D
  is the mean added mixing latency): continuous-time stop-and-go mixes.
* Each user has real messages arriving as a Poisson process (rate ``real_rate``) and
  sends packets as a Poisson process of rate ``real_rate * (1 + cover_ratio)``. A tick
  sends the oldest waiting real message, else a cover packet (Loopix substitution: what
  ``veil.mixnet.client`` does). ``--sending immediate`` instead sends real messages on
  arrival plus an independent Poisson cover stream (no sender-side wait).
* The adversary sees the timing of every packet on every link, knows every packet's
  sender on the first link, and cannot tell real from cover traffic or read packets.

The adversary's knowledge is a probability distribution over senders for every packet
in flight (Serjantov & Danezis, PET 2002; Diaz et al., PET 2002). Exponential delays are
memoryless, so when a mix emits a packet, each packet it holds is equally likely to be
that one: the emitted packet's distribution is the mean of the held packets'
distributions, and the held packets all share that mixture afterwards. For a tagged real
message arriving at the provider we report the entropy H of that distribution (bits) and
the degree of anonymity H / log2(N).

The contrast without mixing delays (``onion``): packets are relayed first-in first-out
with a constant processing time, so the adversary matches each output to its input by
order and every tagged message has H = 0.

    .venv/bin/python bench/anonymity.py [--quick] [--plot docs/anonymity.png]
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import random
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

REAL_ARRIVAL, TICK, DEPART, COVER_TICK = 0, 1, 2, 3
ONION_HOP_SECONDS = 0.001


@dataclass(frozen=True)
class Config:
    users: int = 1000
    layers: int = 3
    width: int = 3
    real_rate: float = 1.0  # real messages per user per second
    cover_ratio: float = 2.0  # cover packets per real packet (configured)
    mean_delay: float = 0.5  # total mean mixing delay over all layers, seconds
    mode: str = "mix"  # "mix" or "onion"
    sending: str = "loopix"  # "loopix" (substitution) or "immediate"
    duration: float = 20.0  # simulated seconds
    warmup: float = 5.0
    seed: int = 1


@dataclass
class _Packet:
    sender: int
    real: bool
    created: float  # when the real message arrived at the sender (or the send time)
    sent: float
    dist: np.ndarray | None = None


def _entropy(p: np.ndarray) -> float:
    nz = p[p > 0]
    return float(-(nz * np.log2(nz)).sum())


def simulate(cfg: Config) -> dict[str, object]:
    rng = random.Random(cfg.seed)
    n, layers, width = cfg.users, cfg.layers, cfg.width
    send_rate = cfg.real_rate * (1 + cfg.cover_ratio)
    hop_mean = cfg.mean_delay / layers
    mass = [[np.zeros(n) for _ in range(width)] for _ in range(layers)]
    count = [[0] * width for _ in range(layers)]
    waiting: list[deque[float]] = [deque() for _ in range(n)]
    events: list[tuple[float, int, int, object]] = []
    seq = 0

    def push(t: float, kind: int, payload: object) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (t, seq, kind, payload))

    push(rng.expovariate(n * cfg.real_rate), REAL_ARRIVAL, None)
    if cfg.sending == "loopix":
        push(rng.expovariate(n * send_rate), TICK, None)
    elif cfg.cover_ratio > 0:
        push(rng.expovariate(n * cfg.real_rate * cfg.cover_ratio), COVER_TICK, None)
    real_sent = cover_sent = 0
    entropies: list[float] = []
    mix_latency: list[float] = []
    send_wait: list[float] = []
    end_sending = cfg.duration
    tag_until = cfg.duration - 5 * max(cfg.mean_delay, 0.01)

    def enter(t: float, packet: _Packet, layer: int) -> None:
        node = rng.randrange(width)
        if cfg.mode == "onion":
            push(t + ONION_HOP_SECONDS, DEPART, (packet, layer, node))
            return
        if packet.dist is None:
            mass[layer][node][packet.sender] += 1.0
        else:
            mass[layer][node] += packet.dist
        count[layer][node] += 1
        push(t + rng.expovariate(1 / hop_mean), DEPART, (packet, layer, node))

    def send(t: float, sender: int, real: bool, created: float) -> None:
        nonlocal real_sent, cover_sent
        if t >= cfg.warmup:
            if real:
                real_sent += 1
            else:
                cover_sent += 1
        enter(t, _Packet(sender, real, created, t), 0)

    while events:
        t, _, kind, payload = heapq.heappop(events)
        if kind == REAL_ARRIVAL:
            if t < end_sending:
                user = rng.randrange(n)
                if cfg.sending == "loopix":
                    waiting[user].append(t)
                else:
                    send(t, user, True, t)
                push(t + rng.expovariate(n * cfg.real_rate), REAL_ARRIVAL, None)
        elif kind == TICK:
            if t < end_sending:
                user = rng.randrange(n)
                if waiting[user]:
                    send(t, user, True, waiting[user].popleft())
                else:
                    send(t, user, False, t)
                push(t + rng.expovariate(n * send_rate), TICK, None)
        elif kind == COVER_TICK:
            if t < end_sending:
                send(t, rng.randrange(n), False, t)
                push(t + rng.expovariate(n * cfg.real_rate * cfg.cover_ratio), COVER_TICK,
                     None)
        else:
            packet, layer, node = payload  # type: ignore[misc]
            last = layer == layers - 1
            tagged = last and packet.real and cfg.warmup <= packet.sent <= tag_until
            if cfg.mode == "onion":
                # First in, first out at a constant pace: the output is matched to its
                # input by order, so the distribution is still the sender's point mass.
                if tagged:
                    entropies.append(0.0)
            else:
                pool, k = mass[layer][node], count[layer][node]
                count[layer][node] = k - 1
                if k == 1:
                    dist = pool.copy() if (tagged or not last) else None
                    pool[:] = 0.0
                else:
                    dist = pool / k if (tagged or not last) else None
                    pool *= (k - 1) / k
                packet.dist = dist
                if tagged and dist is not None:
                    entropies.append(_entropy(dist))
            if tagged:
                mix_latency.append(t - packet.sent)
                send_wait.append(packet.sent - packet.created)
            if not last:
                enter(t, packet, layer + 1)
    return _report(cfg, entropies, mix_latency, send_wait, real_sent, cover_sent)


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _report(cfg: Config, entropies: list[float], mix_latency: list[float],
            send_wait: list[float], real_sent: int, cover_sent: int) -> dict[str, object]:
    max_bits = math.log2(cfg.users)
    added = [a + b for a, b in zip(mix_latency, send_wait, strict=True)]

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs) if xs else float("nan")

    degree = mean(entropies) / max_bits
    cover_ratio = cover_sent / real_sent if real_sent else float("nan")
    out: dict[str, object] = {
        "workload": "anonymity",
        **{k: v for k, v in asdict(cfg).items() if k not in ("seed",)},
        "tagged_messages": len(entropies),
        "entropy_bits_mean": round(mean(entropies), 3),
        "entropy_bits_p5": round(_quantile(entropies, 0.05), 3),
        "max_entropy_bits": round(max_bits, 3),
        "degree_of_anonymity": round(degree, 4),
        "degree_p5": round(_quantile(entropies, 0.05) / max_bits, 4),
        "mix_latency_mean_s": round(mean(mix_latency), 4),
        "mix_latency_p99_s": round(_quantile(mix_latency, 0.99), 4),
        "send_wait_mean_s": round(mean(send_wait), 4),
        "send_wait_p99_s": round(_quantile(send_wait, 0.99), 4),
        "added_latency_mean_s": round(mean(added), 4),
        "added_latency_p99_s": round(_quantile(added, 0.99), 4),
        "cover_to_real_measured": round(cover_ratio, 3),
    }
    out["meets_target"] = bool(degree >= 0.8 and mean(added) <= 1.0 and cover_ratio <= 2.05)
    return out


def sweep(quick: bool, sending: str, **overrides: Any) -> list[Config]:
    if quick:
        base = Config(users=100, width=2, duration=4.0, warmup=1.0, sending=sending)
        return [Config(**{**asdict(base), "mode": "onion", "mean_delay": 0.0}),
                Config(**{**asdict(base), "mean_delay": 0.1, "cover_ratio": 1.0})]
    base = Config(sending=sending, **overrides)
    configs = [Config(**{**asdict(base), "mode": "onion", "mean_delay": 0.0,
                         "cover_ratio": c}) for c in (0.5, 2.0)]
    for cover in (0.5, 1.0, 2.0):
        for delay in (0.01, 0.05, 0.1, 0.25, 0.5, 1.0):
            configs.append(Config(**{**asdict(base), "cover_ratio": cover, "mean_delay": delay}))
    # Less real traffic means fewer packets to hide among: the same sweep at lower rates.
    for rate in (0.1, 0.3):
        for delay in (0.1, 0.25, 0.5, 1.0):
            configs.append(Config(**{**asdict(base), "real_rate": rate, "cover_ratio": 2.0,
                                     "mean_delay": delay, "duration": 10 + 4 / rate,
                                     "warmup": 2 + 1 / rate}))
    return configs


def plot(results: list[dict[str, object]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.6))
    series = sorted({(r["real_rate"], r["cover_ratio"]) for r in results if r["mode"] == "mix"},
                    reverse=True)
    for rate, cover in series:
        rows = [r for r in results if r["mode"] == "mix" and r["cover_ratio"] == cover
                and r["real_rate"] == rate]
        rows.sort(key=lambda r: r["mean_delay"])
        label = f"{rate:g} msg/s/user, cover {cover:g}x"
        style = "-" if rate >= 1 else "--"
        for ax, key in ((left, "mix_latency_mean_s"), (right, "added_latency_mean_s")):
            ax.plot([r[key] for r in rows], [r["degree_of_anonymity"] for r in rows],
                    marker="o", linestyle=style, label=label)
    onion = [r for r in results if r["mode"] == "onion"]
    for ax in (left, right):
        if onion:
            ax.scatter([0.003], [onion[0]["degree_of_anonymity"]], marker="x", color="red",
                       s=80, label="onion routing (no mixing delay)", zorder=5)
        ax.axhline(0.8, color="grey", linestyle="--", linewidth=1)
        ax.axvline(1.0, color="grey", linestyle=":", linewidth=1)
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("degree of anonymity H / log2 N")
        ax.grid(alpha=0.3)
    left.set_xlabel("mean mixing latency (s), 3 layers")
    right.set_xlabel("mean added latency incl. sender queue wait (s)")
    left.legend(loc="lower right", fontsize=8)
    users = results[0]["users"]
    fig.suptitle(f"Sender anonymity vs latency: N={users}, 3 layers x {results[0]['width']} "
                 f"mixes, global passive adversary ({results[0]['sending']} sending)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sweep (smoke test)")
    parser.add_argument("--sending", choices=["loopix", "immediate"], default="loopix")
    parser.add_argument("--plot", help="write a PNG of the curve (needs matplotlib)")
    parser.add_argument("--users", type=int, default=Config.users)
    parser.add_argument("--width", type=int, default=Config.width, help="mixes per layer")
    parser.add_argument("--seed", type=int, default=Config.seed)
    args = parser.parse_args()
    results = []
    for cfg in sweep(args.quick, args.sending, users=args.users, width=args.width,
                     seed=args.seed):
        start = time.perf_counter()
        result = simulate(cfg)
        result["wall_s"] = round(time.perf_counter() - start, 2)
        print(json.dumps(result, sort_keys=True), flush=True)
        results.append(result)
    if args.plot:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
