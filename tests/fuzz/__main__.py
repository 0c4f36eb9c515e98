"""Run harnesses under atheris: ``python -m tests.fuzz [NAME ...] [-s SECONDS] [-r RUNS]``."""

from __future__ import annotations

import argparse
import subprocess
import sys

from tests.fuzz.runner import guarded, harness_names, load


def _run_one(name: str, seconds: int, runs: int) -> None:
    import atheris  # imported here: the pytest smoke run does not need it in-process

    # Coverage guidance: instrument Veil's modules as the harness imports them.
    with atheris.instrument_imports(include=["veil"]):
        module = load(name)
    fn = guarded(module)
    args = [sys.argv[0], f"-max_total_time={seconds}", "-rss_limit_mb=4096"]
    if runs:
        args.append(f"-runs={runs}")
    atheris.Setup(args, fn)
    atheris.Fuzz()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", help="harness names (default: all)")
    parser.add_argument("-s", "--seconds", type=int, default=30)
    parser.add_argument("-r", "--runs", type=int, default=0)
    parser.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    names = opts.names or harness_names()
    if opts.single:
        _run_one(names[0], opts.seconds, opts.runs)
        return 0
    failed = []
    for name in names:
        # One process per harness: atheris.Fuzz() never returns.
        cmd = [sys.executable, "-m", "tests.fuzz", name, "--single",
               "-s", str(opts.seconds), "-r", str(opts.runs)]
        print(f"== fuzz {name} ({opts.seconds}s)", flush=True)
        if subprocess.run(cmd, check=False).returncode != 0:
            failed.append(name)
    print(f"{len(names) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
