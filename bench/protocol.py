"""Benchmark of decoding the wire formats (issue 9 §1: the choice of msgspec).

For the two frames every message crosses (a ``send`` frame with one 1,200-byte
envelope, an ``ack``) and the largest request (a registration with 100 one-time prekeys
of each kind), one JSON line per workload with the median µs per decode, in the same
run, of:

- ``msgspec``: today's :class:`veil.protocol.Codec` (typed, strict, limits bound in);
- ``hand_validator``: ``json.loads`` and the hand-written schema validator that
  ``veil.protocol`` replaced (``veil.server.validation`` of commit ``79abfd9``, read
  from git history into a temporary folder), plus its hand-written fast paths for the
  two frames where it had them;
- ``pydantic``: pydantic v2 models with the same constraints (``model_validate_json``,
  ``extra="forbid"``, strict), the second candidate the issue names.

Also the encoding of the ``envelope`` frame the server pushes: msgspec against the
f-string the old server formatted by hand from the sender's base64 text.

Usage: ``python bench/protocol.py [--rounds N]``.
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from veil.protocol import Codec, encode
from veil.protocol import requests as rq
from veil.protocol.frames import EnvelopeFrame

OLD_COMMIT = "79abfd9"
ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "ab" * 16
ENVELOPE = os.urandom(1200)


def _documents() -> dict[str, bytes]:
    def b(n: int) -> str:
        return base64.b64encode(os.urandom(n)).decode()
    send = {"type": "send", "req": 17, "to": ACCOUNT,
            "messages": [{"device_id": 1, "envelope": base64.b64encode(ENVELOPE).decode()}]}
    ack = {"type": "ack", "ids": [123456789]}
    registration = {
        "identity_key": b(33), "registration_id": 12345, "token": b(32),
        "access_key": b(16), "username": "alice_1", "signed_prekey": b(100),
        "last_resort_kem_prekey": b(1250),
        "one_time_prekeys": [{"key_id": i, "key": b(36)} for i in range(100)],
        "one_time_kem_prekeys": [{"key_id": i, "key": b(1250)} for i in range(100)],
    }
    return {name: json.dumps(doc).encode() for name, doc in
            (("send_frame", send), ("ack_frame", ack), ("registration", registration))}


def _old_modules() -> dict[str, Any] | None:
    """The replaced validator, schemas and fast paths, from git history."""
    folder = Path(tempfile.mkdtemp(prefix="veil-old-validator-"))
    sources = {}
    for name, path in (("validation", "src/veil/server/validation.py"),
                       ("schemas", "src/veil/server/http/schemas.py"),
                       ("frames", "src/veil/server/http/frames.py")):
        try:
            text = subprocess.run(["git", "-C", str(ROOT), "show", f"{OLD_COMMIT}:{path}"],
                                  check=True, capture_output=True, text=True).stdout
        except (OSError, subprocess.CalledProcessError):
            return None
        # The old modules imported each other by their package paths.
        text = (text.replace("veil.server.validation", "old_validation")
                .replace("veil.server.http.schemas", "old_schemas"))
        (folder / f"old_{name}.py").write_text(text)
        sources[name] = folder / f"old_{name}.py"
    sys.path.insert(0, str(folder))
    modules = {}
    for name, path in sources.items():
        spec = importlib.util.spec_from_file_location(f"old_{name}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[f"old_{name}"] = module
        spec.loader.exec_module(module)
        modules[name] = module
    return modules


def _pydantic_models() -> dict[str, Any] | None:
    try:
        from pydantic import BaseModel, ConfigDict, Field
        from pydantic.types import Base64Bytes
    except ImportError:
        return None

    class Strict(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    class Item(Strict):
        device_id: Annotated[int, Field(ge=1, le=(1 << 31) - 1)]
        envelope: Annotated[Base64Bytes, Field(min_length=1, max_length=256 * 1024)]

    class Send(Strict):
        type: Annotated[str, Field(pattern="^send$")]
        req: Annotated[int, Field(ge=0, le=(1 << 53) - 1)]
        to: Annotated[str, Field(pattern="^[0-9a-f]{32}$")]
        access_key: Base64Bytes | None = None
        messages: Annotated[list[Item], Field(min_length=1, max_length=16)]

    class Ack(Strict):
        type: Annotated[str, Field(pattern="^ack$")]
        ids: Annotated[list[Annotated[int, Field(ge=1, le=(1 << 53) - 1)]],
                       Field(min_length=1, max_length=1000)]

    class OneTime(Strict):
        key_id: Annotated[int, Field(ge=0, le=(1 << 31) - 1)]
        key: Annotated[Base64Bytes, Field(min_length=32, max_length=4096)]

    class Registration(Strict):
        identity_key: Annotated[Base64Bytes, Field(min_length=32, max_length=256)]
        registration_id: Annotated[int, Field(ge=1, le=(1 << 31) - 1)]
        token: Annotated[Base64Bytes, Field(min_length=32, max_length=32)] | None = None
        access_key: Annotated[Base64Bytes, Field(min_length=16, max_length=16)] | None = None
        username: Annotated[str, Field(pattern="^[A-Za-z0-9_]{3,32}$")] | None = None
        signed_prekey: Annotated[Base64Bytes, Field(min_length=32, max_length=1024)] | None = None
        last_resort_kem_prekey: Annotated[Base64Bytes,
                                          Field(min_length=1184, max_length=4096)] | None = None
        one_time_prekeys: Annotated[list[OneTime], Field(max_length=200)] | None = None
        one_time_kem_prekeys: Annotated[list[OneTime], Field(max_length=200)] | None = None

    return {"send_frame": Send, "ack_frame": Ack, "registration": Registration}


def _median_us(fn: Callable[[], Any], rounds: int, target_s: float = 0.05) -> float:
    n, start = 1, time.perf_counter()
    while time.perf_counter() - start < target_s / 5:
        fn()
        n += 1
    samples = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - t) / n * 1e6)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    docs = _documents()
    codec = Codec()
    new: dict[str, Callable[[bytes], Any]] = {
        "send_frame": codec.decode_client_frame,
        "ack_frame": codec.decode_client_frame,
        "registration": lambda d: codec.decode(rq.Registration, d),
    }
    old = _old_modules()
    old_runs: dict[str, Callable[[bytes], Any]] = {}
    if old is not None:
        from veil.server.config import ServerConfig
        schemas = old["schemas"].build_schemas(ServerConfig())
        validation, frames = old["validation"], old["frames"]

        def old_send(d: bytes) -> Any:
            raw = validation.load_json(d, "frame")
            return frames.fast_send(raw, 256 * 1024, 16) or schemas.ws_send.validate(raw, "f")

        def old_ack(d: bytes) -> Any:
            raw = validation.load_json(d, "frame")
            return frames.fast_ack(raw) or schemas.ws_ack.validate(raw, "frame")

        def old_registration(d: bytes) -> Any:
            return validation.parse_json(d, schemas.registration)

        old_runs = {"send_frame": old_send, "ack_frame": old_ack,
                    "registration": old_registration}
    models = _pydantic_models()
    for name, doc in docs.items():
        runs: dict[str, Callable[[], Any]] = {"msgspec": lambda f=new[name], d=doc: f(d)}
        if name in old_runs:
            runs["hand_validator"] = lambda f=old_runs[name], d=doc: f(d)
        if models is not None:
            runs["pydantic"] = lambda m=models[name], d=doc: m.model_validate_json(d)
        for fn in runs.values():
            fn()  # each accepts the document
        us = {impl: _median_us(fn, args.rounds) for impl, fn in runs.items()}
        out: dict[str, Any] = {"workload": f"decode_{name}", "bytes": len(doc),
                               "median_us": {k: round(v, 2) for k, v in us.items()}}
        out["speedup_vs"] = {k: round(v / us["msgspec"], 2) for k, v in us.items()
                             if k != "msgspec"}
        print(json.dumps(out), flush=True)
    text = base64.b64encode(ENVELOPE).decode()
    frame_runs: dict[str, Callable[[], Any]] = {
        "msgspec": lambda: encode(EnvelopeFrame(id=123456, ts=1700000000000, envelope=ENVELOPE)),
        "f_string_from_kept_base64": lambda: (
            f'{{"type":"envelope","id":{123456:d},"ts":{1700000000000:d},'
            f'"envelope":"{text}"}}').encode(),
    }
    us = {impl: _median_us(fn, args.rounds) for impl, fn in frame_runs.items()}
    print(json.dumps({"workload": "encode_envelope_frame", "bytes": len(ENVELOPE),
                      "median_us": {k: round(v, 2) for k, v in us.items()},
                      "ratio_vs_msgspec": round(us["f_string_from_kept_base64"]
                                                / us["msgspec"], 2)}), flush=True)


if __name__ == "__main__":
    main()
