"""Shared fixtures for the MLS vector tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def case_name(request: pytest.FixtureRequest) -> str:
    return str(request.node.callspec.id)
