"""One module per decoder: ``ALLOWED`` (the documented error types) and ``target(data)``."""
