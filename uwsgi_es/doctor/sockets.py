"""What a process holds, read from Linux's /proc: its open sockets (TCP and UDP, with their
addresses and state) and how many threads it runs. Read from outside the process or from inside,
so a worker can compare its sockets with its master's."""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import asdict, dataclass
from typing import Any

_TCP_STATES = {"01": "ESTABLISHED", "02": "SYN_SENT", "06": "TIME_WAIT", "0A": "LISTEN", "08": "CLOSE_WAIT"}
# Well-known ports, to say what a connection is probably to.
KNOWN_PORTS = {5432: "PostgreSQL", 9042: "Cassandra", 6379: "redis", 3306: "MySQL", 11211: "memcached"}


@dataclass(frozen=True)
class Socket:
    inode: int
    protocol: str  # tcp, tcp6, udp, udp6
    local: str
    remote: str
    state: str

    @property
    def connected(self) -> bool:
        """A connection to somewhere (not a listening or unconnected socket)."""
        return self.state in ("ESTABLISHED", "SYN_SENT", "CLOSE_WAIT") or (
            self.protocol.startswith("udp") and not self.remote.endswith(":0")
        )

    @property
    def what(self) -> str:
        """``127.0.0.1:5432 (PostgreSQL's port)``."""
        port = int(self.remote.rsplit(":", 1)[1])
        known = KNOWN_PORTS.get(port)
        return f"{self.remote} ({known}'s port)" if known else self.remote

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def socket_inodes(pid: int | str = "self") -> dict[int, int]:
    """inode -> file descriptor of every socket the process has open."""
    found: dict[int, int] = {}
    directory = f"/proc/{pid}/fd"
    with contextlib.suppress(OSError):
        for fd in os.listdir(directory):
            with contextlib.suppress(OSError):
                target = os.readlink(f"{directory}/{fd}")
                if target.startswith("socket:["):
                    found[int(target[8:-1])] = int(fd)
    return found


def inet_sockets(pid: int | str = "self") -> dict[int, Socket]:
    """The process's TCP and UDP sockets by inode (from its network namespace's tables)."""
    sockets: dict[int, Socket] = {}
    for protocol in ("tcp", "tcp6", "udp", "udp6"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/net/{protocol}") as table:
            next(table, None)
            for line in table:
                fields = line.split()
                if len(fields) < 10:
                    continue
                inode = int(fields[9])
                state = _TCP_STATES.get(fields[3], fields[3]) if protocol.startswith("tcp") else "UDP"
                sockets[inode] = Socket(inode, protocol, _address(fields[1]), _address(fields[2]), state)
    held = socket_inodes(pid)
    return {inode: found for inode, found in sockets.items() if inode in held}


def thread_count(pid: int | str = "self") -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


def _address(hex_address: str) -> str:
    """``0100007F:1538`` -> ``127.0.0.1:5432`` (the kernel writes each 32-bit word in host order)."""
    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    family = socket.AF_INET if len(words) == 4 else socket.AF_INET6
    text = socket.inet_ntop(family, words)
    if text.startswith("::ffff:") and "." in text:
        text = text[7:]
    return f"{text}:{int(port, 16)}" if family == socket.AF_INET else f"[{text}]:{int(port, 16)}"
