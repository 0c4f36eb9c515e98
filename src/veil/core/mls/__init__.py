"""Messaging Layer Security (RFC 9420) as a sans-I/O library.

The application-facing entry point is :class:`veil.core.mls.group.Group`; the
modules below it implement the RFC section by section (see ``docs/mls.md``).
"""

from veil.core.mls.errors import MlsDecodeError, MlsError
from veil.core.mls.group import (
    ApplicationMessage,
    CommitApplied,
    CommitResult,
    Group,
    GroupConfig,
    ProposalReceived,
    SavedGroup,
    StagedCommit,
)
from veil.core.mls.leaf import Credential
from veil.core.mls.welcome import KeyPackageBundle

__all__ = [
    "ApplicationMessage",
    "CommitApplied",
    "CommitResult",
    "Credential",
    "Group",
    "GroupConfig",
    "KeyPackageBundle",
    "MlsDecodeError",
    "MlsError",
    "ProposalReceived",
    "SavedGroup",
    "StagedCommit",
    "codec",
    "crypto",
    "errors",
    "external",
    "framing",
    "group",
    "group_ops",
    "interop",
    "keyschedule",
    "leaf",
    "messages",
    "persist",
    "proposal_ops",
    "proposals",
    "results",
    "secret_tree",
    "state",
    "tree",
    "treekem",
    "treemath",
    "validation",
    "welcome",
]
