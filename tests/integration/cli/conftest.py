"""The CLI's tests compare English output: whatever language the developer's shell asks
for, this process and the ``veil`` programs it starts speak English unless a test says
otherwise (the language is chosen once, when ``veil.cli.i18n`` is first imported)."""

from __future__ import annotations

import os

os.environ["VEIL_LANG"] = "en"
