"""The member and DSO pages in a real browser (headless Chromium through playwright-core),
at phone width: sign-in with a key that stays in the page, an order signed in the browser and
found on chain, the order book, open orders, the band chart, the feeder drawing and the
bands. Saves docs/screenshots/member.png and dso.png (shown in the README)."""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from contracts.market import AssetKind, OrderRequest, OrderStatus, Side

ROOT = Path(__file__).resolve().parents[3]
CHROMIUM = Path("/usr/bin/chromium")
PLAYWRIGHT = ROOT / "node_modules" / "playwright-core"
SCRIPT = Path(__file__).parent / "browser" / "pages.mjs"
SCREENSHOTS = ROOT / "docs" / "screenshots"
NODE = shutil.which("node")

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"),
    pytest.mark.skipif(not PLAYWRIGHT.is_dir(), reason=f"no {PLAYWRIGHT.relative_to(ROOT)} (run npm ci)"),
    pytest.mark.skipif(NODE is None, reason="no node on PATH"),
]


def hex_key(signer) -> str:
    return "0x" + bytes(signer.account.key).hex()


def ocm_status(world, minute: int) -> dict:
    """An OCM cycle as the oracle reports it: the small feeder within limits, one binding line."""
    feeder = world.context.feeder
    buses = [
        {
            "bus": bus.bus,
            "vm_pu": round(1.0 - 0.008 * bus.bus, 4),
            "vm_pu_at_pmax": round(1.0 - 0.012 * bus.bus, 4),
            "vm_pu_at_pmin": round(1.0 + 0.004 * bus.bus, 4),
            "min_vm_pu": 0.95,
            "max_vm_pu": 1.05,
            # a three-phase OCM (docs/three-phase.md): phase a carries more load than b and c
            "vm_phase_pu": [round(1.0 - 0.010 * bus.bus, 4), round(1.0 - 0.007 * bus.bus, 4), 1.0],
            "unbalance_percent": round(0.2 * bus.bus, 2),
        }
        for bus in feeder.buses
    ]
    loadings = {
        ("trafo", 0): (46.0, 61.0),
        ("line", 0): (71.5, 88.0),
        ("line", 1): (93.0, 99.6),
        ("line", 2): (38.2, 52.0),
    }
    branches = [
        {
            "kind": branch.kind,
            "index": branch.index,
            "loading_percent": loadings.get((branch.kind, branch.index), (20.0, 30.0))[0],
            "loading_percent_at_corners": loadings.get((branch.kind, branch.index), (20.0, 30.0))[1],
            "limit_percent": 100.0,
        }
        for branch in feeder.branches
    ]
    return {  # the schema of ocm/status.py (version 1)
        "version": 1,
        "minute": minute,
        "computed_at": minute * 60 + 5,
        "seconds": 0.4,
        "feasible": True,
        "published": True,
        "reason": "published",
        "objective": "sum",
        "measured_buses": 4,
        "stale_meters": {"count": 0, "first": []},
        "buses": buses,
        "branches": branches,
        "binding": [
            {
                "kind": "loading",
                "element": "line",
                "index": 1,
                "value": 99.6,
                "limit": 100.0,
                "corner": "pmax",
            }
        ],
        "flexibilities": [
            {
                "flex_id": "BAT01",
                "bus": 3,
                "p_low_kw": -5.0,
                "p_high_kw": 5.0,
                "p_min_kw": -4.0,
                "p_max_kw": 4.5,
                "p_kw": 0.0,
                "metered": False,
            },
            {
                "flex_id": "EV01",
                "bus": 4,
                "p_low_kw": 0.0,
                "p_high_kw": 11.0,
                "p_min_kw": 0.0,
                "p_max_kw": 7.0,
                "p_kw": 0.0,
                "metered": False,
            },
        ],
        "verification": {
            "passed": True,
            "schedules": 66,
            "failures": 0,
            "v_min_pu": 0.952,
            "v_max_pu": 1.016,
            "max_loading_percent": 99.6,
            "message": "",
            "adjustment": "",
        },
    }


