"""A real IMAP server on loopback for the IMAP fetch tests: Debian's dovecot, started per test with its own config.

Dovecot runs in the foreground (`dovecot -F -c <config>`), listening on 127.0.0.1 on free ports,
with a passwd-file user database holding one test user and maildir mail under the test's
tmp_path. Messages are put in with IMAP APPEND (with the INTERNALDATE the test chooses).

Dovecot does not let a mail process run as root (uid 0). As root (CI and this machine), the login
processes run as `dovenull` and the internals as `dovecot` (the users the Debian package creates),
the mail process as `dovecot` chrooted into the mail folder (the chroot is done as root, so the
private tmp_path needs no opening up), and only the auth process stays root to read the passwd-file
in tmp_path. As another user, every process runs as that user without chroots.

`make system-deps` installs dovecot (`dovecot-imapd`); without it these tests fail, they do not skip.
"""

from __future__ import annotations

import grp
import imaplib
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from helpers_smtp import free_port, self_signed_certificate

from factory_dagster.feedback.imap_fetch import ImapSettings, imap_utf7

USERNAME = "replies@brightwave.example"
PASSWORD = "imap-T3st-pa55-" + "x7Qv" * 4


def dovecot_binary() -> str:
    found = shutil.which("dovecot") or next(
        (p for p in ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot") if os.access(p, os.X_OK)), None
    )
    if found is None:
        pytest.fail(
            "the IMAP tests need dovecot on this machine: run `make system-deps` as root "
            "(apt-get install dovecot-imapd), or install dovecot with IMAP from your system's packages"
        )
    return found


@dataclass
class Dovecot:
    """One running dovecot: `port` speaks plain IMAP (and STARTTLS with TLS on), `tls_port` implicit TLS."""

    port: int
    tls_port: int | None
    password: str
    ca_file: Path | None
    log: Path
    mail_root: Path
    process: subprocess.Popen

    def settings(self, tls: str = "none", **overrides: object) -> ImapSettings:
        port = self.tls_port if tls == "implicit" else self.port
        values: dict = {"host": "127.0.0.1", "port": port, "tls": tls, "username": USERNAME, "password": self.password}
        if self.ca_file is not None:
            values["ca_file"] = str(self.ca_file)
        values.update(overrides)
        return ImapSettings(**values)

    def env(self, tls: str = "none") -> dict[str, str]:
        """The FACTORY_IMAP_* variables a user would set for this server."""
        env = {
            "FACTORY_IMAP_HOST": "127.0.0.1",
            "FACTORY_IMAP_PORT": str(self.tls_port if tls == "implicit" else self.port),
            "FACTORY_IMAP_TLS": tls,
            "FACTORY_IMAP_USERNAME": USERNAME,
            "FACTORY_IMAP_PASSWORD": self.password,
        }
        if self.ca_file is not None:
            env["FACTORY_IMAP_CA_FILE"] = str(self.ca_file)
        return env

    @contextmanager
    def client(self) -> Iterator[imaplib.IMAP4]:
        """A logged-in session, as a mail client (not the code under test) would open one."""
        imap = imaplib.IMAP4("127.0.0.1", self.port, timeout=10)
        if self.ca_file is not None:
            imap.starttls(ssl_context=ssl.create_default_context(cafile=str(self.ca_file)))
        imap.authenticate("PLAIN", lambda _: f"\0{USERNAME}\0{self.password}".encode())
        try:
            yield imap
        finally:
            imap.logout()

    def append(self, raw: bytes, when: datetime, folder: str = "INBOX") -> int:
        """Deliver one message into `folder` with this INTERNALDATE; returns its UID."""
        with self.client() as imap:
            typ, data = imap.append(_quoted(folder), None, imaplib.Time2Internaldate(when), raw)
        assert typ == "OK", data
        return int(data[0].split(b"APPENDUID ")[1].split(b" ")[1].rstrip(b"]"))

    def create_folder(self, name: str) -> None:
        with self.client() as imap:
            typ, data = imap.create(_quoted(name))
        assert typ == "OK", data

    def expunge(self, uid: int, folder: str = "INBOX") -> None:
        with self.client() as imap:
            imap.select(_quoted(folder))
            assert imap.uid("STORE", str(uid), "+FLAGS.SILENT", r"(\Deleted)")[0] == "OK"
            assert imap.expunge()[0] == "OK"

    def flags(self, folder: str = "INBOX") -> dict[int, str]:
        """uid -> FLAGS, read without changing them."""
        with self.client() as imap:
            imap.select(_quoted(folder), readonly=True)
            typ, data = imap.uid("FETCH", "1:*", "(UID FLAGS)")
        flags = {}
        for line in data:
            text = line.decode()
            uid = int(text.split("UID ")[1].split()[0].rstrip(")"))
            flags[uid] = text.split("FLAGS (")[1].split(")")[0]
        return flags


def _quoted(folder: str) -> str:
    return '"' + imap_utf7(folder) + '"'


def _config(tmp: Path, base_dir: Path, port: int, tls_port: int | None, cert: tuple[Path, Path] | None) -> str:
    mail_root = tmp / "mail"
    users = tmp / "users"
    if os.geteuid() == 0:
        identity = f"""default_internal_user = dovecot
default_internal_group = dovecot
default_login_user = dovenull
valid_chroot_dirs = {mail_root}
service auth {{
  user = root
}}
userdb {{
  driver = static
  args = uid=dovecot gid=dovecot home={mail_root}/./%u
}}
"""
    else:
        me, group = pwd.getpwuid(os.geteuid()).pw_name, grp.getgrgid(os.getegid()).gr_name
        identity = f"""default_internal_user = {me}
default_internal_group = {group}
default_login_user = {me}
service anvil {{
  chroot =
}}
userdb {{
  driver = static
  args = uid={os.geteuid()} gid={os.getegid()} home={mail_root}/%u
}}
"""
    tls = "ssl = no\ndisable_plaintext_auth = no\n"
    if cert is not None:
        tls = f"ssl = required\nssl_cert = <{cert[0]}\nssl_key = <{cert[1]}\ndisable_plaintext_auth = yes\n"
    chroot = "" if os.geteuid() == 0 else "  chroot =\n"
    return f"""# Written by tests/helpers_imap.py for one test; nothing here reads the system's /etc/dovecot.
base_dir = {base_dir}
state_dir = {tmp / "state"}
instance_name = factory-test-{port}
log_path = {tmp / "dovecot.log"}
protocols = imap
listen = 127.0.0.1
auth_mechanisms = plain login
auth_failure_delay = 0
first_valid_uid = 1
mail_location = maildir:~/Maildir
{tls}{identity}passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {users}
}}
service imap-login {{
{chroot}  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port or 0}
  }}
}}
"""


@contextmanager
def running_dovecot(tmp_path: Path, tls: bool = False, password: str = PASSWORD) -> Iterator[Dovecot]:
    """Start dovecot for one test (TLS required with `tls`) and stop it (and its children) afterwards."""
    binary = dovecot_binary()
    tmp = tmp_path / "dovecot"
    (tmp / "state").mkdir(parents=True)
    mail_root = tmp / "mail"
    mail_root.mkdir()
    (mail_root / USERNAME).mkdir()
    if os.geteuid() == 0:
        for folder in (mail_root, mail_root / USERNAME):
            os.chown(folder, pwd.getpwnam("dovecot").pw_uid, grp.getgrnam("dovecot").gr_gid)
    (tmp / "users").write_text(encoding="utf-8", data=f"{USERNAME}:{{PLAIN}}{password}::::::\n")
    cert = self_signed_certificate(tmp) if tls else None
    # Unix socket paths are limited to about 100 bytes, and tmp_path can be longer: the sockets go in /tmp.
    base_dir = Path(tempfile.mkdtemp(prefix="fdv-"))
    process = None
    try:
        for _attempt in range(3):  # a free port can be taken by another test between the choice and the bind
            port, tls_port = free_port(), free_port() if tls else None
            config = tmp / "dovecot.conf"
            config.write_text(_config(tmp, base_dir, port, tls_port, cert))
            (tmp / "dovecot.log").unlink(missing_ok=True)
            # Its own process group: the master and all it forked stop together, at once (a graceful stop takes 1 s).
            with open(tmp / "dovecot.stderr", "wb") as stderr:
                process = subprocess.Popen(
                    [binary, "-F", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True
                )
            if _listening(process, port, tmp / "dovecot.log"):
                break
            stop(process)
        else:
            stderr_text = (tmp / "dovecot.stderr").read_text(errors="replace")
            logged = (tmp / "dovecot.log").read_text(errors="replace") if (tmp / "dovecot.log").exists() else ""
            pytest.fail(f"dovecot did not start ({config}):\n{stderr_text}\n{logged}")
        yield Dovecot(port, tls_port, password, cert[0] if cert else None, tmp / "dovecot.log", mail_root, process)
    finally:
        if process is not None:
            stop(process)
        shutil.rmtree(base_dir, ignore_errors=True)


def stop(process: subprocess.Popen) -> None:
    """Kill this dovecot's process group (its master and children) and wait until none of them is left."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=10)
    deadline = time.monotonic() + 10
    while _group_running(process.pid) and time.monotonic() < deadline:
        time.sleep(0.005)


def _group_running(pgid: int) -> bool:
    """Whether a process of this group still runs (zombies waiting for init to reap them do not count; no /proc: no)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _ppid, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
        if int(group) == pgid and state not in ("Z", "X"):
            return True
    return False


def _listening(process: subprocess.Popen, port: int, log: Path, timeout_s: float = 10.0) -> bool:
    """Whether this dovecot came up and greets on `port` (False: it exited, e.g. because a port was taken).

    Dovecot binds every listener before it logs "starting up" and exits when a bind fails, so the log line,
    not a connect (which another process's listener could answer), says the ports are its own.
    """
    deadline = time.monotonic() + timeout_s
    while not (log.exists() and "starting up" in log.read_text(errors="replace")):
        if process.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as probe:
        greeting = probe.recv(64)
    return greeting.startswith(b"* OK") and process.poll() is None
