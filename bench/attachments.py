"""Attachment transfers through the product: upload and download throughput, client and
server memory, and the cost of a resume (issue 12 §6), as JSON lines, one per size.

    .venv/bin/python bench/attachments.py               # 1, 10 and 100 MiB, 3 runs
    .venv/bin/python bench/attachments.py --quick       # 1 and 3 MiB, 1 run (smoke test)
    .venv/bin/python bench/attachments.py --profile /tmp/att.prof   # + cProfile of a child

One real server process (``python -m veil.server``, data directory on this machine's
disk) serves both sides of the comparison, in the same run, over loopback:

* **Veil**: a child process opens a registered client home and moves a file of random
  bytes with :class:`veil.client.attachments.Attachments` over
  :class:`veil.client.blob_http.BlobHttp`: chunked AES-256-GCM encryption and padding,
  tus 1.0 ``POST`` + ``HEAD`` + one streamed ``PATCH``; then the download (``GET``,
  decryption, digest check, fsync and rename of the saved file). A child of its own per
  run, so that its ``ru_maxrss`` is the peak of these transfers: ``client_peak_rss_mb``,
  and ``client_rss_growth_mb`` over the child's peak just before the first timed transfer
  (after a 64 KiB warm-up transfer, so imports and the HTTP session are in the baseline).
* **plain**: ``curl`` against the same server with the same account: ``POST`` then one
  ``PATCH --data-binary @file`` of the unencrypted file, and a ``GET`` of it with the
  blob's token. Times are curl's own ``%{time_total}`` per request (summed for the
  upload), so the start of the curl process is not counted against it. curl writes
  its download without an fsync; Veil fsyncs (every 8 MiB and at the end) before it
  names the file: ``download_vs_plain_fsynced`` divides by curl's time plus an fsync
  of curl's output (information; the target is on ``download_vs_plain``). Which side
  goes first alternates from run to run.

Throughputs are file MiB per second (``size_mib`` / seconds; Veil's blob is a little
larger: padding and tags); ``upload_vs_plain`` / ``download_vs_plain`` are Veil's over
curl's, medians over ``--runs`` runs (the ratio is taken per run, then the median).

``server_peak_rss_mb`` is the server's peak resident memory while a Veil child ran
(``VmHWM`` after resetting it through ``/proc/PID/clear_refs``; where that is refused,
the largest ``VmRSS`` sampled every 5 ms), ``plain_server_peak_rss_mb`` the same while
curl ran, ``server_rss_growth_mb`` Veil's peak over the server's resident memory just
before that child started.

``resume_overhead_s``: in the same child, the same transfer again, interrupted once
mid-way (the task cancelled as the progress passes 50 %, as a killed client would stop)
and resumed from the job in the encrypted store with a new ``BlobHttp`` (a new
connection): the resumed total (first attempt + resume, wall clock) minus the
uninterrupted transfer's time. ``upload_resume_overhead_s`` and
``download_resume_overhead_s`` are the two directions; ``resume_overhead_s`` is the
larger. A download resumes from its last checkpoint (every 8 MiB after an fsync), so
below 8 MiB it starts again from the first byte.

Targets (printed with each row): ``upload_vs_plain`` and ``download_vs_plain`` ≥ 0.5,
``resume_overhead_s`` < 1 s, and memory bounded: client and server peaks at most
``target_rss_growth_vs_smallest_mb`` above those of the smallest size's row.

The server's ``max_blob_bytes`` is raised to 128 MiB: a 100 MiB file's ciphertext is
104,883,200 bytes (100 MiB of Padmé-padded plaintext + 1,600 GCM tags), above the
default limit of exactly 100 MiB. The quota is raised so that three runs fit; every
blob is deleted (tus termination) after its run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _server import BenchServer, b64, rss_kib

MIB = 1 << 20
SIZES_MIB = (1, 10, 100)
QUICK_SIZES_MIB = (1, 3)
PASSPHRASE = "bench"
TARGET_VS_PLAIN = 0.5
TARGET_RESUME_S = 1.0
TARGET_RSS_GROWTH_MB = 16.0
SETTINGS: dict[str, Any] = {"max_blob_bytes": 128 * MIB, "blob_quota_bytes": 16 << 30,
                            "max_blobs_per_account": 100_000}


def _mb(kib: float) -> float:
    return round(kib / 1024, 1)


def _rate(size_mib: float, seconds: float) -> float:
    return round(size_mib / seconds, 2) if seconds > 0 else 0.0


# --- the Veil client, in a child process -----------------------------------------------

def _peak_kib() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


async def _veil_transfers(cfg: dict[str, Any]) -> dict[str, Any]:
    from veil.client import Client
    from veil.client.attachments import Attachments, TransferProgress
    from veil.client.blob_http import BlobHttp

    work = Path(cfg["work"])
    source = Path(cfg["source"])
    half = source.stat().st_size // 2
    client = await Client.open(Path(cfg["home"]), passphrase=PASSPHRASE)
    authorization = client._ctx.api.authorization
    https: list[BlobHttp] = []

    def attachments() -> Attachments:
        https.append(BlobHttp(cfg["url"], authorization))
        return Attachments(client._ctx.store, https[-1])

    blobs: list[str] = []
    try:
        att = attachments()
        warm = work / "warm.bin"
        warm.write_bytes(os.urandom(64 * 1024))       # imports, session, store: baseline
        pointer = await att.upload(att.new_upload(warm))
        blobs.append(pointer.blob_id)
        (await att.download(pointer, work / "warm")).unlink()
        baseline = _peak_kib()

        t0 = time.perf_counter()
        pointer = await att.upload(att.new_upload(source))
        upload_s = time.perf_counter() - t0
        blobs.append(pointer.blob_id)
        t0 = time.perf_counter()
        saved = await att.download(pointer, work / "down")
        download_s = time.perf_counter() - t0

        # Interrupted once at ~50 % and resumed from the store, with a new connection.
        job = att.new_upload(source)
        upload_task: asyncio.Task[Any] | None = None

        def cut_upload(p: TransferProgress) -> None:
            if p.done >= half and upload_task is not None and not upload_task.done():
                upload_task.cancel()
        t0 = time.perf_counter()
        upload_task = asyncio.create_task(att.upload(job, cut_upload))
        with contextlib.suppress(asyncio.CancelledError):
            await upload_task
        upload_cut_s = time.perf_counter() - t0
        stored = att.upload_job(job.job_id)
        assert stored is not None and stored.blob_id is not None and stored.digest is None
        blobs.append(stored.blob_id)
        resumed_at: list[int] = []
        again = attachments()
        resumed_pointer = await again.upload(stored, lambda p: resumed_at.extend(
            [p.resumed_at] if p.resumed_at is not None else []))
        upload_resumed_s = time.perf_counter() - t0

        download_task: asyncio.Task[Any] | None = None

        def cut_download(p: TransferProgress) -> None:
            if p.done >= half and download_task is not None and not download_task.done():
                download_task.cancel()
        t0 = time.perf_counter()
        download_task = asyncio.create_task(
            again.download(resumed_pointer, work / "resumed", cut_download))
        with contextlib.suppress(asyncio.CancelledError):
            await download_task
        download_cut_s = time.perf_counter() - t0
        resumed_saved = await attachments().download(resumed_pointer, work / "resumed")
        download_resumed_s = time.perf_counter() - t0
        peak = _peak_kib()
        for blob_id in blobs:
            await https[-1].terminate(blob_id)
        return {
            "upload_s": upload_s, "download_s": download_s,
            "upload_resumed_s": upload_resumed_s, "upload_cut_s": upload_cut_s,
            "upload_resumed_at": resumed_at[0] if resumed_at else 0,
            "download_resumed_s": download_resumed_s, "download_cut_s": download_cut_s,
            "saved": str(saved), "resumed_saved": str(resumed_saved),
            "client_baseline_kib": baseline, "client_peak_kib": peak,
        }
    finally:
        for http in https:
            await http.close()
        await client.close()


def child_main(cfg: dict[str, Any]) -> None:
    if cfg.get("profile"):
        import cProfile

        profiler = cProfile.Profile()
        result = profiler.runcall(asyncio.run, _veil_transfers(cfg))
        profiler.dump_stats(cfg["profile"])
    else:
        result = asyncio.run(_veil_transfers(cfg))
    print(json.dumps(result), flush=True)


def run_veil_child(cfg: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(cfg)],
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"the Veil child failed:\n{proc.stderr[-4000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


# --- the server's memory ----------------------------------------------------------------

class ServerMemory:
    """The server's peak resident memory over a stretch of the run: VmHWM after a reset
    through clear_refs, else (or as well) the largest VmRSS sampled every 5 ms."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before_kib = rss_kib(pid)
        self.hwm_reset = False
        with contextlib.suppress(OSError):
            Path(f"/proc/{pid}/clear_refs").write_text("5")
            self.hwm_reset = True
        self._sampled = self.before_kib
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            with contextlib.suppress(OSError, RuntimeError):
                self._sampled = max(self._sampled, rss_kib(self.pid))

    def __enter__(self) -> ServerMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kib = max(self._sampled, rss_kib(self.pid, "VmHWM")) if self.hwm_reset \
            else self._sampled


