"""The TCP ports a deployment's processes listen on, and whether each is reachable from other hosts.

A deployment should be reachable only from this host: its API server binds 127.0.0.1 because we
pass --host, but engines open ports of their own (ZeroMQ queues, torch.distributed's TCPStore,
gloo and NCCL bootstrap) wherever their defaults put them. Rather than trust each default, the
deployment looks at what its processes actually hold: the listening sockets in /proc/net/tcp{,6}
whose inodes one of its processes has open.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from emulator.process_groups import open_files

TCP_LISTEN = "0A"       # the socket state column of /proc/net/tcp


@dataclass(frozen=True)
class Endpoint:
    pid: int
    process: str        # the process's name (comm)
    address: str
    port: int

    @property
    def loopback(self) -> bool:
        return ipaddress.ip_address(self.address).is_loopback

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port} ({self.process}, pid {self.pid})"


def listening(pids: list[int]) -> list[Endpoint]:
    """The listening TCP sockets that processes `pids` hold open."""
    sockets = _listening_sockets()
    found = set()
    for pid in pids:
        try:
            comm = open(f"/proc/{pid}/comm").read().strip()
            links = open_files(pid)
        except OSError:         # gone meanwhile, or not ours to read
            continue
        for link in links:
            if link.startswith("socket:[") and link[8:-1] in sockets:
                found.add(Endpoint(pid, comm, *sockets[link[8:-1]]))
    return sorted(found, key=lambda e: (e.port, e.pid))


def _listening_sockets() -> dict[str, tuple[str, int]]:
    """inode -> (address, port) of every listening TCP socket of this network namespace."""
    sockets = {}
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:         # no IPv6 on this host
            continue
        for line in lines:
            fields = line.split()
            if fields[3] != TCP_LISTEN:
                continue
            address, port = fields[1].split(":")
            sockets[fields[9]] = (_address(address, width), int(port, 16))
    return sockets


def _address(hex_address: str, width: int) -> str:
    """/proc/net/tcp's address: 32-bit words in host byte order (little-endian here)."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, width, 4))
    address = ipaddress.ip_address(words)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return str(address)
