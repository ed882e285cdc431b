"""A real Apache Cassandra node for tests and development, without Docker or a tarball.

Cassandra 5.0 is published on Maven Central as the jar ``org.apache.cassandra:cassandra-all``;
its runtime dependencies are the jars of the server tarball's ``lib/``. ``CassandraNode.fetch()``
copies them into a cache folder with ``mvn`` (once; later runs reuse the cache), and ``start()``
runs one node on 127.0.0.1 with free ports, a small heap and JDK 17, and waits until a CQL query
answers. ``stop()`` ends it and removes its data.

    python -m uwsgi_es.testing.cassandra up      # prints host:port last (make cassandra-up)
    python -m uwsgi_es.testing.cassandra down    # (make cassandra-down)

Needs ``java`` (17+) and ``mvn`` on PATH, and cassandra-driver to check readiness.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Self

from uwsgi_es.errors import UwsgiEsError
from uwsgi_es.testing.processes import StartStop, free_port

CASSANDRA_VERSION = os.environ.get("ES_TEST_CASSANDRA_VERSION", "5.0.9")
DEFAULT_CACHE = Path(os.environ.get("ES_TEST_CASSANDRA_CACHE", Path.cwd() / ".cache" / "cassandra"))
STARTUP_TIMEOUT = 240.0

POM = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>uwsgi_es</groupId>
  <artifactId>cassandra-node</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.cassandra</groupId>
      <artifactId>cassandra-all</artifactId>
      <version>{version}</version>
    </dependency>
  </dependencies>
</project>
"""

# 5.0 key names. One token per node, fast start; durability settings are the defaults'. The
# SimpleSnitch puts every node in data centre "datacenter1" (NetworkTopologyStrategy's name for it).
CONFIG = """cluster_name: {cluster_name}
num_tokens: 1
initial_token: {initial_token}
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters: [{{seeds: "{seeds}"}}]
listen_address: {host}
rpc_address: {host}
storage_port: {storage_port}
native_transport_port: {native_port}
start_native_transport: true
auto_bootstrap: false
commitlog_sync: periodic
commitlog_sync_period: 10000ms
auto_snapshot: false
authenticator: AllowAllAuthenticator
authorizer: AllowAllAuthorizer
"""

LOGBACK = """<configuration>
  <appender name="FILE" class="ch.qos.logback.core.FileAppender">
    <file>{log}</file>
    <encoder><pattern>%-5level [%thread] %date{{ISO8601}} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="FILE"/></root>
</configuration>
"""

# From Cassandra's own conf/jvm17-server.options: the JDK-internal packages it needs opened.
JDK17_FLAGS = [
    *(
        f"--add-exports={module}=ALL-UNNAMED"
        for module in (
            "java.base/jdk.internal.misc",
            "java.rmi/sun.rmi.registry",
            "java.rmi/sun.rmi.server",
            "java.sql/java.sql",
            "java.base/java.lang.ref",
            "jdk.unsupported/sun.misc",
            "jdk.compiler/com.sun.tools.javac.file",
            "jdk.attach/sun.tools.attach",
            "java.management.rmi/com.sun.jmx.remote.internal.rmi",
        )
    ),
    *(
        f"--add-opens={module}=ALL-UNNAMED"
        for module in (
            "java.base/java.lang.module",
            "java.base/jdk.internal.loader",
            "java.base/jdk.internal.ref",
            "java.base/jdk.internal.reflect",
            "java.base/jdk.internal.math",
            "java.base/jdk.internal.module",
            "java.base/jdk.internal.util.jar",
            "jdk.management/com.sun.management.internal",
            "java.base/sun.nio.ch",
            "java.base/java.io",
            "java.base/java.lang.reflect",
            "jdk.compiler/com.sun.tools.javac",
            "java.base/java.lang",
            "java.base/java.util",
            "java.base/java.nio",
        )
    ),
]


class CassandraUnavailableError(UwsgiEsError, RuntimeError):
    """The node could not be fetched, started or reached; the message ends with its log."""


