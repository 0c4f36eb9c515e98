"""A copied home is detected (issue 10 §2): opening a copy of a home elsewhere is
refused with an explanation, so no message it sends can be dropped silently as a
duplicate by a contact; ``adopt=True`` (``veil adopt``) makes a restored copy the
device once the person says the original is gone. The original is not affected."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.unit.client.helpers import FakeClock
from tests.unit.client.memory_server import MemoryServer
from veil.client import Client
from veil.client.home_place import HomeCopied
from veil.client.store import FAST


async def test_a_copy_is_refused_and_can_be_adopted(tmp_path: Path) -> None:
    server = MemoryServer(FakeClock())
    alice = await Client.register(tmp_path / "alice", "memory://veil", passphrase="pw",
                                  kdf=FAST, clock=server.clock, transport=server)
    bob = await Client.register(tmp_path / "bob", "memory://veil", passphrase="pw",
                                kdf=FAST, clock=server.clock, transport=server)
    await alice.send(bob.account, "from the original")
    await alice.close()
    shutil.copytree(tmp_path / "alice", tmp_path / "copy")
    with pytest.raises(HomeCopied, match="is a copy of a Veil home made elsewhere") as info:
        await Client.open(tmp_path / "copy", passphrase="pw", clock=server.clock,
                          transport=server)
    assert "veil adopt" in str(info.value) and "veil init" in str(info.value)
    # The original opens as before.
    original = await Client.open(tmp_path / "alice", passphrase="pw", clock=server.clock,
                                 transport=server)
    await original.close()
    # Adopted (the original is gone), the copy is the device; its next message arrives.
    shutil.rmtree(tmp_path / "alice")
    adopted = await Client.open(tmp_path / "copy", passphrase="pw", clock=server.clock,
                                transport=server, adopt=True)
    await adopted.send(bob.account, "from the adopted copy")
    await adopted.close()
    again = await Client.open(tmp_path / "copy", passphrase="pw", clock=server.clock,
                              transport=server)
    await again.close()
    assert [m.text for m in await bob.receive_pending()] == ["from the original",
                                                             "from the adopted copy"]
    await bob.close()
