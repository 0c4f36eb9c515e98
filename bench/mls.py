"""MLS (RFC 9420) group operation timings, as JSON lines.

    .venv/bin/python bench/mls.py            # n = 10, 100, 1000, 10000
    .venv/bin/python bench/mls.py --quick    # n = 10, 100, one repetition

Workloads, per group size n (cipher suite 1):
* ``create``: the creator adds n-1 members in one Commit (KeyPackage validation, tree
  update, key schedule, Welcome with n-1 HPKE encryptions); ``join`` is one new member
  processing that Welcome (validates every leaf signature and every parent hash).
* ``create_batched`` (n > 1000): the same group built with commits of at most 1,000
  Adds each; reports the slowest single commit and the slowest processing of one by the
  first member (how an application keeps every commit under a budget).
* ``cold_update``: right after that creation every parent node is blank, so a member's
  first Update path must be encrypted to ~n leaves: the worst case TreeKEM allows.
* ``add`` / ``update`` / ``remove`` in a steady-state group: every parent node holds a
  key, as after members have committed over time. The tree is prepared by applying a
  TreeKEM path for every even leaf (tree-only, no messages), then two real members
  (committer and receiver) commit and process with the library's public API.
* ``state_bytes`` (n >= 1000, or ``--state-sizes``): the receiver of that steady-state
  group saves its state: bytes of the slow part and of the hot part (``Group.save``)
  after one real application message, then with ``senders`` members having sent (their
  ratchets derived as decrypting one message each would), next to the size of the
  version-1 single blob the same state had (``v1_bytes``: what every message rewrote
  before the split; written here with the old layout). Times: ``save_hot_ms`` (what one
  message costs to persist now), ``save_ms`` (both parts, per epoch), ``v1_ms``,
  ``restore_ms``.

Each line: {"workload", "n", "commit_ms", "process_ms", ...} with medians over the
repetitions. Every timed call starts after a full garbage collection: otherwise a pass
owed to the garbage of earlier phases (10 ms at n = 1000, ~100 ms at 10,000) lands in
whichever call happens to cross the threshold. ``reference`` lines quote published
figures for other implementations (not measured here) and measure one HPKE seal, the unit
cost of TreeKEM, in this run.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from veil.core.mls import keyschedule as ks
from veil.core.mls import treemath as tm
from veil.core.mls.codec import Writer
from veil.core.mls.crypto import get_suite
from veil.core.mls.group import Group
from veil.core.mls.keyschedule import EpochSecrets
from veil.core.mls.leaf import Credential
from veil.core.mls.messages import GroupContext
from veil.core.mls.persist import write_member
from veil.core.mls.secret_tree import APPLICATION, SecretTree
from veil.core.mls.state import LEGACY_VERSION, GroupState
from veil.core.mls.tree import RatchetTree, write_ratchet_tree_nodes
from veil.core.mls.treekem import apply_new_path
from veil.core.mls.welcome import KeyPackageBundle

SUITE = 1
NOW = 1_800_000_000


def _ms(f: Callable[[], object]) -> tuple[float, object]:
    # A full collection first, so that a pause owed to the garbage of earlier phases is
    # not charged to this call (collections the call itself triggers still are).
    gc.collect()
    t = time.perf_counter()
    out = f()
    return (time.perf_counter() - t) * 1000, out


def _bundles(n: int, name: str = "member") -> list[KeyPackageBundle]:
    return [Group.key_package(SUITE, Credential.basic(f"{name}-{i}".encode()), now=NOW)
            for i in range(n)]


def bench_create(n: int) -> list[dict[str, object]]:
    bundles = _bundles(n)
    kps = [b.key_package.encoded() for b in bundles[1:]]
    lines: list[dict[str, object]] = []
    if n <= 1000:
        # The Welcome's HPKE context is the whole encrypted GroupInfo, so carrying the
        # tree inside it costs O(n) hashing per new member: O(n^2) for the creation.
        first = Group.create(SUITE, Credential.basic(b"creator"), now=NOW)
        ms, out = _ms(lambda: first.commit(add=kps, now=NOW))
        lines.append({"workload": "create_tree_in_welcome", "n": n,
                      "commit_ms": round(ms, 2), "welcome_bytes": len(out.welcome)})  # type: ignore[attr-defined]
    creator = Group.create(SUITE, Credential.basic(b"creator"), now=NOW)
    commit_ms, out = _ms(lambda: creator.commit(add=kps, now=NOW,
                                                include_tree_in_welcome=False))
    creator.merge_pending_commit()
    welcome = out.welcome  # type: ignore[attr-defined]
    tree = GroupState.decode(creator.serialize()).tree.encode()
    join_ms, member = _ms(lambda: Group.join(welcome, bundles[1], ratchet_tree=tree, now=NOW))
    assert member.epoch_authenticator == creator.epoch_authenticator  # type: ignore[attr-defined]
    lines += [
        {"workload": "create", "n": n, "commit_ms": round(commit_ms, 2),
         "welcome_bytes": len(welcome), "tree": "out of band"},
        {"workload": "join", "n": n, "process_ms": round(join_ms, 2)},
    ]
    if n >= 2:
        m: Group = member  # type: ignore[assignment]
        # Every other leaf is in a copath resolution of a cold tree: n - 1 HPKE seals,
        # the floor of this commit; the seal is timed right before it (the machine's
        # speed drifts between runs).
        floor_ms = (n - 1) * _seal_us() / 1000
        c_ms, upd = _ms(lambda: m.commit(update=True, now=NOW))
        m.merge_pending_commit()
        p_ms, _ = _ms(lambda: creator.process_and_merge(upd.commit, now=NOW))  # type: ignore[attr-defined]
        assert m.epoch_authenticator == creator.epoch_authenticator
        lines.append({"workload": "cold_update", "n": n, "commit_ms": round(c_ms, 2),
                      "process_ms": round(p_ms, 2), "hpke_seals": n - 1,
                      "seal_floor_ms": round(floor_ms, 2)})
    return lines


def bench_create_batched(n: int, batch: int = 1000) -> list[dict[str, object]]:
    """Build an n-member group with commits of at most ``batch`` Adds each.

    RFC 9420 lets a creator add members over several commits; this is how an application
    keeps every commit of a large group under a time budget. The first member to join
    processes every later batch, so its processing time is measured too.
    """
    bundles = _bundles(n)
    kps = [b.key_package.encoded() for b in bundles[1:]]
    creator = Group.create(SUITE, Credential.basic(b"creator"), now=NOW)
    member: Group | None = None
    commit_times: list[float] = []
    process_times: list[float] = []
    for start in range(0, len(kps), batch):
        chunk = kps[start:start + batch]
        gc.collect()
        t = time.perf_counter()
        out = creator.commit(add=chunk, now=NOW, include_tree_in_welcome=False)
        commit_times.append((time.perf_counter() - t) * 1000)
        creator.merge_pending_commit()
        if member is None:
            assert out.welcome is not None
            tree = GroupState.decode(creator.serialize()).tree.encode()
            member = Group.join(out.welcome, bundles[1], ratchet_tree=tree, now=NOW)
        else:
            gc.collect()
            t = time.perf_counter()
            member.process_and_merge(out.commit, now=NOW)
            process_times.append((time.perf_counter() - t) * 1000)
        assert member.epoch_authenticator == creator.epoch_authenticator
    return [{"workload": "create_batched", "n": n, "batch": batch,
             "commits": len(commit_times),
             "commit_ms": round(max(commit_times), 2),
             "process_ms": round(max(process_times), 2) if process_times else None,
             "total_commit_ms": round(sum(commit_times), 2),
             "what": "slowest commit / slowest processing by the first member"}]


def warm_pair(n: int, *, epoch: int = 1,
              private_handshakes: bool = False) -> tuple[Group, Group]:
    """Two members of an n-member group whose parent nodes all hold keys (at ``epoch``;
    ``private_handshakes`` as the Delivery Service requires, bench/groups.py)."""
    suite = get_suite(SUITE)
    bundles = _bundles(n)
    gid = os.urandom(16)
    nodes: list[object] = []
    for b in bundles:
        nodes += [b.key_package.leaf_node, None]
    tree = RatchetTree.from_nodes(suite, nodes[:-1])  # type: ignore[arg-type]
    keys: dict[int, tuple[bytes, bytes]] = {
        2 * i: (b.key_package.leaf_node.encryption_key, b.encryption_priv)
        for i, b in enumerate(bundles)
    }
    for leaf in range(0, n, 2):
        current = tree.leaf(leaf)
        assert current is not None
        pending = apply_new_path(suite, tree, leaf, current, bundles[leaf].signature_priv, gid)
        for x, priv in pending.result.private_keys.items():
            node = tree.nodes[x]
            assert node is not None
            keys[x] = (node.encryption_key, priv)
    ctx = GroupContext(SUITE, gid, epoch, tree.tree_hash(), os.urandom(32))
    secrets = ks.epoch_from_joiner(suite, os.urandom(32), None, ctx.encoded())
    tag = suite.mac(secrets.confirmation_key, ctx.confirmed_transcript_hash)
    members = []
    for leaf in (n // 2 + 1 if n > 2 else 0, 1):
        mine = {x: keys[x] for x in [2 * leaf, *tm.direct_path(2 * leaf, tree.n_leaves)]
                if x in keys and tree.nodes[x] is not None
                and tree.nodes[x].encryption_key == keys[x][0]}  # type: ignore[union-attr]
        state = GroupState(
            suite, ctx, tree.copy(), ks.interim_transcript_hash(
                suite, ctx.confirmed_transcript_hash, tag),
            tag, secrets, SecretTree(suite, secrets.encryption_secret, tree.n_leaves), leaf,
            bundles[leaf].signature_priv, mine)
        members.append(Group(state, private_handshakes=private_handshakes))
    return members[0], members[1]


def bench_steady(n: int, reps: int) -> list[dict[str, object]]:
    committer, receiver = warm_pair(n)
    spare = _bundles(reps, "spare")  # one leaf per credential: not the members' names
    results: dict[str, tuple[list[float], list[float]]] = {
        w: ([], []) for w in ("add", "update", "remove")}
    for r in range(reps):
        for workload in ("update", "add", "remove"):
            if workload == "add":
                kp = spare[r].key_package.encoded()
                c_ms, out = _ms(lambda kp=kp: committer.commit(add=[kp], now=NOW))
            elif workload == "update":
                c_ms, out = _ms(lambda: committer.commit(update=True, now=NOW))
            else:
                victim = max(i for i, _ in committer.members()
                             if i not in (committer.my_leaf, receiver.my_leaf))
                c_ms, out = _ms(lambda v=victim: committer.commit(remove=[v], now=NOW))
            committer.merge_pending_commit()
            p_ms, _ = _ms(lambda o=out: receiver.process_and_merge(o.commit, now=NOW))  # type: ignore[attr-defined]
            assert receiver.epoch_authenticator == committer.epoch_authenticator
            results[workload][0].append(c_ms)
            results[workload][1].append(p_ms)
    return [
        {"workload": w, "n": n, "commit_ms": round(statistics.median(c), 2),
         "process_ms": round(statistics.median(p), 2), "reps": reps}
        for w, (c, p) in results.items()
    ]


def _v1_blob(s: GroupState) -> bytes:
    """The version-1 single blob of ``s``, in the layout the library wrote up to 2ed2fe2."""
    w = Writer()
    w.u8(LEGACY_VERSION)
    w.u16(s.suite.suite_id)
    s.context.write(w)
    write_ratchet_tree_nodes(w, s.tree.nodes)
    w.opaque(s.interim_transcript_hash)
    w.opaque(s.confirmation_tag)
    for name in EpochSecrets.__slots__:
        w.opaque(getattr(s.secrets, name))
    s.secret_tree.write(w)
    write_member(w, s)
    return w.bytes()


def bench_state_bytes(n: int) -> list[dict[str, object]]:
    """Saved-state sizes and save times of one member of an n-member group."""
    committer, receiver = warm_pair(n)
    receiver.save()
    receiver.process(committer.encrypt(b"m" * 100), now=NOW)
    assert receiver.dirty == {"hot"}
    s = receiver._live()
    hot_ms, hot = _ms(receiver.save_hot)
    save_ms, saved = _ms(receiver.save)
    v1_ms, v1 = _ms(lambda: _v1_blob(s))
    # The old layout is what the version-1 reader reads, and it holds the same state.
    legacy = Group.restore_legacy(v1, private_handshakes=False, unique_credentials=True)
    assert legacy.save() == saved
    restore_ms, back = _ms(lambda: Group.restore(saved))  # type: ignore[arg-type]
    assert back.save() == saved  # type: ignore[attr-defined]
    lines: list[dict[str, object]] = [{
        "workload": "state_bytes", "n": n, "senders": 1,
        "slow_bytes": len(saved.slow), "hot_bytes": len(hot),  # type: ignore[attr-defined,arg-type]
        "v1_bytes": len(v1), "save_hot_ms": round(hot_ms, 3), "save_ms": round(save_ms, 2),
        "v1_ms": round(v1_ms, 2), "restore_ms": round(restore_ms, 2)}]
    others = [i for i in range(n) if i not in (s.my_leaf, committer.my_leaf)]
    chosen = random.Random(n).sample(others, min(1000, len(others)))
    done = 1
    for senders in (10, 100, 1000):
        if senders > len(chosen) + 1:
            break
        for leaf in chosen[done - 1:senders - 1]:
            s.secret_tree.consume(leaf, APPLICATION, 0)
        done = senders
        hot_ms, hot = _ms(receiver.save_hot)
        lines.append({"workload": "state_bytes", "n": n, "senders": senders,
                      "slow_bytes": len(saved.slow), "hot_bytes": len(hot),  # type: ignore[attr-defined,arg-type]
                      "v1_bytes": len(_v1_blob(s)), "save_hot_ms": round(hot_ms, 3)})
    return lines


def _seal_us(reps: int = 200) -> float:
    """One HPKE seal as TreeKEM does it (info encoded once), in microseconds."""
    suite = get_suite(SUITE)
    pub = suite.generate_hpke_key_pair().public
    info = suite.hpke_info(b"UpdatePathNode", b"c" * 64)
    t = time.perf_counter()
    for _ in range(reps):
        suite.seal_with_info(pub, info, b"s" * 32)
    return (time.perf_counter() - t) / reps * 1e6


def reference() -> list[dict[str, object]]:
    seal_us = _seal_us()
    return [
        {"workload": "reference", "what": "one HPKE seal (X25519, this run)",
         "us": round(seal_us, 1)},
        {"workload": "reference", "what": "OpenMLS, one Add to a 1000-member group "
         "(published 2021, not measured here)", "ms": 700},
        {"workload": "reference", "what": "mls-rs, add 1000 members at once "
         "(published, not measured here)", "ms": 160},
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="n = 10, 100; one repetition")
    parser.add_argument("--sizes", default=None, help="comma-separated group sizes")
    parser.add_argument("--batch", type=int, default=1000,
                        help="most Adds per commit in the create_batched row (default 1000)")
    parser.add_argument("--state-sizes", default=None,
                        help="comma-separated group sizes for state_bytes (default: n >= 1000)")
    args = parser.parse_args()
    sizes = [10, 100] if args.quick else [10, 100, 1000, 10000]
    if args.sizes:
        sizes = [int(s) for s in args.sizes.split(",")]
    for line in reference():
        print(json.dumps(line), flush=True)
    for n in sizes:
        for line in bench_create(n):
            print(json.dumps(line), flush=True)
        if n > args.batch:
            for line in bench_create_batched(n, args.batch):
                print(json.dumps(line), flush=True)
        reps = 1 if args.quick else (5 if n <= 1000 else 3)
        for line in bench_steady(n, reps):
            print(json.dumps(line), flush=True)
    state_sizes = ([int(s) for s in args.state_sizes.split(",")] if args.state_sizes
                   else [n for n in sizes if n >= 1000])
    for n in state_sizes:
        for line in bench_state_bytes(n):
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
