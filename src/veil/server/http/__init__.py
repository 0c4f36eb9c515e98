"""The HTTP and WebSocket front of the server: thin handlers over the services."""
