"""The client SDK (asyncio): one :class:`Client` class on top of ``veil.core``."""

from veil.client.client import Client, Conversation, IncomingMessage, Relay, SentMessage
from veil.client.errors import ClientError

__all__ = ["Client", "ClientError", "Conversation", "IncomingMessage", "Relay", "SentMessage"]
