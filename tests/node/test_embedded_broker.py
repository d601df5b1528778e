"""The embedded broker's log: amqtt's per-message warnings are summed up, not flooded."""

from __future__ import annotations

import logging

from node.broker import RepeatSummary, _summarize_repeats

PUBACK = "Received PUBACK for unknown pending message Id: '%d'"


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(message: str, level: int = logging.WARNING, name: str = "amqtt.mqtt.protocol.handler"):
    return logging.LogRecord(name, level, __file__, 1, message, (), None)


def test_first_of_a_kind_passes_then_one_summary_a_minute():
    clock = Clock()
    summary = RepeatSummary(60, clock)
    passed = []
    for second in range(185):  # 10 warnings a second for a bit over three minutes
        clock.now = 1000.0 + second
        for n in range(10):
            item = record(PUBACK % (second * 10 + n))
            if summary.filter(item):
                passed.append(item.getMessage())
    assert passed == [
        PUBACK % 0,
        f"{PUBACK % 600} (599 more in the last 60 s)",
        f"{PUBACK % 1200} (599 more in the last 60 s)",
        f"{PUBACK % 1800} (599 more in the last 60 s)",
    ]


def test_kinds_are_counted_apart_and_flush_reports_what_is_held_back(caplog):
    clock = Clock()
    summary = RepeatSummary(60, clock)
    timeout = "Timeout waiting for PUBACK for packet ID %d"
    assert summary.filter(record(PUBACK % 1)) and summary.filter(record(timeout % 1))
    assert summary.filter(record(PUBACK % 1, logging.ERROR)), "another level is another kind"
    assert not summary.filter(record(PUBACK % 2)) and not summary.filter(record(timeout % 2))
    for n in range(3, 6):
        summary.filter(record(PUBACK % n))
    with caplog.at_level(logging.WARNING, logger="amqtt"):
        summary.flush()
    assert sorted(r.getMessage() for r in caplog.records) == sorted(
        [f"{PUBACK % 5} (3 more in the last 0 s)", timeout % 2]
    )
    assert summary.filter(record(PUBACK % 6)), "after a flush the next one passes"


def test_the_filter_is_on_amqtts_loggers_and_holds_back_a_flood(caplog):
    _summarize_repeats()
    handler_log = logging.LoggerAdapter(logging.getLogger("amqtt.mqtt.protocol.handler"), {"client_id": "c"})
    with caplog.at_level(logging.WARNING, logger="amqtt"):
        for n in range(5000):
            handler_log.warning(f"Received PUBACK for unknown pending message Id: '{n}'")
    assert [r.getMessage() for r in caplog.records] in ([PUBACK % 0], [])  # [] if a test before showed one
    assert any(isinstance(f, RepeatSummary) for f in logging.getLogger("amqtt.broker").filters)
