"""Shared by DNS tests: dnsmasq on a free loopback UDP port.

A records come from a hosts file that dnsmasq re-reads on SIGHUP (``reload``). SRV
records come from ``--srv-host``, which dnsmasq reads only at start (SIGHUP re-reads
hosts files, never its configuration; dnsmasq 2.90 has no file or directory of SRV
records it watches), so a new SRV set means a new dnsmasq on the same port
(``restart``).
"""

from __future__ import annotations

import asyncio
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import runtime_support  # noqa: F401  generates echo.proto, puts it on the path

DOMAIN = "svc.test"
DNSMASQ = shutil.which("dnsmasq") or (
    "/usr/sbin/dnsmasq" if Path("/usr/sbin/dnsmasq").exists() else None
)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PortTaken(Exception):
    """Another process bound dnsmasq's port first."""


class Dnsmasq:
    """One dnsmasq process answering for ``svc.test`` (NXDOMAIN for unknown names)."""

    def __init__(
        self, workdir: Path, hosts: Mapping[str, Sequence[str]], srv: Sequence[str]
    ) -> None:
        self.hosts_file = workdir / "hosts"
        self.write_hosts(hosts)
        for _ in range(5):  # bounded: a port found free may be taken before dnsmasq binds it
            self.port = free_udp_port()
            self.address = f"127.0.0.1:{self.port}"
            self.process = self._spawn(srv)
            try:
                self._await_read()  # the hosts file is read after the socket is bound
                return
            except PortTaken:
                self.stop()
        raise RuntimeError("dnsmasq found its port taken five times")

    def _spawn(self, srv: Sequence[str]) -> subprocess.Popen[str]:
        assert DNSMASQ is not None
        return subprocess.Popen(
            [
                DNSMASQ,
                "--keep-in-foreground",
                "--log-facility=-",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                f"--port={self.port}",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                f"--local=/{DOMAIN}/",
                f"--addn-hosts={self.hosts_file}",
                "--pid-file=",
                # Stay who we are: the files are in a private temporary directory.
                f"--user={pwd.getpwuid(os.getuid()).pw_name}",
                f"--group={grp.getgrgid(os.getgid()).gr_name}",
                *(f"--srv-host={record}" for record in srv),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def write_hosts(self, hosts: Mapping[str, Sequence[str]]) -> None:
        lines = [f"{ip} {name}.{DOMAIN}\n" for name, ips in hosts.items() for ip in ips]
        self.hosts_file.write_text("".join(lines))

    async def reload(self, hosts: Mapping[str, Sequence[str]]) -> None:
        """Rewrite the hosts file and return once dnsmasq has re-read it."""
        self.write_hosts(hosts)
        self.process.send_signal(signal.SIGHUP)
        await asyncio.to_thread(self._await_read)

    async def restart(self, srv: Sequence[str]) -> None:
        """Stop dnsmasq and start it again on the same port with the SRV records
        ``srv`` (same hosts file); return once it answers. Queries sent in between
        are refused (ICMP port unreachable)."""
        self.stop()
        self.process = self._spawn(srv)
        await asyncio.to_thread(self._await_read)

    def _await_read(self) -> None:
        assert self.process.stderr is not None
        said: list[str] = []
        for line in self.process.stderr:  # ends when dnsmasq exits
            if f"read {self.hosts_file}" in line:
                return
            said.append(line.strip())
            if "FAILED" in line or "illegal" in line:
                break
        if any("Address already in use" in line for line in said):
            raise PortTaken(self.address)
        raise RuntimeError(f"dnsmasq did not read {self.hosts_file}: {said}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        if self.process.stderr is not None:
            self.process.stderr.close()


Start = Callable[..., Dnsmasq]
"""``start(hosts={"echo": ["127.0.0.1"]}, srv=["_grpc._tcp.echo.svc.test,n.svc.test,7001"])``"""
