"""The HTTP and WebSocket front of the server: thin handlers over the services."""

__all__ = [
    "app",
    "context",
    "endpoint",
    "openapi",
    "routes",
    "websocket",
]
