"""Invite-only registration (with the admin CLI), sender certificates, API documents."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.server.harness import ServerProcess, b64, identity_key, register
from veil.core.errors import CoreError
from veil.core.sealed import SenderCertificate


async def test_invite_only_registration(tmp_path: Path):
    server = ServerProcess(tmp_path / "data", {"registration": "invite"}).start()
    try:
        minted = subprocess.run(
            [sys.executable, "-m", "veil.server", "--data", str(server.data_dir),
             "invite", "--count", "2"],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout.split()
        assert len(minted) == 2 and len(set(minted)) == 2
        banner = (tmp_path / "data.out").read_text()
        assert f"connect a client with: veil init --server {server.url}" in banner
        body = {"identity_key": b64(identity_key()), "registration_id": 1}
        async with aiohttp.ClientSession() as http:
            async with http.post(server.url + "/v1/accounts", json=body) as r:
                assert r.status == 403
                assert (await r.json())["error"]["code"] == "registration_closed"
            async with http.post(server.url + "/v1/accounts",
                                 json={**body, "invite": "ab" * 18}) as r:
                assert r.status == 403
                assert (await r.json())["error"]["code"] == "invalid_invite"
            async with http.post(server.url + "/v1/accounts",
                                 json={**body, "invite": minted[0]}) as r:
                assert r.status == 201
            async with http.post(server.url + "/v1/accounts",
                                 json={**body, "invite": minted[0]}) as r:
                assert r.status == 403, "an invite is single-use"
    finally:
        server.stop()


async def test_sender_certificate_chains_to_trust_root(
    server: ServerProcess, http: aiohttp.ClientSession
):
    alice = await register(http, server.url)
    async with http.get(server.url + "/v1/certificate/trust_root") as r:
        root = base64.b64decode((await r.json())["public_key"])
    async with http.get(server.url + "/v1/certificate", headers=alice.auth()) as r:
        assert r.status == 200
        data = await r.json()
    cert = SenderCertificate.from_bytes(base64.b64decode(data["certificate"]))
    cert.validate(root, int(time.time() * 1000))
    assert cert.account_id == bytes.fromhex(alice.account_id) and cert.device_id == 1
    assert cert.expires_at == data["expires"]
    assert cert.server_certificate.to_bytes() == base64.b64decode(data["server_certificate"])
    with pytest.raises(CoreError):
        cert.validate(os.urandom(32), int(time.time() * 1000))
    async with http.get(server.url + "/v1/certificate") as r:
        assert r.status == 401


async def test_openapi_and_docs(server: ServerProcess, http: aiohttp.ClientSession):
    async with http.get(server.url + "/openapi.json") as r:
        doc = await r.json()
    assert doc["openapi"].startswith("3.")
    assert {"put", "delete"} <= set(doc["paths"]["/v1/messages/{target}"])
    schemas = doc["components"]["schemas"]

    def resolve(schema: dict[str, Any]) -> dict[str, Any]:
        return schemas[schema["$ref"].rsplit("/", 1)[1]]

    reg = doc["paths"]["/v1/accounts"]["post"]
    # Request bodies are inline (generators work faster on them than through $ref).
    body = reg["requestBody"]["content"]["application/json"]["schema"]
    assert body["additionalProperties"] is False and body["title"] == "Registration"
    assert "$ref" not in json.dumps(body)
    # Base64 fields state exactly the encodings of their byte bounds.
    key = body["properties"]["identity_key"]
    assert key["contentEncoding"] == "base64" and key["x-bytes"] == [32, 256]
    assert re.fullmatch(key["pattern"].strip("^$"), b64(bytes(32)))
    assert not re.fullmatch(key["pattern"].strip("^$"), b64(bytes(31)))
    # Answers are described too: the 201 body, and the one error shape.
    created = resolve(reg["responses"]["201"]["content"]["application/json"]["schema"])
    assert set(created["required"]) == {"account_id", "device_id"}
    error = resolve(reg["responses"]["422"]["content"]["application/json"]["schema"])
    assert error["required"] == ["error"]
    assert {"ClientFrame", "ServerFrame", "SendFrame", "EnvelopeFrame"} <= set(schemas)
    # The route table's slots for rate limits and audit, and the enforced query bounds.
    ops = [op for methods in doc["paths"].values() for op in methods.values()]
    assert all(op["x-veil-rate-limit"] and op["x-veil-audit"] for op in ops)
    fetch = doc["paths"]["/v1/messages"]["get"]["parameters"]
    assert [(p["name"], p["in"]) for p in fetch] == [("limit", "query"), ("after", "query")]
    async with http.get(server.url + "/docs") as r:
        assert r.status == 200 and "openapi.json" in await r.text()
