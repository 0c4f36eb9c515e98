"""``--via mixnet``: send sealed submissions through the mixnet instead of straight to
the server (the CLI composes ``veil.client`` and ``veil.mixnet``; neither imports the
other).

The client's sealed submissions become Sphinx packets sent at a Poisson rate with cover
traffic; the provider (the mixnet's exit) hands them to the server's
``POST /v1/mixnet/submissions``, so the server never sees which address submitted them.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from veil.cli.i18n import localized, t
from veil.client import Client
from veil.mixnet.client import MixClient
from veil.mixnet.directory import load_directory, parse_authority_public
from veil.mixnet.errors import MixnetError
from veil.mixnet.socks import socks5_connector
from veil.mixnet.transport import tcp_connect


class MixnetRelay:
    """A :class:`veil.client.Relay` over a running :class:`MixClient`."""

    name = "mixnet"

    def __init__(self, mix: MixClient) -> None:
        self.mix = mix

    async def submit(self, submission: bytes) -> None:
        self.mix.send(submission)

    async def finish(self, timeout: float) -> None:
        """Wait until every fragment left, then for the mixes' delays, then stop."""
        await self.mix.flush(timeout)
        await asyncio.sleep(min(timeout, 6 * self.mix.mean_delay * self.mix.directory.layers))
        queued = self.mix.stats()["queued"]
        await self.mix.close()
        if queued:
            raise localized(MixnetError(t("relay.timeout")))


async def attach_mixnet(client: Client, directory_file: str | None, authority: str | None,
                        proxy: str | None, rate: float = 20.0,
                        mean_delay: float = 0.05) -> MixnetRelay:
    if not directory_file or not authority:
        raise localized(MixnetError(t("relay.needs_directory")))
    directory = load_directory(Path(directory_file), parse_authority_public(authority))
    connect = socks5_connector(proxy) if proxy else tcp_connect
    mix = MixClient(directory, rate=rate, mean_delay=mean_delay, loop_fraction=0.0,
                    connect=connect)
    await mix.start()
    relay = MixnetRelay(mix)
    client.set_relay(relay)
    return relay

__all__ = [
    "MixnetRelay",
    "attach_mixnet",
]
