"""The declared public surface of ``veil`` (issue 9 §5).

Every public module (no leading underscore in its name) says what it exports with
``__all__``; every exported name exists; the names the docs show as the API are
exported; and every module imports on its own.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from types import ModuleType

import pytest

import veil

# Optional drivers: a module that needs one is checked only where it is installed.
_NEEDS = {"veil.server.storage.postgres": "asyncpg"}


def _module_names() -> list[str]:
    names = ["veil"]
    for info in pkgutil.walk_packages(veil.__path__, "veil."):
        names.append(info.name)
    return sorted(names)


MODULES = _module_names()
PUBLIC = [m for m in MODULES if not any(p.startswith("_") for p in m.split("."))]


def _load(name: str) -> ModuleType:
    needed = _NEEDS.get(name)
    if needed is not None and importlib.util.find_spec(needed) is None:
        pytest.skip(f"{name} needs {needed}")
    return importlib.import_module(name)


# What docs/client.md, docs/crypto.md, docs/mls.md and docs/ARCHITECTURE.md show as
# the API: their code examples, API tables and module tables.
DOCUMENTED: dict[str, list[str]] = {
    "veil.client": [
        "Client", "ClientError", "ConnectionState", "Conversation", "Event",
        "IncomingMessage", "KeysLow", "MessageReceived", "Relay", "SentMessage",
        "StoreRolledBack", "TrustRootMismatch",
        # the module table of docs/client.md
        "client", "directory", "outbox", "inbox", "connection", "events", "history",
        "device", "contacts", "prekey_store", "trust", "sessions", "store", "records",
        "content", "api", "transport", "socks", "errors",
    ],
    "veil.client.client": ["Client"],
    "veil.client.events": ["ConnectionState", "IdentityChanged", "KeysLow", "MessageReceived"],
    "veil.client.errors": ["ClientError", "IdentityChanged", "StoreRolledBack",
                           "TrustRootMismatch"],
    "veil.client.connection": ["Backoff"],
    "veil.client.device": ["Context", "DeviceInfo"],
    "veil.client.inbox": ["SEEN_LIMIT"],
    "veil.client.trust": ["MAX_QUEUE_AGE_MS"],
    "veil.client.prekey_store": ["PrekeyMaintenance"],
    "veil.client.api": ["Api"],
    "veil.client.transport": ["AiohttpTransport", "Transport"],
    "veil.client.store": ["Store"],
    "veil.core": [
        "errors", "encoding", "primitives", "keys", "prekeys", "pqxdh", "ratchet",
        "session", "sealed", "safety", "padding", "submission", "mls", "sphinx",
    ],
    "veil.core.errors": ["VeilError", "CoreError", "DuplicateMessage", "UnsupportedVersion"],
    "veil.core.session": ["initiate", "respond", "Session"],
    "veil.core.prekeys": ["PreKeys"],
    "veil.core.mls": [
        "Group", "StagedCommit", "CommitApplied", "MlsError",
        "codec", "crypto", "treemath", "leaf", "tree", "treekem", "keyschedule",
        "secret_tree", "messages", "proposals", "framing", "validation", "proposal_ops",
        "group_ops", "welcome", "external", "state", "persist", "group", "results",
        "interop",
    ],
    "veil.core.mls.group": ["Group"],
    "veil.core.mls.results": ["StagedCommit", "CommitApplied"],
    "veil.core.mls.validation": ["check_lifetime", "validate_leaf_node", "TreeIndex",
                                 "basic_credential_check"],
    "veil.core.mls.welcome": ["join_from_welcome", "validate_tree"],
    "veil.core.mls.treekem": ["check_path_keys_fresh"],
    "veil.core.mls.external": ["check_joiner", "process_external_commit"],
    "veil.core.mls.proposal_ops": ["select_proposals", "ProposalChecker"],
    "veil.core.sphinx": ["SphinxError"],
    "veil.server.errors": ["ServerError"],
    "veil.mixnet": ["MixnetError"],
    "veil.cli.main": ["main"],
}


@pytest.mark.parametrize("name", MODULES)
def test_every_module_imports(name: str) -> None:
    _load(name)


@pytest.mark.parametrize("name", PUBLIC)
def test_public_module_declares_all(name: str) -> None:
    module = _load(name)
    exported = getattr(module, "__all__", None)
    assert isinstance(exported, list), f"{name} has no __all__ list"
    assert all(isinstance(n, str) for n in exported)
    assert len(set(exported)) == len(exported), f"{name}.__all__ repeats a name"


@pytest.mark.parametrize("name", PUBLIC)
def test_every_exported_name_exists(name: str) -> None:
    module = _load(name)
    for export in module.__all__:
        if hasattr(module, export):
            continue
        # In a package, __all__ may name a submodule that is imported by path.
        assert hasattr(module, "__path__"), f"{name}.__all__ names missing {export!r}"
        _load(f"{name}.{export}")


@pytest.mark.parametrize("name", PUBLIC)
def test_private_helpers_stay_out(name: str) -> None:
    module = _load(name)
    private = [n for n in module.__all__ if n.startswith("_") and n != "__version__"]
    assert not private, f"{name}.__all__ exports private names {private}"


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_documented_names_are_exported(name: str) -> None:
    module = _load(name)
    missing = sorted(set(DOCUMENTED[name]) - set(module.__all__))
    assert not missing, f"{name}.__all__ lacks documented {missing}"


def test_documented_modules_exist() -> None:
    assert set(DOCUMENTED) <= set(PUBLIC)
