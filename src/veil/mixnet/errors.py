"""The error tree of the mixnet layer (``veil.mixnet``).

Sphinx packet failures are :class:`veil.core.sphinx.SphinxError`; a node drops and counts
those. These are the failures of the layer around packets: documents, transport,
fragments and proxies.
"""

from __future__ import annotations

from veil.core.errors import VeilError


class MixnetError(VeilError):
    """The mixnet could not do what was asked."""

    code = "mixnet_error"


class DirectoryError(MixnetError):
    """A directory, descriptor or key file is malformed, unsigned, or does not fit."""

    code = "mixnet_directory_error"


class FragmentError(MixnetError):
    """A message fragment is malformed or does not fit the message it claims."""

    code = "mixnet_fragment_error"


class QueueFull(MixnetError):
    """A bounded queue refused more work: the caller should slow down."""

    code = "mixnet_queue_full"


class TransportError(MixnetError):
    """A connection to a mix node, provider or sink failed."""

    code = "mixnet_transport_error"


class SocksError(TransportError):
    """A SOCKS5 proxy refused or garbled the connection (RFC 1928 / RFC 1929)."""

    code = "mixnet_socks_error"

__all__ = [
    "DirectoryError",
    "FragmentError",
    "MixnetError",
    "QueueFull",
    "SocksError",
    "TransportError",
]
