"""Mosquitto as the community's MQTT broker: no anonymous clients, a password per meter
(user name = meter id), gateway users, and an ACL that confines every meter to its own
topics. The broker runs as a child process; this module writes its files and runs it.

Everything is kept in one directory (``lec up``: ``DATA_DIR/mosquitto/``):

- ``secret``: 32 random bytes (hex), mode 0600, made once. Every password is derived from
  it, HMAC-SHA256(secret, ``"meter:<meter id>"`` or ``"gateway:<user>"``) in hex, so whoever
  holds the directory can compute a meter's password again (``lec mqtt password``, the
  in-process meter simulator) and no password is stored in clear or printed;
- ``passwd``: Mosquitto's password file (salted hashes, ``mosquitto_passwd -U``), mode 0600;
- ``acl``: the ACL (``ACL`` below; docs/gateway.md shows the same);
- ``mosquitto.conf``: the configuration, written at every start (the port may change);
- ``mosquitto.db``: Mosquitto's persistence: sessions, subscriptions, queued messages;
- ``mosquitto.log``: Mosquitto's log; ``mosquitto.pid``: the running broker's process id.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import hmac
import logging
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote

from node.ports import free_port

log = logging.getLogger(__name__)

SECRET, PASSWORDS, ACL_FILE, CONFIG = "secret", "passwd", "acl", "mosquitto.conf"
LOG, PID, DATABASE = "mosquitto.log", "mosquitto.pid", "mosquitto.db"
GATEWAY_PREFIX = "gateway"
START_TIMEOUT_S = 60  # generous: Mosquitto listens within milliseconds
STOP_TIMEOUT_S = 60  # saving a large queue to disk may take a while
PORT_ATTEMPTS = 5
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
_GATEWAY_USER = re.compile(r"gateway[A-Za-z0-9_.-]*")

ACL_HEADER = """\
# written by lec (node/mosquitto.py) at every start of the broker

# gateway users read every meter's readings (also through shared subscriptions,
# $share/<group>/lec/<community>/meter/+/reading) and answer refusals
"""
GATEWAY_ACL = """\
user {user}
topic read lec/+/meter/+/reading
topic write lec/+/meter/+/rejected

