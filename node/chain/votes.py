"""Clique's signer snapshots with geth's vote bookkeeping.

py-evm tallies Clique votes like geth except when a signer is voted out: it then drops
the votes cast *by* that signer and the votes *about* it in one pass, and a vote that is
both (a signer that voted itself out, which geth allows) is removed twice and the block
fails to import (``list.remove(x): x not in list``). This manager applies a header as
geth's ``snapshot.apply`` does: first the dropped signer's own votes are withdrawn, then
every vote about the changed account is discarded, then its tally.
"""

from __future__ import annotations

from eth.abc import BlockHeaderAPI
from eth.consensus.clique import CliqueConsensusContext
from eth.consensus.clique._utils import get_block_signer, is_checkpoint
from eth.consensus.clique.constants import NONCE_AUTH, NONCE_DROP
from eth.consensus.clique.datatypes import Snapshot, Vote, VoteAction
from eth.consensus.clique.snapshot_manager import SnapshotManager
from eth.db.chain import ChainDB


class GethVoteSnapshotManager(SnapshotManager):
    def apply(self, current_snapshot: Snapshot, header: BlockHeaderAPI) -> Snapshot:
        if is_checkpoint(header.block_number, self._epoch_length):
            return self._create_snapshot_from_checkpoint_header(header)
        snapshot = current_snapshot.get_mutable_clone(header.hash)
        if header.nonce in {NONCE_AUTH, NONCE_DROP}:
            signer, subject = get_block_signer(header), header.coinbase
            for vote in snapshot.votes:  # a signer's new vote on a subject replaces its old one
                if vote.signer == signer and vote.subject == subject:
                    self.retract_vote(snapshot, vote.subject, vote.action)
                    snapshot.votes.remove(vote)
                    break
            action = VoteAction(header.nonce)
            if self.cast_vote(snapshot, subject, action):
                snapshot.votes.append(Vote(signer, header.block_number, subject, action))
                if snapshot.tallies[subject].votes > len(snapshot.signers) / 2:
                    self._enact(snapshot, subject, action)
        self.add_snapshot(snapshot)
        return snapshot.get_immutable_clone()

    def _enact(self, snapshot, subject, action: VoteAction) -> None:
        """A majority was reached: change the signer set as geth does."""
        if action is VoteAction.NOMINATE:
            snapshot.signers.append(subject)
        else:
            if subject in snapshot.signers:
                snapshot.signers.remove(subject)
            for vote in [vote for vote in snapshot.votes if vote.signer == subject]:
                self.retract_vote(snapshot, vote.subject, vote.action)
                snapshot.votes.remove(vote)
        snapshot.votes[:] = [vote for vote in snapshot.votes if vote.subject != subject]
        snapshot.tallies.pop(subject, None)


class CommunityCliqueContext(CliqueConsensusContext):
    """py-evm's Clique context with ``GethVoteSnapshotManager``."""

    def __init__(self, db) -> None:
        super().__init__(db)
        self.snapshot_manager = GethVoteSnapshotManager(ChainDB(db), self.epoch_length)