class Script:
    """The Node script as a child process: its JSON lines, and "go" answers on its stdin."""

    def __init__(self, env: dict[str, str]):
        self.process = subprocess.Popen(
            [NODE, str(SCRIPT)],
            env=env,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, args=(self.process.stdout, self.lines.put), daemon=True).start()
        threading.Thread(
            target=self._read, args=(self.process.stderr, self.stderr.append), daemon=True
        ).start()

    @staticmethod
    def _read(stream, put) -> None:
        for line in stream:
            put(line)
        put(None)

    def message(self, deadline: float) -> dict:
        """The next JSON line it prints (or a failure report when it ends or takes too long)."""
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.process.kill()
                return {"ok": False, "problems": ["the browser script took too long"]}
            if line is None:
                self.process.wait(timeout=10)
                return {
                    "ok": False,
                    "problems": ["the browser script ended early", "".join(self.stderr)[-3000:]],
                }
            if line.startswith("{"):
                return json.loads(line)

    def go(self) -> None:
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


def test_member_and_dso_pages(world, served, tmp_path):
    market = world.community.market
    alice, bob = world["alice"], world["bob"]
    slot = world.community.clock.slot_of(time.time()) + 2  # the next-but-one slot
    # bob offers 0.2 kWh from his house meter: alice's order trades part, the rest rests
    world.community.client.forget_nonces()  # other tests had bob sign through the API, not this client
    market.place_order(bob, OrderRequest(slot, Side.SELL, "M-B", 0.2, "0.20", asset_kind=AssetKind.METER))
    status_file = tmp_path / "ocm-status.json"
    status_file.write_text(json.dumps(ocm_status(world, int(time.time()) // 60)))
    previous = world.context.ocm_status_file
    world.context.ocm_status_file = status_file
    env = {
        **os.environ,
        "LEC_URL": served,
        "LEC_MEMBER_KEY": hex_key(alice),  # to the page only; the script fails if it reaches the server
        "LEC_DSO_KEY": hex_key(world["dso"]),
        "LEC_SLOT": str(slot),
        "LEC_FLEX": "BAT01",
        "LEC_EXPECT_SCHEDULE": "1",
        "LEC_SCREENSHOTS": str(SCREENSHOTS),
        "LEC_CHROMIUM": str(CHROMIUM),
    }
    started = time.monotonic()
    deadline = started + 90
    script = Script(env)
    try:
        placed = script.message(deadline)
        assert "placed" in placed, "\n".join(placed.get("problems", []))
        order_id = int(placed["placed"])
        # on chain, while the page shows it: alice's buy for BAT01, partly filled by bob's offer
        resting = {o.order_id: o for o in market.open_orders(slot, Side.BUY)}
        assert order_id in resting, resting
        order = resting[order_id]
        assert (order.owner, order.asset_id, order.energy_kwh) == (alice.address, "BAT01", 0.5)
        assert order.remaining_kwh == pytest.approx(0.3)
        script.go()
        report = script.message(deadline)
    finally:
        script.stop()
        world.context.ocm_status_file = previous
    assert report.get("ok"), "\n".join(report.get("problems", [])) + "".join(script.stderr)[-2000:]
    assert time.monotonic() - started < 60

    seen = report["seen"]
    assert seen["member_address"] == alice.address
    assert seen["order_status"].startswith("Order placed")
    assert seen["schedule_line"]
    assert market.order(order_id).status == OrderStatus.CLOSED  # cancelled from the page
    assert order_id not in {o.order_id for o in market.open_orders(slot, Side.BUY)}
    assert seen["feeder_buses"] == len(world.context.feeder.buses)
    assert seen["band_charts"] == 2  # BAT01 and EV01
    assert seen["phase_columns"] == ["L1", "L2", "L3", "Unbal. %"]
    for name in ("member.png", "dso.png"):
        assert (SCREENSHOTS / name).stat().st_size > 10_000
