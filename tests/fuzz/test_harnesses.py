"""Every fuzz harness, briefly: seeds, random and mutated inputs, and a short atheris run."""

from __future__ import annotations

import importlib.util
import os
import random
import subprocess
import sys

import pytest

from tests.fuzz.runner import guarded, harness_names, load

NAMES = harness_names()
RANDOM_INPUTS = 3000


def _mutate(rng: random.Random, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(rng.randint(1, 8)):
        choice = rng.randrange(4)
        if choice == 0 and data:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif choice == 1 and data:
            del data[rng.randrange(len(data)):][: rng.randint(1, 16)]
        elif choice == 2:
            pos = rng.randrange(len(data) + 1)
            data[pos:pos] = rng.randbytes(rng.randint(1, 16))
        elif data:
            data = data[: rng.randrange(len(data))]
    return bytes(data)


@pytest.mark.parametrize("name", NAMES)
def test_random_and_mutated_inputs_raise_only_documented_errors(name: str) -> None:
    module = load(name)
    run = guarded(module)
    seeds: list[bytes] = list(getattr(module, "SEEDS", []))
    for seed in seeds:
        run(seed)
    rng = random.Random(name)
    for i in range(RANDOM_INPUTS):
        if seeds and i % 2:
            run(_mutate(rng, rng.choice(seeds)))
        else:
            run(rng.randbytes(rng.randint(0, 512)))


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris not installed")
@pytest.mark.parametrize("name", NAMES)
def test_short_atheris_run(name: str) -> None:
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.run(
        [sys.executable, "-m", "tests.fuzz", name, "--single", "-s", "5", "-r", "3000"],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
