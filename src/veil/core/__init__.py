"""Sans-I/O protocol core: wire formats, cryptographic protocols, state machines.

Nothing here touches sockets, files, asyncio, the wall clock or a global RNG; time is
passed in and randomness comes from the operating system through ``cryptography``.
"""
