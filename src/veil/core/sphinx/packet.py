"""Building forward Sphinx packets and processing them at a hop.

Danezis & Goldberg, "Sphinx: A Compact and Provably Secure Mix Format" (IEEE S&P 2009):
header construction with filler (section 3.2), hop processing (section 3.3), forward
payloads with a zero prefix checked at the exit (section 3.4). Layout in ``params``.

Every packet a hop receives or sends is exactly PACKET_SIZE bytes. The sender fills the
unused end of the routing information with random bytes and the filler, so after
decryption a hop sees PACKET_SIZE bytes of uniform-looking routing information whatever
its position and whatever the path length (1 to MAX_HOPS).
"""

from __future__ import annotations

import hmac
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from veil.core.sphinx.errors import (
    SphinxMacFailure,
    SphinxMalformed,
    SphinxPathError,
    SphinxPayloadCorrupt,
)
from veil.core.sphinx.keys import STREAM_SIZE, HopKeys
from veil.core.sphinx.params import (
    ADDRESS_SIZE,
    BETA_SIZE,
    COMMAND_SIZE,
    GROUP_ELEMENT_SIZE,
    HEADER_SIZE,
    MAC_SIZE,
    MAX_HOPS,
    MAX_MESSAGE_SIZE,
    PACKET_SIZE,
    PAYLOAD_SIZE,
    PAYLOAD_TAG_SIZE,
    SLOT_SIZE,
    CommandType,
    RoutingCommand,
)
from veil.core.sphinx.replay import ReplayTagStore

_BETA_END = GROUP_ELEMENT_SIZE + BETA_SIZE
_ZERO_SLOT = bytes(SLOT_SIZE)
_ZERO_TAG = bytes(PAYLOAD_TAG_SIZE)
_LENGTH = struct.Struct(">H")


@dataclass(frozen=True, slots=True)
class PathHop:
    """A node on a path: its 16-byte address (node id) and X25519 public key."""

    address: bytes
    public_key: bytes

    def __post_init__(self) -> None:
        if len(self.address) != ADDRESS_SIZE or len(self.public_key) != GROUP_ELEMENT_SIZE:
            raise SphinxPathError("a hop needs a 16-byte address and a 32-byte key")


@dataclass(frozen=True, slots=True)
class Relay:
    """Forward ``packet`` to ``next_hop`` after holding it ``delay_ms``."""

    next_hop: bytes
    delay_ms: int
    packet: bytes


@dataclass(frozen=True, slots=True)
class Deliver:
    """This hop is the exit: ``message`` is for ``destination``."""

    destination: bytes
    delay_ms: int
    message: bytes


@dataclass(frozen=True, slots=True)
class DeliverReply:
    """This hop is the exit of a SURB: hand the opaque ``payload`` to ``destination``."""

    destination: bytes
    surb_id: bytes
    delay_ms: int
    payload: bytes


ProcessResult = Relay | Deliver | DeliverReply


def _xor(a: bytes, b: bytes) -> bytes:
    n = len(a)
    return (int.from_bytes(a, "little") ^ int.from_bytes(b[:n], "little")).to_bytes(n, "little")


def _hop_secrets(path: Sequence[PathHop]) -> tuple[bytes, list[HopKeys]]:
    """alpha_0 and every hop's keys (paper, 3.2), with clamped X25519 scalars."""
    if not 1 <= len(path) <= MAX_HOPS:
        raise SphinxPathError(f"a path has 1 to {MAX_HOPS} hops")
    x = X25519PrivateKey.generate()
    alpha = x.public_key().public_bytes_raw()
    alpha0 = alpha
    blinders: list[X25519PrivateKey] = []
    hop_keys: list[HopKeys] = []
    try:
        for hop in path:
            secret = x.exchange(X25519PublicKey.from_public_bytes(hop.public_key))
            for b in blinders:
                secret = b.exchange(X25519PublicKey.from_public_bytes(secret))
            keys = HopKeys(secret, alpha)
            hop_keys.append(keys)
            blinder = X25519PrivateKey.from_private_bytes(keys.blinding)
            blinders.append(blinder)
            alpha = blinder.exchange(X25519PublicKey.from_public_bytes(alpha))
    except ValueError as exc:
        raise SphinxPathError("a hop's public key is not a usable X25519 key") from exc
    return alpha0, hop_keys


def _filler(hop_keys: Sequence[HopKeys]) -> bytes:
    filler = b""
    for keys in hop_keys[:-1]:
        stream = keys.stream()
        filler += _ZERO_SLOT
        filler = _xor(filler, stream[STREAM_SIZE - len(filler):])
    return filler


def build_header(path: Sequence[PathHop], commands: Sequence[RoutingCommand]
                 ) -> tuple[bytes, list[HopKeys]]:
    """The header for ``path`` with ``commands[i]`` for hop i, and the hops' keys."""
    if len(commands) != len(path):
        raise SphinxPathError("one routing command per hop")
    alpha0, hop_keys = _hop_secrets(path)
    n = len(path)
    filler = _filler(hop_keys)
    last = hop_keys[-1]
    # Random rather than zero padding: the exit must not see where the real path ends.
    tail = commands[-1].encode() + os.urandom(MAC_SIZE + BETA_SIZE - n * SLOT_SIZE)
    beta = last.stream_xor(tail) + filler
    gamma = last.mac(beta)
    for i in range(n - 2, -1, -1):
        plain = commands[i].encode() + gamma + beta[: BETA_SIZE - SLOT_SIZE]
        beta = hop_keys[i].stream_xor(plain)
        gamma = hop_keys[i].mac(beta)
    return alpha0 + beta + gamma, hop_keys