"""
METER_ACL = """\
# a meter (user name = meter id) publishes its own readings and reads its own rejections
pattern write lec/+/meter/%u/reading
pattern read lec/+/meter/%u/rejected
"""

# max_queued_messages 0 is "no maximum" (mosquitto.conf(5); in 2.0.11 db__ready_for_queue
# returns true at once when it and max_queued_bytes are 0). With any maximum, a QoS 1
# reading that the broker has already acknowledged to its meter is dropped once the
# gateway's queue is full (a single NOTICE in the log, nothing to the meter or the
# gateway), and Mosquitto drops the newest readings, not the oldest. No maximum means the
# broker's memory (and mosquitto.db) grows while the gateway is away or behind: about
# 0.5 kB per reading, 60 meters ~ 45 MB per day, 1000 meters ~ 0.7 GB per day.
CONFIG_TEMPLATE = """\
# written by lec (node/mosquitto.py) at every start; changes here are overwritten
listener {port} {host}
allow_anonymous false
password_file {directory}/{passwords}
acl_file {directory}/{acl}
persistence true
persistence_location {directory}/
persistence_file {database}
# saved every minute (default 30 min) and at SIGTERM: a hard kill loses at most a minute
autosave_interval 60
# 0 = no maximum: an acknowledged reading is never dropped (see node/mosquitto.py)
max_queued_messages 0
max_inflight_messages 100
log_dest file {directory}/{log}
log_timestamp_format %Y-%m-%dT%H:%M:%S
user {user}
"""


class MosquittoError(RuntimeError):
    """Mosquitto could not be set up or did not start; the message says why."""


class MosquittoBroker:
    """Mosquitto on ``host:port`` configured from ``directory`` (module doc). Port 0 picks a
    free port at every start (``node.ports``), and another if something takes it first."""

    def __init__(
        self,
        directory: Path,
        host: str = "127.0.0.1",
        port: int = 1883,
        meter_ids: Iterable[str] = (),
        gateways: Iterable[str] = (GATEWAY_PREFIX,),
    ):
        self.directory = Path(directory)
        self.host = host
        self.port = port
        self._pick_port = not port
        self.gateways = tuple(dict.fromkeys(gateways))
        for user in self.gateways:
            if not _GATEWAY_USER.fullmatch(user):
                raise ValueError(f"a gateway user name starts with 'gateway' ({_GATEWAY_USER.pattern})")
        self.meters: set[str] = set()
        self._accept_meters(meter_ids)
        self._secret: bytes | None = None
        self._process: subprocess.Popen | None = None
        self._lock = threading.Lock()  # the password file and the process, for add_meters

    @staticmethod
    def available() -> bool:
        """Whether ``mosquitto`` and ``mosquitto_passwd`` are installed."""
        return all(_executable(name) for name in ("mosquitto", "mosquitto_passwd"))

    # ----------------------------------------------------------------- logins

    @property
    def url(self) -> str:
        """Where clients connect (without any login)."""
        return f"mqtt://{self.host}:{self.port}"

    def gateway_url(self, name: str = GATEWAY_PREFIX) -> str:
        """``mqtt://user:password@host:port`` of gateway user ``name``: a secret, never log it."""
        user, password = self.gateway_login(name)
        return f"mqtt://{quote(user, safe='')}:{password}@{self.host}:{self.port}"

    def gateway_login(self, name: str = GATEWAY_PREFIX) -> tuple[str, str]:
        """(user, password) of gateway user ``name``."""
        if name not in self.gateways:
            raise ValueError(f"{name!r} is not a gateway user of this broker ({', '.join(self.gateways)})")
        return name, derive_password(self._load_secret(), "gateway", name)

    def meter_login(self, meter_id: str) -> tuple[str, str]:
        """(user, password) of a meter: its id and the password derived for it."""
        return meter_id, derive_password(self._load_secret(), "meter", meter_id)

    def add_meters(self, meter_ids: Iterable[str]) -> list[str]:
        """Give meters a login; a running broker reloads its password file (SIGHUP) and this
        returns once it lets them in. Returns the meters that were new."""
        with self._lock:
            new = self._accept_meters(meter_ids)
            if not new:
                return []
            self._write_passwords()
            running = self.running
            if running:
                self._process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + START_TIMEOUT_S
        while running and self.running and self._connack(*self.meter_login(new[-1])) != 0:
            if time.monotonic() > deadline:
                raise MosquittoError(f"mosquitto did not take the new logins: {self.log_tail()}")
            time.sleep(0.05)
        log.info("Mosquitto: %d new meter logins (%d in all)", len(new), len(self.meters))
        return new

    # ----------------------------------------------------------------- process

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> MosquittoBroker:
        """Write the files and start Mosquitto; returns once it lets the gateway log in.
        Raises ``MosquittoError`` (with the end of its log) if it cannot start."""
        if self.running:
            return self
        if not self.available():
            raise MosquittoError("mosquitto is not installed (Debian: apt-get install mosquitto)")
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._stop_orphan()
        self._write_passwords()
        (self.directory / ACL_FILE).write_text(
            ACL_HEADER + "".join(GATEWAY_ACL.format(user=user) for user in self.gateways) + METER_ACL
        )
        for attempt in range(1, PORT_ATTEMPTS + 1):
            if self._pick_port:
                self.port = free_port(self.host)
            if self._run():
                break
            if not self._pick_port or attempt == PORT_ATTEMPTS:
                raise MosquittoError(f"mosquitto cannot listen on {self.host}:{self.port}: {self.log_tail()}")
            log.info("port %d was taken; picking another", self.port)
        atexit.register(self.stop)
        log.info("Mosquitto listening on %s (%d meter logins), files in %s", self.url, len(self.meters),
                 self.directory)  # fmt: skip
        return self

    def stop(self) -> None:
        """SIGTERM: Mosquitto saves its sessions and queued messages, then exits."""
        with self._lock:
            process, self._process = self._process, None
        atexit.unregister(self.stop)
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.warning("Mosquitto did not stop in %d s; killing it", STOP_TIMEOUT_S)
                process.kill()
                process.wait()
            log.info("Mosquitto stopped")
        with contextlib.suppress(FileNotFoundError):
            (self.directory / PID).unlink()

    def log_tail(self, lines: int = 15) -> str:
        """The end of Mosquitto's log (it holds no passwords)."""
        try:
            text = (self.directory / LOG).read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _run(self) -> bool:
        """Run Mosquitto on ``self.port`` until it lets the gateway log in; False if it
        exits because the port is taken."""
        directory = self.directory.resolve()
        for path in (directory, self.host):
            if any(c in str(path) for c in "\n\r"):
                raise MosquittoError(f"{path!r}: no line breaks allowed")
        files = {"passwords": PASSWORDS, "acl": ACL_FILE, "database": DATABASE, "log": LOG}
        user = pwd.getpwuid(os.geteuid()).pw_name  # as root, Mosquitto would switch to "mosquitto"
        config = CONFIG_TEMPLATE.format(
            port=self.port, host=self.host, directory=directory, user=user, **files
        )
        (directory / CONFIG).write_text(config)
        log_path = directory / LOG
        start_of_run = log_path.stat().st_size if log_path.exists() else 0
        with log_path.open("ab") as output:  # what Mosquitto says before its log is open
            self._process = subprocess.Popen(
                [_executable("mosquitto"), "-c", str(directory / CONFIG)],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                start_new_session=True,  # Ctrl-C stops the node, which stops the broker last
            )
        (directory / PID).write_text(f"{self._process.pid}\n")
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                said = log_path.read_bytes()[start_of_run:].decode(errors="replace")
                if "in use" in said:
                    self._process = None
                    return False
                raise MosquittoError(f"mosquitto exited with code {self._process.returncode}: {said[-2000:]}")
            code = self._connack(*self.gateway_login(self.gateways[0]))
            if code == 0:
                return True
            if code is not None:
                self.stop()
                raise MosquittoError(f"mosquitto refused the gateway's login (CONNACK {code})")
            time.sleep(0.05)
        self.stop()
        raise MosquittoError(f"mosquitto did not listen in {START_TIMEOUT_S} s: {self.log_tail()}")

    def _connack(self, user: str, password: str) -> int | None:
        """The CONNACK return code for an MQTT 3.1.1 login (0: accepted); None when there is
        no MQTT answer (yet) on the port."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        client_id = f"lec-probe-{os.getpid()}-{secrets.token_hex(4)}"
        payload = b"".join(_string(s) for s in (client_id, user, password))
        variable = _string("MQTT") + bytes([4, 0xC2]) + struct.pack(">H", 10)  # user, password, clean
        body = variable + payload
        try:
            with socket.create_connection((host, self.port), timeout=2) as probe:
                probe.sendall(bytes([0x10]) + _remaining_length(len(body)) + body)
                answer = b""
                while len(answer) < 4 and (chunk := probe.recv(4 - len(answer))):
                    answer += chunk
                if len(answer) == 4 and answer[0] == 0x20:
                    if answer[3] == 0:
                        probe.sendall(b"\xe0\x00")  # DISCONNECT
                    return answer[3]
        except OSError:
            pass
        return None

    def _stop_orphan(self) -> None:
        """Stop a Mosquitto of this directory left running by a process that was killed."""
        try:
            pid = int((self.directory / PID).read_text())
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return
        if str(self.directory.resolve() / CONFIG).encode() not in command:
            return
        log.warning("stopping Mosquitto (pid %d) left running by an earlier start", pid)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)

    # ----------------------------------------------------------------- files

    def _accept_meters(self, meter_ids: Iterable[str]) -> list[str]:
        new = []
        for meter_id in meter_ids:
            if meter_id in self.meters or meter_id in new:
                continue
            if meter_id.startswith(GATEWAY_PREFIX) or not meter_id or re.search(r"[:+#/\s]", meter_id):
                log.warning("meter %r gets no MQTT login: its id cannot be a meter's user name", meter_id)
                continue
            new.append(meter_id)
        self.meters.update(new)
        return new

    def _load_secret(self) -> bytes:
        if self._secret is None:
            self._secret = load_secret(self.directory, create=True)
        return self._secret

    def _write_passwords(self) -> None:
        """The password file of every login, hashed by ``mosquitto_passwd -U`` before it
        replaces the old one (the clear-text draft is private and removed)."""
        secret = self._load_secret()
        logins = [(user, derive_password(secret, "gateway", user)) for user in self.gateways]
        logins += [(meter, derive_password(secret, "meter", meter)) for meter in sorted(self.meters)]
        draft = self.directory / f"{PASSWORDS}.draft"
        try:
            with contextlib.suppress(FileNotFoundError):
                draft.unlink()
            with os.fdopen(os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
                file.writelines(f"{user}:{password}\n" for user, password in logins)
            hashed = subprocess.run(
                [_executable("mosquitto_passwd"), "-U", str(draft)],
                capture_output=True,
                text=True,
                check=False,
            )
            if hashed.returncode != 0:
                raise MosquittoError(f"mosquitto_passwd -U failed: {hashed.stderr.strip() or hashed.stdout}")
            draft.chmod(0o600)
            draft.replace(self.directory / PASSWORDS)
        finally:
            with contextlib.suppress(FileNotFoundError):
                draft.unlink()


def load_secret(directory: Path, create: bool = False) -> bytes:
    """The secret of ``directory``, made (mode 0600) when ``create`` and there is none yet."""
    path = Path(directory) / SECRET
    if create and not path.exists():
        Path(directory).mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # made meanwhile by another process: use that one
            pass
        else:
            with os.fdopen(descriptor, "w") as file:
                file.write(secrets.token_hex(32) + "\n")
    try:
        return bytes.fromhex(path.read_text().strip())
    except ValueError:
        raise MosquittoError(f"{path} is not a secret written by lec (64 hex digits)") from None


def derive_password(secret: bytes, kind: str, name: str) -> str:
    """The password of ``name`` (``kind`` "meter" or "gateway"): HMAC-SHA256 in hex."""
    return hmac.new(secret, f"{kind}:{name}".encode(), hashlib.sha256).hexdigest()


def meter_password(directory: Path, meter_id: str) -> str:
    """A meter's MQTT password, from the secret in ``directory`` (FileNotFoundError: none)."""
    return derive_password(load_secret(directory), "meter", meter_id)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, exited but not yet reaped, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _executable(name: str) -> str | None:
    return shutil.which(name, path=_SEARCH_PATH)


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack(">H", len(data)) + data


def _remaining_length(length: int) -> bytes:
    encoded = bytearray()
    while True:
        length, digit = divmod(length, 128)
        encoded.append(digit | (0x80 if length else 0))
        if not length:
            return bytes(encoded)
