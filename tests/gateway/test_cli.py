"""``lec gateway`` and ``lec meters``: help that teaches, clear errors."""

from __future__ import annotations

import argparse

import pytest

from node.cli import gateway
from node.cli.errors import CliError


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="lec")
    gateway.register(root.add_subparsers(dest="command", required=True))
    return root


def test_help_teaches_topics_payload_and_examples(capsys):
    with pytest.raises(SystemExit):
        parser().parse_args(["gateway", "run", "--help"])
    text = capsys.readouterr().out
    for expected in ("lec/<community>/meter/<meter_id>/reading", "/rejected", '"signature"', "examples:"):
        assert expected in text
    with pytest.raises(SystemExit):
        parser().parse_args(["meters", "simulate", "--help"])
    assert "HELM load flow" in capsys.readouterr().out


def test_missing_deployment_and_bad_urls_are_clear_errors(tmp_path):
    args = parser().parse_args(["gateway", "run", "--data-dir", str(tmp_path), "--mqtt-url", "http://x"])
    with pytest.raises(CliError, match="mqtt://user:password@host:port"):
        args.func(args)
    args = parser().parse_args(["meters", "simulate", "--data-dir", str(tmp_path)])
    with pytest.raises(CliError, match=r"no deployment\.json"):
        args.func(args)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--name", "evil/../x"], "--name must start with 'gateway'"),
        (["--name", "meter-M01"], "--name must start with 'gateway'"),
        (["--max-backlog", "0"], "--max-backlog must be at least 1"),
        (["--max-batch", "0"], "--max-batch 1..600"),
    ],
)
def test_bad_gateway_options_are_clear_errors_before_anything_starts(tmp_path, options, message):
    args = parser().parse_args(["gateway", "run", "--data-dir", str(tmp_path), *options])
    with pytest.raises(CliError, match=message):
        args.func(args)
    assert not any(tmp_path.iterdir()), "nothing is written for refused options"


def test_a_share_group_the_broker_cannot_take_is_refused(stack, artifacts, tmp_path):
    """A share group with a topic separator or a wildcard would subscribe to something else."""
    from tests.gateway.test_crash import gateway_data_dir

    data_dir = gateway_data_dir(stack, tmp_path / "gw")
    for group in ("a/b", "x+", "#"):
        args = parser().parse_args(["gateway", "run", "--data-dir", str(data_dir), "--rpc-url", stack.url,
                                    "--share-group", group])  # fmt: skip
        with pytest.raises(CliError, match="--share-group: share group must be"):
            args.func(args)