class CassandraNode(StartStop):
    """One Cassandra node on 127.0.0.1 and free ports, its data in a temporary folder."""

    def __init__(
        self,
        cache: Path = DEFAULT_CACHE,
        *,
        version: str = CASSANDRA_VERSION,
        heap: str = "1G",
        host: str = "127.0.0.1",
        native_port: int = 0,
        storage_port: int = 0,
        seeds: str | None = None,
        initial_token: str = "0",  # noqa: S107 (a ring position, not a password)
        jmx_port: int = 0,
        cluster_name: str = "uwsgi_es_test",
        unsafe_system: bool = True,
    ) -> None:
        """One node, alone by default; a member of a cluster when given its ``host`` (a loopback
        address), the cluster's ports and ``seeds``, and a token of its own. ``jmx_port``: JMX on
        127.0.0.1 for nodetool (off when 0). ``unsafe_system``: the system tables are not synced
        (a faster start); a node that will be SIGKILLed and restarted needs them synced."""
        self.cache = cache
        self.version = version
        self.heap = heap
        self.lib = cache / f"cassandra-{version}" / "lib"
        self.host = host
        self.native_port = native_port
        self.storage_port = storage_port
        self.seeds = seeds
        self.initial_token = initial_token
        self.jmx_port = jmx_port
        self.cluster_name = cluster_name
        self.unsafe_system = unsafe_system
        self.folder: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_seconds = 0.0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.native_port}"

    @property
    def log_path(self) -> Path:
        if self.folder is None:
            raise CassandraUnavailableError("the node was never started")
        return self.folder / "system.log"

    def log(self) -> str:
        parts = []
        with contextlib.suppress(CassandraUnavailableError, FileNotFoundError):
            parts.append(self.log_path.read_text(errors="replace"))
        with contextlib.suppress(CassandraUnavailableError, FileNotFoundError):
            parts.append((self.log_path.parent / "stdout.log").read_text(errors="replace"))
        return "\n".join(parts)

    def fetch(self) -> None:
        """Copy cassandra-all and its runtime dependencies from Maven Central (once)."""
        if any(self.lib.glob(f"cassandra-all-{self.version}.jar")):
            return
        mvn = shutil.which("mvn")
        if mvn is None:
            raise CassandraUnavailableError("mvn is not installed: apt-get install maven (and a JDK 17)")
        work = self.lib.parent
        work.mkdir(parents=True, exist_ok=True)
        (work / "pom.xml").write_text(POM.format(version=self.version))
        partial = work / "lib.partial"
        shutil.rmtree(partial, ignore_errors=True)
        command = [
            mvn,
            "-B",
            "-q",
            "org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={partial}",
        ]
        result = subprocess.run(command, cwd=work, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise CassandraUnavailableError(
                f"mvn could not fetch Cassandra {self.version}:\n{result.stdout}{result.stderr}"
            )
        partial.rename(self.lib)  # only a complete download counts as cached

    def command(self) -> list[str]:
        assert self.folder is not None
        java = shutil.which("java") or "java"
        jamm = sorted(self.lib.glob("jamm-*.jar"))
        return [
            java,
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            "-XX:+ExitOnOutOfMemoryError",
            *JDK17_FLAGS,
            "-Djdk.attach.allowAttachSelf=true",
            "-Dio.netty.tryReflectionSetAccessible=true",
            *([f"-javaagent:{jamm[-1]}"] if jamm else []),
            f"-Dcassandra.config=file://{self.folder / 'cassandra.yaml'}",
            f"-Dcassandra.storagedir={self.folder / 'data'}",
            f"-Dlogback.configurationFile=file://{self.folder / 'logback.xml'}",
            "-Dcassandra-foreground=yes",
            "-Dcassandra.skip_wait_for_gossip_to_settle=0",
            "-Dcassandra.ring_delay_ms=1000",
            *(["-Dcassandra.unsafesystem=true"] if self.unsafe_system else []),
            "-Dcassandra.superuser_setup_delay_ms=0",
            *([f"-Dcassandra.jmx.local.port={self.jmx_port}"] if self.jmx_port else []),
            "-cp",
            f"{self.lib}/*",
            "org.apache.cassandra.service.CassandraDaemon",
        ]

    def start(self) -> Self:
        self.fetch()
        self.native_port = self.native_port or free_port()
        self.storage_port = self.storage_port or free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="uwsgi_es-cassandra-"))
        config = CONFIG.format(
            cluster_name=self.cluster_name,
            initial_token=self.initial_token,
            seeds=self.seeds or f"{self.host}:{self.storage_port}",
            host=self.host,
            storage_port=self.storage_port,
            native_port=self.native_port,
        )
        (self.folder / "cassandra.yaml").write_text(config)
        (self.folder / "logback.xml").write_text(LOGBACK.format(log=self.log_path))
        try:
            self.start_process()
        except BaseException:
            self.stop()
            raise
        return self

    def start_process(self) -> None:
        """Start the node (again, after ``stop_process``: same data, same ports) and wait for CQL."""
        if self.folder is None:
            raise CassandraUnavailableError("start() the node first")
        started = time.monotonic()
        with open(self.folder / "stdout.log", "ab") as out:
            self.process = subprocess.Popen(
                self.command(),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.wait_until_answering()
        self.startup_seconds = time.monotonic() - started

    def wait_until_answering(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Until a CQL query answers (an open port is not enough)."""
        from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile  # readiness only
        from cassandra.policies import WhiteListRoundRobinPolicy

        deadline = time.monotonic() + timeout
        problem = "not started"
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise CassandraUnavailableError(
                    f"Cassandra exited with code {self.process.returncode}\n--- log ---\n{self.log()[-6000:]}"
                )
            this_node = ExecutionProfile(load_balancing_policy=WhiteListRoundRobinPolicy([self.host]))
            cluster = Cluster(
                [self.host],
                port=self.native_port,
                protocol_version=5,
                connect_timeout=2,
                execution_profiles={EXEC_PROFILE_DEFAULT: this_node},  # this node, no other
            )
            try:
                session = cluster.connect()
                session.execute("SELECT release_version FROM system.local")
                return
            except Exception as exc:  # NoHostAvailable, timeouts, refused: keep waiting
                problem = f"{type(exc).__name__}: {exc}"
            finally:
                cluster.shutdown()
            time.sleep(1.0)
        raise CassandraUnavailableError(
            f"Cassandra did not answer CQL within {timeout}s ({problem})\n--- log ---\n{self.log()[-6000:]}"
        )

    def send_signal(self, number: signal.Signals) -> None:
        """Send a signal to the node's process group: SIGKILL (a crash), SIGSTOP / SIGCONT (a
        node that hangs, then goes on)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, number)
        if number == signal.SIGKILL and self.process is not None:
            self.process.wait()

    def stop_process(self) -> None:
        """Stop the node (SIGTERM, then SIGKILL) and keep its data."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def stop(self) -> None:
        """Stop the node and delete its data. Idempotent."""
        self.stop_process()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


def stop_recorded(nodes: list[dict[str, object]]) -> None:
    """Stop nodes an earlier ``up`` left running (their ``pid`` and data ``folder``): SIGTERM, up
    to 30 s, then SIGKILL; their data removed."""
    pids = [int(str(node["pid"])) for node in nodes]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
        time.sleep(0.2)
    for node, pid in zip(nodes, pids, strict=True):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        shutil.rmtree(str(node["folder"]), ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """``up``: start a node that outlives this command (state in the cache); ``down``: stop it."""
    parser = argparse.ArgumentParser(prog="python -m uwsgi_es.testing.cassandra")
    parser.add_argument("action", choices=["up", "down", "fetch"])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    arguments = parser.parse_args(argv)
    state = arguments.cache / "node.json"
    node = CassandraNode(arguments.cache)
    if arguments.action == "fetch":
        node.fetch()
        print(node.lib)
        return 0
    if arguments.action == "down":
        if not state.exists():
            print("no Cassandra node is running (nothing to stop)")
            return 0
        saved = json.loads(state.read_text())
        stop_recorded([saved])
        state.unlink()
        print(f"stopped the Cassandra node at {saved['address']}")
        return 0
    if state.exists():
        saved = json.loads(state.read_text())
        if Path(f"/proc/{saved['pid']}").exists():
            print(
                f"a Cassandra node is already running; stop it with: make cassandra-down\n{saved['address']}"
            )
            return 0
        state.unlink()
    try:
        node.start()
    except CassandraUnavailableError as exc:
        print(exc, file=sys.stderr)
        return 1
    if node.process is None or node.folder is None:  # pragma: no cover - start() sets both
        return 1
    state.write_text(
        json.dumps({"pid": node.process.pid, "folder": str(node.folder), "address": node.address})
    )
    print(f"Cassandra {node.version} answered CQL after {node.startup_seconds:.1f}s; log: {node.log_path}")
    print(node.address)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
