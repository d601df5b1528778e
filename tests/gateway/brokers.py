"""Brokers for the tests: the embedded amqtt broker and a Mosquitto process with a
password file and the ACL from docs/gateway.md."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from node.broker import EmbeddedBroker
from node.ports import free_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
GATEWAY_USER, GATEWAY_PASSWORD = "gateway", "gateway-secret"

ACL = """\
# the gateway reads every reading and answers rejections
user gateway
topic read lec/+/meter/+/reading
topic write lec/+/meter/+/rejected

# a meter (user name = meter id) publishes its own readings and reads its own rejections
pattern write lec/+/meter/%u/reading
pattern read lec/+/meter/%u/rejected
"""


def restart_embedded(broker: EmbeddedBroker) -> EmbeddedBroker:
    """Stop ``broker`` and start a new one on its port (retried while the old socket closes)."""
    broker.stop()
    deadline = time.monotonic() + 20
    while True:
        try:
            return EmbeddedBroker(broker.host, broker.port).start()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def mosquitto_available() -> bool:
    return Path(MOSQUITTO).exists() and shutil.which("mosquitto_passwd") is not None


def needs_mosquitto():
    return pytest.mark.skipif(
        not mosquitto_available(), reason="mosquitto is not installed (apt-get install mosquitto)"
    )


class AmqttBroker:
    """The embedded broker; anyone may connect, the gateway logs in with a user name."""

    kind = "amqtt"

    def __init__(self, tmp_path: Path):
        self._broker = EmbeddedBroker("127.0.0.1", 0).start()
        self.host, self.port = self._broker.host, self._broker.port

    @property
    def gateway_url(self) -> str:
        return f"mqtt://{GATEWAY_USER}@{self.host}:{self.port}"

    def meter_login(self, meter_id: str) -> tuple[str | None, str | None]:
        return None, None

    def restart(self) -> None:
        self._broker = restart_embedded(self._broker)

    def stop(self) -> None:
        self._broker.stop()


class MosquittoBroker:
    """A Mosquitto process on a free port: persistence on, no anonymous clients, one user
    per meter (user name = meter id) and the gateway user, ACL as in docs/gateway.md."""

    kind = "mosquitto"

    def __init__(self, tmp_path: Path, meter_ids):
        self.host, self.port = "127.0.0.1", free_port()
        self.directory = tmp_path / "mosquitto"
        self.directory.mkdir()
        users = {GATEWAY_USER: GATEWAY_PASSWORD, **{m: f"pw-{m}" for m in meter_ids}}
        passwords = self.directory / "passwd"
        passwords.write_text("".join(f"{user}:{password}\n" for user, password in users.items()))
        subprocess.run(["mosquitto_passwd", "-U", str(passwords)], check=True, capture_output=True)
        (self.directory / "acl").write_text(ACL)
        self.config = self.directory / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} {self.host}\n"
            "allow_anonymous false\n"
            f"password_file {passwords}\n"
            f"acl_file {self.directory / 'acl'}\n"
            "persistence true\n"
            f"persistence_location {self.directory}/\n"
            "max_queued_messages 100000\n"
            "max_inflight_messages 100\n"
            "user root\n"
        )
        self.log = self.directory / "mosquitto.log"
        self._process: subprocess.Popen | None = None
        self.start()

    @property
    def gateway_url(self) -> str:
        return f"mqtt://{GATEWAY_USER}:{GATEWAY_PASSWORD}@{self.host}:{self.port}"

    def meter_login(self, meter_id: str) -> tuple[str | None, str | None]:
        return meter_id, f"pw-{meter_id}"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self._process = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self._process.poll() is None, self.log.read_text()
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"mosquitto did not listen: {self.log.read_text()}")

    def stop(self) -> None:
        """SIGTERM: Mosquitto saves its sessions and queued messages, then exits."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(timeout=20)

    def restart(self) -> None:
        self.stop()
        self.start()
