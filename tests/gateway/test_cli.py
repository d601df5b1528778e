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
