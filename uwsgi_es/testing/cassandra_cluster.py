"""A real three-node Apache Cassandra cluster on one machine: nodes on 127.0.0.1, 127.0.0.2 and
127.0.0.3 (the loopback range; the same ports on each address), one data centre, from the same
Maven artifacts as ``CassandraNode``.

The nodes start one after another (the first is the seed), each with a token of its own and no
bootstrap streaming (the cluster is new and empty), and the cluster counts as up when nodetool on
every node says all three are UN (up, normal). Faults are real signals to a node's processes:
``kill`` (SIGKILL), ``pause``/``resume`` (SIGSTOP/SIGCONT), ``restart`` (same data, same ports).

    python -m uwsgi_es.testing.cassandra_cluster up     # make cassandra-cluster-up
    python -m uwsgi_es.testing.cassandra_cluster down   # make cassandra-cluster-down
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Self

from uwsgi_es.testing.cassandra import (
    CASSANDRA_VERSION,
    DEFAULT_CACHE,
    JDK17_FLAGS,
    CassandraNode,
    CassandraUnavailableError,
    stop_recorded,
)
from uwsgi_es.testing.processes import StartStop, free_port

HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
DATA_CENTRE = "datacenter1"  # the SimpleSnitch's
UP_TIMEOUT = 240.0
SCHEMA_VERSION = re.compile(r"[0-9a-f]{8}-[0-9a-f-]{27}: \[")  # a line of describecluster's "Schema versions"


def evenly_spaced_tokens(count: int) -> list[str]:
    """One Murmur3 token per node, spread evenly over the ring (each node owns a third)."""
    return [str(-(2**63) + i * (2**64 // count)) for i in range(count)]


def ports_free_on_every_host(hosts: tuple[str, ...]) -> tuple[int, int]:
    """A native and a storage port that bind on every one of ``hosts``."""
    for _ in range(50):
        native, storage = free_port(), free_port()
        if native != storage and all(_bindable(host, port) for host in hosts for port in (native, storage)):
            return native, storage
    raise CassandraUnavailableError(f"no pair of ports is free on all of {', '.join(hosts)}")


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


class CassandraCluster(StartStop):
    """Three Cassandra nodes on 127.0.0.1-3; ``contact_points`` and ``native_port`` for clients."""

    def __init__(
        self, cache: Path = DEFAULT_CACHE, *, heap: str = "768M", version: str = CASSANDRA_VERSION
    ) -> None:
        self.cache, self.heap, self.version = cache, heap, version
        self.nodes: list[CassandraNode] = []
        self.startup_seconds = 0.0

    @property
    def native_port(self) -> int:
        return self.nodes[0].native_port if self.nodes else 0

    @property
    def contact_points(self) -> str:
        """``UWSGI_ES_CASSANDRA_HOSTS``: every node's address, comma-separated."""
        return ",".join(node.host for node in self.nodes)

    def start(self) -> Self:
        started = time.monotonic()
        native, storage = ports_free_on_every_host(HOSTS)
        seed = f"{HOSTS[0]}:{storage}"
        tokens = evenly_spaced_tokens(len(HOSTS))
        self.nodes = [
            CassandraNode(
                self.cache,
                version=self.version,
                heap=self.heap,
                host=host,
                native_port=native,
                storage_port=storage,
                seeds=seed,
                initial_token=token,
                jmx_port=free_port(),
                cluster_name="uwsgi_es_cluster",
                unsafe_system=False,  # nodes are SIGKILLed and restarted: keep what they know of the ring
            )
            for host, token in zip(HOSTS, tokens, strict=True)
        ]
        try:
            for node in self.nodes:  # one after another: each joins the ring the seed holds
                node.start()
            self.wait_until_up()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def stop(self) -> None:
        """Stop every node at once (each takes seconds to drain after SIGTERM) and delete their data."""
        with ThreadPoolExecutor(len(self.nodes) or 1) as pool:
            list(pool.map(CassandraNode.stop, self.nodes))

    # Faults ------------------------------------------------------------------------------------

    def kill(self, index: int) -> None:
        """SIGKILL node ``index``: a crash (its data stays for ``restart``)."""
        self.nodes[index].send_signal(signal.SIGKILL)

    def pause(self, index: int) -> None:
        """SIGSTOP node ``index``: alive to the kernel (its sockets accept), silent to everyone."""
        self.nodes[index].send_signal(signal.SIGSTOP)

    def resume(self, index: int) -> None:
        self.nodes[index].send_signal(signal.SIGCONT)

    def restart(self, index: int) -> None:
        """Start node ``index`` again on its data (after ``kill``), and wait until all are UN and
        agree on the schema (a killed node may have lost its last schema changes, which the
        commit log syncs every 10 s, and pulls them from the others)."""
        self.nodes[index].start_process()
        self.wait_until_up()
        self.wait_for_schema_agreement()

    def wait_for_schema_agreement(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        versions: list[str] = []
        while time.monotonic() < deadline:
            described = self.nodetool(0, "describecluster", timeout=60)
            versions = [line.strip() for line in described.splitlines() if SCHEMA_VERSION.match(line.strip())]
            if len(versions) == 1 and all(node.host in versions[0] for node in self.nodes):
                return
            time.sleep(1.0)
        raise CassandraUnavailableError(f"the nodes do not agree on the schema within {timeout}s: {versions}")

    # nodetool -----------------------------------------------------------------------------------

    def nodetool(self, index: int, *arguments: str, timeout: float = 120.0) -> str:
        """Cassandra's own nodetool (org.apache.cassandra.tools.NodeTool, in the same jars) against
        node ``index`` over its JMX port."""
        node = self.nodes[index]
        java = shutil.which("java") or "java"
        command = [
            java,
            "-Xmx128M",
            *JDK17_FLAGS,
            "-cp",
            f"{node.lib}/*",
            f"-Dlogback.configurationFile=file://{self._quiet_logback()}",
            "org.apache.cassandra.tools.NodeTool",
            "-h",
            "127.0.0.1",
            "-p",
            str(node.jmx_port),
            *arguments,
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise CassandraUnavailableError(
                f"nodetool {' '.join(arguments)} on {node.host}: {done.stdout}{done.stderr}"
            )
        return done.stdout

    def repair(self, keyspace: str, *, attempts: int = 5) -> float:
        """A full repair of ``keyspace`` from node 0; returns its seconds. A node restarted moments
        ago may still refuse to take part ("negative replies"): tried again a few times."""
        started, attempt = time.monotonic(), 1
        while True:
            try:
                self.nodetool(0, "repair", "--full", keyspace, timeout=300)
                return time.monotonic() - started
            except CassandraUnavailableError:
                if attempt == attempts:
                    raise
                attempt += 1
                time.sleep(3.0)

    def _quiet_logback(self) -> Path:
        """nodetool's logging configuration: warnings to stderr (without one, logback trips on a
        jar of the classpath and prints a stack trace)."""
        path = self.cache / "nodetool-logback.xml"
        if not path.exists():
            self.cache.mkdir(parents=True, exist_ok=True)
            path.write_text(
                '<configuration><appender name="ERR" class="ch.qos.logback.core.ConsoleAppender">'
                "<target>System.err</target><encoder><pattern>%msg%n</pattern></encoder></appender>"
                '<root level="WARN"><appender-ref ref="ERR"/></root></configuration>\n'
            )
        return path

    def normal_and_up(self, index: int) -> set[str]:
        """The addresses node ``index`` sees as UN in ``nodetool status``."""
        return {
            fields[1]
            for line in self.nodetool(index, "status", timeout=60).splitlines()
            if len(fields := line.split()) > 1 and fields[0] == "UN"
        }

    def wait_until_up(self, timeout: float = UP_TIMEOUT) -> None:
        """Until every node sees every node as UN."""
        deadline = time.monotonic() + timeout
        seen: dict[str, set[str]] = {}
        while time.monotonic() < deadline:
            try:
                seen = {node.host: self.normal_and_up(i) for i, node in enumerate(self.nodes)}
            except (CassandraUnavailableError, subprocess.TimeoutExpired) as exc:
                seen = {"nodetool": {str(exc)[:300]}}
            if all(view >= set(HOSTS) for view in seen.values()) and len(seen) == len(self.nodes):
                return
            time.sleep(1.0)
        raise CassandraUnavailableError(f"not every node is UN within {timeout}s: {seen}")

    def rss_megabytes(self) -> list[float]:
        """Each running node's resident memory."""
        sizes = []
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                with contextlib.suppress(OSError):
                    status = Path(f"/proc/{node.process.pid}/status").read_text()
                    kilobytes = next(
                        int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")
                    )
                    sizes.append(kilobytes / 1024)
        return sizes


def main(argv: list[str] | None = None) -> int:
    """``up``: start a cluster that outlives this command (its state in the cache); ``down``."""
    parser = argparse.ArgumentParser(prog="python -m uwsgi_es.testing.cassandra_cluster")
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    arguments = parser.parse_args(argv)
    state = arguments.cache / "cluster.json"
    if arguments.action == "down":
        if not state.exists():
            print("no Cassandra cluster is running (nothing to stop)")
            return 0
        saved = json.loads(state.read_text())
        stop_recorded(saved["nodes"])
        state.unlink()
        print(f"stopped the Cassandra cluster at {saved['contact_points']}")
        return 0
    if state.exists():
        print(
            "a Cassandra cluster is already running; stop it with: make cassandra-cluster-down\n"
            + state.read_text()
        )
        return 0
    cluster = CassandraCluster(arguments.cache)
    try:
        cluster.start()
    except CassandraUnavailableError as exc:
        print(exc, file=sys.stderr)
        return 1
    nodes = [
        {"pid": node.process.pid, "folder": str(node.folder), "host": node.host}
        for node in cluster.nodes
        if node.process is not None
    ]
    state.write_text(
        json.dumps({"nodes": nodes, "contact_points": cluster.contact_points, "port": cluster.native_port})
    )
    print(f"3 Cassandra nodes UN after {cluster.startup_seconds:.1f}s, RSS {cluster.rss_megabytes()} MB")
    print(f"UWSGI_ES_CASSANDRA_HOSTS={cluster.contact_points} UWSGI_ES_CASSANDRA_PORT={cluster.native_port}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
