"""Opening the community of a data directory on a running node, for the services' commands
(``lec gateway run``, ``lec oracle run``, ``lec market ...``)."""

from __future__ import annotations

from pathlib import Path

from node.cli.errors import CliError


def open_community(data_dir: Path, rpc_url: str):
    """(community, keyring) of ``data_dir`` (its ``deployment.json`` and ``keys.json``), on
    the node at ``rpc_url``; a clear ``CliError`` when either is missing or does not match."""
    from contracts.accounts import Keyring
    from contracts.build import CompileError, build_contracts
    from contracts.client import ChainClient, ChainError
    from contracts.community import Community
    from contracts.deploy import Deployment

    deployment = Deployment.load(data_dir)
    if deployment is None:
        raise CliError(
            f"no community deployment recorded in {data_dir} (no deployment.json): deploy it first "
            "(lec up or lec contracts deploy)"
        )
    try:
        artifacts = build_contracts().artifacts
        client = ChainClient.connect(rpc_url, artifacts)
    except (ChainError, CompileError) as error:
        raise CliError(str(error), exit_code=1) from None
    if client.chain_id != deployment.chain_id:
        raise CliError(f"{rpc_url} serves chain {client.chain_id}, not {deployment.chain_id} (deployment)")
    return Community(client, deployment), Keyring.load_or_create(data_dir)
