"""The ``lec`` command line: help texts and the community node on embedded defaults."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request

from node.paths import PROJECT_ROOT
from tests.node.chain.test_node_process import free_port


def lec(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "node.cli.main", *arguments],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=300,
        check=False,
    )


def test_help_lists_the_subcommands():
    completed = lec("--help")
    assert completed.returncode == 0
    for command in ("up", "node", "contracts", "loadflow"):
        assert command in completed.stdout


def test_unknown_subcommand_is_a_usage_error():
    completed = lec("frobnicate")
    assert completed.returncode == 2 and "invalid choice" in completed.stderr


def run_up_until_ready(data_dir, port, *extra) -> tuple[subprocess.Popen, list[str]]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "node.cli.main",
            *extra,
            "up",
            "--data-dir",
            str(data_dir),
            "--port",
            str(port),
        ],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "community node running" in line:
            return process, lines
    process.kill()
    raise AssertionError("lec up did not come up:\n" + "".join(lines))


def stop(process: subprocess.Popen, lines: list[str]) -> int:
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=60)
    lines.extend(rest.splitlines(keepends=True))
    return process.returncode


def test_up_runs_the_node_deploys_once_and_keeps_keys_secret(tmp_path, artifacts):
    data_dir, port = tmp_path / "community", free_port()
    process, lines = run_up_until_ready(data_dir, port, "-v")
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}",
        data=b'{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}',
        headers={"Content-Type": "application/json"},
    )
    assert int(json.loads(urllib.request.urlopen(request, timeout=10).read())["result"], 16) > 0
    assert stop(process, lines) == 0
    first = "".join(lines)
    assert "(deployed)" in first and "recorded 3 readings" in first and "[0, 11] kW (OCM)" in first
    deployment = json.loads((data_dir / "deployment.json").read_text())

    process, lines = run_up_until_ready(data_dir, port)
    assert stop(process, lines) == 0
    second = "".join(lines)
    assert "(found)" in second and deployment["addresses"]["CommunityRegistry"] in second

    keys = json.loads((data_dir / "keys.json").read_text())
    assert (data_dir / "keys.json").stat().st_mode & 0o077 == 0, "keys.json is private to its owner"
    for key in keys.values():
        assert key.lower().removeprefix("0x") not in (first + second).lower()


def test_up_bad_options_are_clear_errors(tmp_path):
    completed = lec("up", "--data-dir", str(tmp_path), "--slot-minutes", "0")
    assert completed.returncode == 2 and "--slot-minutes must be 1..64" in completed.stderr
