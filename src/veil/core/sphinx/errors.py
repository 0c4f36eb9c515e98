"""The error tree of the Sphinx packet format (``veil.core.sphinx``).

A mix node drops every packet that raises one of these and counts it by ``code``;
nothing else may escape the packet decoder.
"""

from __future__ import annotations

from veil.core.errors import CoreError


class SphinxError(CoreError):
    """A Sphinx packet was rejected."""

    code = "sphinx_error"


class SphinxMalformed(SphinxError):
    """Bytes that are not a Sphinx packet: wrong size, bad group element, bad command."""

    code = "sphinx_malformed"


class SphinxMacFailure(SphinxError):
    """The header MAC did not verify: tampered, or built for another node or key."""

    code = "sphinx_mac_failure"


class SphinxReplay(SphinxError):
    """The packet's replay tag was already seen under this node key."""

    code = "sphinx_replay"


class SphinxPayloadCorrupt(SphinxError):
    """The payload failed its integrity check at the exit: tagged or garbled in transit."""

    code = "sphinx_payload_corrupt"


class SphinxReplayStoreFull(SphinxError):
    """The replay-tag store for this key is full; the node must rotate its key."""

    code = "sphinx_replay_store_full"


class SphinxPathError(SphinxError):
    """A path, delay or message given to the packet builder is out of range."""

    code = "sphinx_path_error"

__all__ = [
    "SphinxError",
    "SphinxMacFailure",
    "SphinxMalformed",
    "SphinxPathError",
    "SphinxPayloadCorrupt",
    "SphinxReplay",
    "SphinxReplayStoreFull",
]
