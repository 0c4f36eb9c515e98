"""Command-line programs (thin: they call the client, server and mixnet layers)."""
