"""The protection layers of the server (DESIGN.md, "Protection layers on the server";
docs/protection.md): network rules and connection caps, rate limits and proof of
work, intrusion detection with automatic blocks, monitoring, and the audit log.

:class:`~veil.server.protection.facade.Protection` holds one of each, built from the
``[network]``, ``[limits]``, ``[rules]``, ``[audit]``, ``[admin]`` and ``[webhook]``
sections of the configuration (``settings.py``); the HTTP layer reaches it as
``Context.protection``.
"""

__all__: list[str] = []
