"""The sealed-sender trust root (outside review, issue 8 item 6), written as the attacks:
a thief of the data directory must not get the root, and a stolen server key must stop
working once the operator has re-keyed and revoked it."""

from __future__ import annotations

import base64
import json
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.integration.client.conftest import new_client
from tests.integration.server.harness import ServerProcess
from veil.cli.serve import server as server_cli
from veil.client import Client, trust
from veil.client.api import b64
from veil.client.content import Content
from veil.client.store import FAST
from veil.core import sealed
from veil.server.certificates import ROOT_FILE, SERVER_FILE

_NOT_KEYS = ("veil.sqlite3", "logs")


def _holds_private_key_of(directory: Path, public: bytes) -> list[str]:
    """Files in ``directory`` with 32 bytes anywhere that are the private key of the
    Ed25519 ``public`` key (whatever the file is called or how it is laid out)."""
    found = []
    for path in directory.iterdir():
        if not path.is_file() or path.name.startswith(_NOT_KEYS):
            continue
        data = path.read_bytes()
        for i in range(len(data) - 31):
            key = ed25519.Ed25519PrivateKey.from_private_bytes(data[i:i + 32])
            if key.public_key().public_bytes_raw() == public:
                found.append(path.name)
                break
    return found


def _served_root(server: ServerProcess) -> bytes:
    with urllib.request.urlopen(server.url + "/v1/certificate/trust_root", timeout=5) as r:
        return base64.b64decode(json.loads(r.read())["public_key"])


def _cli(*args: str) -> Result:
    result = CliRunner().invoke(server_cli, list(args))
    assert result.exit_code == 0, result.output
    return result


def test_a_data_directory_never_holds_the_root_private_key(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    try:
        root = _served_root(server)
        assert _holds_private_key_of(server.data_dir, root) == []
        log = (tmp_path / "data.out").read_text()
        assert trust.fingerprint(root) in log and "throw-away trust root" in log
    finally:
        server.stop()
    again = ServerProcess(tmp_path / "data").start()        # restarts with the same root
    try:
        assert _served_root(again) == root
    finally:
        again.stop()


def test_the_server_refuses_a_root_private_key_in_its_data_directory(tmp_path: Path) -> None:
    data = tmp_path / "legacy"
    data.mkdir()
    root = sealed.TrustRoot.generate()                # as earlier versions left it
    (data / ROOT_FILE).write_bytes(root.to_bytes())
    (data / SERVER_FILE).write_bytes(
        sealed.ServerKey.generate(root, 1, int(time.time() * 1000) + 10**10).to_bytes())
    with pytest.raises(RuntimeError, match="exited"):
        ServerProcess(data).start()
    err = (tmp_path / "legacy.out").read_text().strip().splitlines()
    assert err[-1].startswith("veil: ") and "move-root" in err[-1]
    assert "Traceback" not in "\n".join(err)
    # The way out: move it, then the same deployment starts with the same root.
    _cli("keys", "move-root", "--data", str(data), "--out", str(tmp_path / "root.key"))
    assert not (data / ROOT_FILE).exists()
    assert (tmp_path / "root.key").read_bytes() == root.to_bytes()
    server = ServerProcess(data).start()
    try:
        assert (data / "trust_root.pub").read_bytes() == root.public
        assert _holds_private_key_of(data, root.public) == []
    finally:
        server.stop()


async def _send_with(sender: Client, to: Client, cert: sealed.SenderCertificate,
                     text: str) -> None:
    contact = await sender.resolve(to.account)
    content = Content.text_message(text, int(time.time() * 1000), sender._me.profile_key)
    envelopes, _ = await sender._outbox._encrypt_for(contact, content.encode(), cert)
    await sender._api.request("PUT", f"/v1/messages/{to.account}", {"messages": [
        {"device_id": d, "envelope": b64(e)} for d, e in envelopes.items()]})


async def test_offline_root_rotation_and_revocation_of_a_stolen_key(
        tmp_path: Path, clients: list[Client]) -> None:
    root_file, data = tmp_path / "offline" / "root.key", tmp_path / "data"
    made = _cli("keys", "init-root", "--out", str(root_file))
    fingerprint = made.output.split("fingerprint ")[1].split()[0]
    _cli("--data", str(data), "keys", "certify", "--root", str(root_file))
    server = ServerProcess(data).start()
    try:
        root = (data / "trust_root.pub").read_bytes()
        assert trust.fingerprint(root) == fingerprint
        assert _holds_private_key_of(data, root) == []
        assert "throw-away" not in (tmp_path / "data.out").read_text()
        bob = await Client.register(tmp_path / "bob", server.url, passphrase="pw", kdf=FAST,
                                    trust_root=fingerprint)
        clients.append(bob)
        mallory = await new_client(clients, tmp_path, server, "mallory")
        alice = await new_client(clients, tmp_path, server, "alice")
        stolen = sealed.ServerKey.from_bytes((data / SERVER_FILE).read_bytes())   # key 1

        def forged() -> sealed.SenderCertificate:
            return stolen.issue(bytes.fromhex(mallory.account), 1, mallory.identity,
                                int(time.time() * 1000) + 3600_000)

        # A routine rotation: key 2; envelopes certified by key 1 still arrive.
        server.stop()
        _cli("--data", str(data), "keys", "certify", "--root", str(root_file))
        server.start()
        await _send_with(mallory, bob, forged(), "certified by key 1 after rotation")
        assert [m.text for m in await bob.receive_pending()] == [
            "certified by key 1 after rotation"]
        # Key 1 was stolen: key 3, and every older one revoked.
        server.stop()
        shown = _cli("--data", str(data), "keys", "certify", "--root", str(root_file),
                     "--revoke-older")
        assert "server key 3" in shown.output and "revoked" in shown.output
        server.start()
        await _send_with(mallory, bob, forged(), "certified by the stolen key")
        await alice.send(bob.account, "honest")
        assert [m.text for m in await bob.receive_pending()] == ["honest"]
        assert bob.me.min_server_key_id == 3
        assert await bob.receive_pending() == []            # dropped and acknowledged
        cert = await mallory._certificate()                 # what the server issues now
        assert cert.server_certificate.key_id == 3
        # Putting the stolen key back into the data directory does not bring it back.
        server.stop()
        (data / SERVER_FILE).write_bytes(stolen.to_bytes())
        with pytest.raises(RuntimeError, match="exited"):
            server.start()
        assert "revoked" in (tmp_path / "data.out").read_text().strip().splitlines()[-1]
    finally:
        server.stop()


def test_keys_commands_refuse_mistakes(tmp_path: Path) -> None:
    root_file = tmp_path / "root.key"
    _cli("keys", "init-root", "--out", str(root_file))
    again = CliRunner().invoke(server_cli, ["keys", "init-root", "--out", str(root_file)])
    assert again.exit_code != 0 and "refusing to overwrite" in str(again.exception)
    other = tmp_path / "other.key"
    _cli("keys", "init-root", "--out", str(other))
    _cli("--data", str(tmp_path / "d"), "keys", "certify", "--root", str(root_file))
    switched = CliRunner().invoke(server_cli, ["--data", str(tmp_path / "d"), "keys",
                                               "certify", "--root", str(other)])
    assert switched.exit_code != 0 and "another trust root" in str(switched.exception)
    shown = _cli("--data", str(tmp_path / "d"), "keys", "show")
    assert "server key  1" in shown.output and "revoked     ids below 1" in shown.output
