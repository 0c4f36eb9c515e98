"""tree-validation, tree-operations and treekem vectors (RFC 9420 §4, §7, §12.1)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.vectors.loader import case_params, run_case
from veil.core.mls import treekem
from veil.core.mls.codec import decode_all
from veil.core.mls.crypto import SUPPORTED_SUITES, get_suite
from veil.core.mls.interop import vector_time
from veil.core.mls.messages import GroupContext
from veil.core.mls.proposal_ops import ProposalEntry, apply_proposals
from veil.core.mls.proposals import UpdatePath, read_proposal
from veil.core.mls.tree import RatchetTree
from veil.core.mls.welcome import validate_tree

h = bytes.fromhex


def _any_credential(credential: object, key: bytes, previous: object) -> bool:
    return True


@pytest.mark.parametrize("case", case_params("mls", "tree-validation.json"))
def test_tree_validation(case: dict[str, Any], case_name: str) -> None:
    def check(c: dict[str, Any]) -> None:
        s = get_suite(c["cipher_suite"])
        tree = RatchetTree.decode(s, h(c["tree"]))
        assert tree.encode() == h(c["tree"])
        assert [tree.tree_hash(x).hex() for x in range(len(tree.nodes))] == c["tree_hashes"]
        assert [list(tree.resolution(x)) for x in range(len(tree.nodes))] == c["resolutions"]
        lifetimes = [leaf.lifetime for _, leaf in tree.members() if leaf.lifetime]
        validate_tree(s, tree, h(c["group_id"]), [], _any_credential,
                      now=vector_time(lifetimes), check_lifetimes=True)

    run_case("tree-validation.json", case_name, case, SUPPORTED_SUITES, check)


@pytest.mark.parametrize("case", case_params("mls", "tree-operations.json"))
def test_tree_operations(case: dict[str, Any], case_name: str) -> None:
    def check(c: dict[str, Any]) -> None:
        s = get_suite(c["cipher_suite"])
        tree = RatchetTree.decode(s, h(c["tree_before"]))
        assert tree.tree_hash() == h(c["tree_hash_before"])
        proposal = decode_all(h(c["proposal"]), read_proposal)
        apply_proposals(tree, [ProposalEntry(proposal, c["proposal_sender"])])
        assert tree.encode() == h(c["tree_after"])
        assert tree.tree_hash() == h(c["tree_hash_after"])

    run_case("tree-operations.json", case_name, case, SUPPORTED_SUITES, check)


@pytest.mark.parametrize("case", case_params("mls", "treekem.json"))
def test_treekem(case: dict[str, Any], case_name: str) -> None:
    def check(c: dict[str, Any]) -> None:
        s = get_suite(c["cipher_suite"])
        gid = h(c["group_id"])
        for up in c["update_paths"]:
            tree = RatchetTree.decode(s, h(c["ratchet_tree"]))
            tree.verify_parent_hashes()
            path = decode_all(h(up["update_path"]), UpdatePath.read)
            fdp = treekem.apply_received_path(s, tree, up["sender"], path, gid)
            assert tree.tree_hash() == h(up["tree_hash_after"])
            tree.verify_parent_hashes()
            ctx = GroupContext(c["cipher_suite"], gid, c["epoch"], tree.tree_hash(),
                               h(c["confirmed_transcript_hash"])).encoded()
            for lp in c["leaves_private"]:
                expected = up["path_secrets"][lp["index"]]
                if lp["index"] == up["sender"]:
                    assert expected is None
                    continue
                keys = {2 * lp["index"]: h(lp["encryption_priv"])}
                for ps in lp["path_secrets"]:
                    keys[ps["node"]] = treekem.node_key_pair(s, h(ps["path_secret"]))[0]
                got = treekem.decrypt_path(s, tree, lp["index"], up["sender"], path, fdp,
                                           keys.get, ctx)
                assert got.commit_secret == h(up["commit_secret"])
                assert expected is not None
                assert h(expected) == next(iter(got.path_secrets.values()))

        # Every listed leaf can also produce a path the others decrypt.
        for sender in c["leaves_private"]:
            tree = RatchetTree.decode(s, h(c["ratchet_tree"]))
            leaf = tree.leaf(sender["index"])
            assert leaf is not None
            pending = treekem.apply_new_path(s, tree, sender["index"], leaf,
                                             h(sender["signature_priv"]), gid)
            ctx = GroupContext(c["cipher_suite"], gid, c["epoch"], tree.tree_hash(),
                               h(c["confirmed_transcript_hash"])).encoded()
            path = treekem.encrypt_path(s, tree, pending, ctx)
            tree.verify_parent_hashes()
            for lp in c["leaves_private"]:
                if lp["index"] == sender["index"]:
                    continue
                receiver = RatchetTree.decode(s, h(c["ratchet_tree"]))
                fdp = treekem.apply_received_path(s, receiver, sender["index"], path, gid)
                assert receiver.tree_hash() == tree.tree_hash()
                keys = {2 * lp["index"]: h(lp["encryption_priv"])}
                for ps in lp["path_secrets"]:
                    keys[ps["node"]] = treekem.node_key_pair(s, h(ps["path_secret"]))[0]
                got = treekem.decrypt_path(s, receiver, lp["index"], sender["index"], path,
                                           fdp, keys.get, ctx)
                assert got.commit_secret == pending.result.commit_secret

    run_case("treekem.json", case_name, case, SUPPORTED_SUITES, check)