# --- curl, the plain reference ----------------------------------------------------------

def _curl(*args: str) -> tuple[float, str]:
    """curl's own time for the request (``%{time_total}``) and its output."""
    marker = "\n@@time_total="
    out = subprocess.run(["curl", "-sS", "--fail", "-H", "Expect:", "-w",
                          marker + "%{time_total}", *args],
                         check=True, capture_output=True, text=True, timeout=600).stdout
    text, _, seconds = out.rpartition(marker)
    return float(seconds), text


def run_plain(url: str, authorization: str, source: Path, work: Path) -> dict[str, Any]:
    token = b64(os.urandom(32))
    auth = f"Authorization: {authorization}"
    tus = "Tus-Resumable: 1.0.0"
    create_s, head = _curl("-i", "-X", "POST", url + "/v1/uploads", "-H", auth, "-H", tus,
                           "-H", f"Upload-Length: {source.stat().st_size}",
                           "-H", f"Veil-Blob-Token: {token}")
    path = next(line.split(":", 1)[1].strip() for line in head.splitlines()
                if line.lower().startswith("location:"))
    patch_s, _ = _curl("-X", "PATCH", url + path, "-H", auth, "-H", tus,
                       "-H", "Content-Type: application/offset+octet-stream",
                       "-H", "Upload-Offset: 0", "--data-binary", f"@{source}")
    out = work / "plain.out"
    download_s, _ = _curl("-o", str(out), "-H", f"Veil-Blob-Token: {token}",
                          url + path.replace("/v1/uploads/", "/v1/blobs/"))
    t0 = time.perf_counter()                  # what Veil's download does on top: fsync
    fd = os.open(out, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_s = time.perf_counter() - t0
    same = _sha256(out) == _sha256(source)
    out.unlink()
    _curl("-X", "DELETE", url + path, "-H", auth, "-H", tus)
    if not same:
        raise RuntimeError("curl's download is not the file it uploaded")
    return {"upload_s": create_s + patch_s, "download_s": download_s, "fsync_s": fsync_s}


# --- the run ----------------------------------------------------------------------------

def _sha256(path: Path) -> bytes:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(MIB):
            digest.update(block)
    return digest.digest()


def _random_file(path: Path, size: int) -> Path:
    with path.open("wb") as f:
        for start in range(0, size, MIB):
            f.write(os.urandom(min(MIB, size - start)))
    return path


async def _register(home: Path, url: str) -> str:
    from veil.client import Client
    from veil.client.store import FAST

    client = await Client.register(home, url, username=None, passphrase=PASSPHRASE,
                                   kdf=FAST)
    try:
        authorization = client._ctx.api.authorization
        assert authorization is not None
        return authorization
    finally:
        await client.close()


def one_run(server: BenchServer, authorization: str, home: Path, source: Path,
            work: Path, profile: str | None, plain_first: bool) -> dict[str, Any]:
    """One Veil child and one curl transfer; which goes first alternates between runs
    (the page cache's dirty-page writeback of one slows the writes of the next)."""
    size_mib = source.stat().st_size / MIB
    cfg = {"home": str(home), "url": server.url, "source": str(source),
           "work": str(work), "profile": profile}

    def plain_side() -> tuple[dict[str, Any], ServerMemory]:
        with ServerMemory(server.proc.pid) as memory:
            return run_plain(server.url, authorization, source, work), memory

    def veil_side() -> tuple[dict[str, Any], ServerMemory]:
        with ServerMemory(server.proc.pid) as memory:
            return run_veil_child(cfg), memory
    if plain_first:
        plain, plain_mem = plain_side()
        veil, veil_mem = veil_side()
    else:
        veil, veil_mem = veil_side()
        plain, plain_mem = plain_side()
    for saved in (veil["saved"], veil["resumed_saved"]):
        if _sha256(Path(saved)) != _sha256(source):
            raise RuntimeError("Veil's download is not the file it uploaded")
    shutil.rmtree(work)
    work.mkdir()
    up_overhead = veil["upload_resumed_s"] - veil["upload_s"]
    down_overhead = veil["download_resumed_s"] - veil["download_s"]
    return {
        "upload_mb_s": _rate(size_mib, veil["upload_s"]),
        "download_mb_s": _rate(size_mib, veil["download_s"]),
        "plain_upload_mb_s": _rate(size_mib, plain["upload_s"]),
        "plain_download_mb_s": _rate(size_mib, plain["download_s"]),
        "upload_vs_plain": round(plain["upload_s"] / veil["upload_s"], 3),
        "download_vs_plain": round(plain["download_s"] / veil["download_s"], 3),
        "download_vs_plain_fsynced": round(
            (plain["download_s"] + plain["fsync_s"]) / veil["download_s"], 3),
        "upload_s": round(veil["upload_s"], 4), "download_s": round(veil["download_s"], 4),
        "plain_upload_s": round(plain["upload_s"], 4),
        "plain_download_s": round(plain["download_s"], 4),
        "plain_download_fsync_s": round(plain["fsync_s"], 4),
        "client_peak_rss_mb": _mb(veil["client_peak_kib"]),
        "client_baseline_rss_mb": _mb(veil["client_baseline_kib"]),
        "client_rss_growth_mb": _mb(veil["client_peak_kib"] - veil["client_baseline_kib"]),
        "server_peak_rss_mb": _mb(veil_mem.peak_kib),
        "server_rss_before_mb": _mb(veil_mem.before_kib),
        "server_rss_growth_mb": _mb(veil_mem.peak_kib - veil_mem.before_kib),
        "plain_server_peak_rss_mb": _mb(plain_mem.peak_kib),
        "resume_overhead_s": round(max(up_overhead, down_overhead), 3),
        "upload_resume_overhead_s": round(up_overhead, 3),
        "download_resume_overhead_s": round(down_overhead, 3),
        "upload_resumed_at_mib": round(veil["upload_resumed_at"] / MIB, 2),
        "server_hwm_reset": veil_mem.hwm_reset,
    }


RUN_LISTS = ("upload_vs_plain", "download_vs_plain", "download_vs_plain_fsynced",
             "resume_overhead_s")


def median_row(size_mib: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    row: dict[str, Any] = {"workload": "attachments", "size_mib": size_mib,
                           "runs": len(runs)}
    for key, first in runs[0].items():
        if isinstance(first, bool):
            row[key] = all(r[key] for r in runs)
        else:
            row[key] = round(statistics.median(r[key] for r in runs), 4)
    for key in RUN_LISTS:           # the spread behind the medians
        row[key + "_runs"] = [r[key] for r in runs]
    return row


def with_targets(row: dict[str, Any], smallest: dict[str, Any] | None) -> dict[str, Any]:
    base = smallest or row
    client_delta = round(row["client_peak_rss_mb"] - base["client_peak_rss_mb"], 1)
    server_delta = round(row["server_peak_rss_mb"] - base["server_peak_rss_mb"], 1)
    row.update({
        "client_peak_vs_smallest_mb": client_delta,
        "server_peak_vs_smallest_mb": server_delta,
        "target_vs_plain": TARGET_VS_PLAIN,
        "target_resume_overhead_s": TARGET_RESUME_S,
        "target_rss_growth_vs_smallest_mb": TARGET_RSS_GROWTH_MB,
        "meets_targets": {
            "upload_vs_plain": row["upload_vs_plain"] >= TARGET_VS_PLAIN,
            "download_vs_plain": row["download_vs_plain"] >= TARGET_VS_PLAIN,
            "resume_overhead_s": row["resume_overhead_s"] < TARGET_RESUME_S,
            "memory_bounded": max(client_delta, server_delta) <= TARGET_RSS_GROWTH_MB,
        },
    })
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="1 and 3 MiB, one run (the smoke test)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", metavar="MIB",
                        help=f"file sizes in MiB (default {' '.join(map(str, SIZES_MIB))})")
    parser.add_argument("--profile", metavar="PATH",
                        help="also run the largest size's Veil child once more under "
                             "cProfile and write its stats to PATH (not in the figures)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(json.loads(args.child))
        return
    if shutil.which("curl") is None:
        sys.exit("curl is not installed: it is the plain reference")
    sizes = args.sizes or (QUICK_SIZES_MIB if args.quick else SIZES_MIB)
    runs = 1 if args.quick else args.runs
    server = BenchServer(SETTINGS)
    tmp = Path(tempfile.mkdtemp(prefix="veil-bench-attachments-"))
    try:
        home = tmp / "home"
        authorization = asyncio.run(_register(home, server.url))
        smallest: dict[str, Any] | None = None
        for size_mib in sizes:
            source = _random_file(tmp / f"file-{size_mib}.bin", size_mib * MIB)
            work = tmp / "work"
            work.mkdir(exist_ok=True)
            results = [one_run(server, authorization, home, source, work, None,
                               plain_first=i % 2 == 0) for i in range(runs)]
            row = with_targets(median_row(size_mib, results), smallest)
            smallest = smallest or row
            print(json.dumps(row), flush=True)
            if args.profile and size_mib == max(sizes):
                one_run(server, authorization, home, source, work, args.profile, True)
            source.unlink()
    finally:
        server.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