def encode_forward_payload(message: bytes) -> bytes:
    """zero tag || length || message || zero padding, PAYLOAD_SIZE bytes."""
    if len(message) > MAX_MESSAGE_SIZE:
        raise SphinxPathError(f"a Sphinx message holds at most {MAX_MESSAGE_SIZE} bytes")
    body = _ZERO_TAG + _LENGTH.pack(len(message)) + message
    return body + bytes(PAYLOAD_SIZE - len(body))


def decode_forward_payload(payload: bytes) -> bytes:
    """Check the zero tag and padding of a decrypted forward payload; return the message."""
    if len(payload) != PAYLOAD_SIZE or not hmac.compare_digest(
            payload[:PAYLOAD_TAG_SIZE], _ZERO_TAG):
        raise SphinxPayloadCorrupt("payload integrity check failed")
    (length,) = _LENGTH.unpack_from(payload, PAYLOAD_TAG_SIZE)
    start = PAYLOAD_TAG_SIZE + _LENGTH.size
    if length > MAX_MESSAGE_SIZE or any(payload[start + length:]):
        raise SphinxPayloadCorrupt("payload integrity check failed")
    return payload[start:start + length]


def route_commands(path: Sequence[PathHop], delays_ms: Sequence[int], exit_command: RoutingCommand
                   ) -> list[RoutingCommand]:
    """RELAY commands along ``path`` followed by ``exit_command`` for the last hop."""
    if len(delays_ms) != len(path):
        raise SphinxPathError("one delay per hop")
    commands = [RoutingCommand(CommandType.RELAY, delays_ms[i], path[i + 1].address)
                for i in range(len(path) - 1)]
    commands.append(exit_command)
    return commands


def create_forward_packet(path: Sequence[PathHop], delays_ms: Sequence[int],
                          destination: bytes, message: bytes) -> bytes:
    """A packet that carries ``message`` along ``path`` to ``destination`` at the exit."""
    exit_command = RoutingCommand(CommandType.DELIVER, delays_ms[-1] if delays_ms else 0,
                                  destination)
    header, hop_keys = build_header(path, route_commands(path, delays_ms, exit_command))
    payload = encode_forward_payload(message)
    for keys in reversed(hop_keys):
        payload = keys.payload.encrypt(payload)
    return header + payload


class SphinxNode:
    """One hop's packet processor: its private key and the replay tags seen under it."""

    __slots__ = ("_key", "replay_tags")

    def __init__(self, private_key: X25519PrivateKey, replay_tags: ReplayTagStore | None = None
                 ) -> None:
        self._key = private_key
        self.replay_tags = replay_tags if replay_tags is not None else ReplayTagStore()

    @property
    def public_key(self) -> bytes:
        return self._key.public_key().public_bytes_raw()

    def process(self, packet: bytes) -> ProcessResult:
        """Unwrap one layer; raise a SphinxError for anything to drop (paper, 3.3)."""
        if len(packet) != PACKET_SIZE:
            raise SphinxMalformed("wrong packet size")
        alpha = packet[:GROUP_ELEMENT_SIZE]
        beta = packet[GROUP_ELEMENT_SIZE:_BETA_END]
        gamma = packet[_BETA_END:HEADER_SIZE]
        try:
            element = X25519PublicKey.from_public_bytes(alpha)
            secret = self._key.exchange(element)
        except ValueError as exc:
            raise SphinxMalformed("bad group element") from exc
        keys = HopKeys(secret, alpha)
        if not hmac.compare_digest(keys.mac(beta), gamma):
            raise SphinxMacFailure("header MAC mismatch")
        self.replay_tags.add(keys.tag)
        routing = keys.stream_xor(beta + _ZERO_SLOT)
        command = RoutingCommand.decode(routing[:COMMAND_SIZE])
        payload = keys.payload.decrypt(packet[HEADER_SIZE:])
        if command.type is CommandType.RELAY:
            try:
                next_alpha = X25519PrivateKey.from_private_bytes(keys.blinding).exchange(element)
            except ValueError as exc:
                raise SphinxMalformed("bad group element") from exc
            return Relay(command.address, command.delay_ms,
                         next_alpha + routing[SLOT_SIZE:] + routing[COMMAND_SIZE:SLOT_SIZE]
                         + payload)
        if command.type is CommandType.DELIVER:
            return Deliver(command.address, command.delay_ms, decode_forward_payload(payload))
        return DeliverReply(command.address, command.surb_id, command.delay_ms, payload)


__all__ = [
    "Deliver",
    "DeliverReply",
    "PathHop",
    "ProcessResult",
    "Relay",
    "SphinxNode",
    "build_header",
    "create_forward_packet",
    "decode_forward_payload",
    "encode_forward_payload",
    "route_commands",
]
