"""The client SDK (asyncio): one :class:`Client` class on top of ``veil.core``."""

from veil.client.client import Client, Conversation, IncomingMessage, Relay, SentMessage
from veil.client.errors import ClientError
from veil.client.events import ConnectionState, Event, KeysLow, MessageReceived

__all__ = ["Client", "ClientError", "ConnectionState", "Conversation", "Event",
           "IncomingMessage", "KeysLow", "MessageReceived", "Relay", "SentMessage"]
