"""A real two-node Ray cluster on this machine, for the multi-node test and the cluster benchmark.

    >>> with LoopbackCluster(Path(tempfile.mkdtemp(prefix="lmp-", dir="/tmp"))) as cluster:
    ...     subprocess.run(["lmpipe", "submit", SPEC, "--wait"], env=cluster.client_env())

Two ``ray start --block`` processes: a head (GCS, dashboard with the Job API, raylet) and a second node
that joins it with a custom resource ``second_node``.  Each gets its own free ports and its own
``--temp-dir`` under ``root``, so neither ``ray.init()`` elsewhere on the machine (which looks in
``/tmp/ray``) nor another Ray instance can find or disturb them.  Token authentication is on, with a token
of its own, set only in the environments handed to the subprocesses (``env()``/``client_env()``), never
in this process's ``os.environ``.

Stopping touches only what this object started: SIGTERM to each ``ray start --block`` (which stops its
node's processes), then SIGKILL for anything left among their descendants (recorded before the
SIGTERM), their process groups, and processes whose command line names ``root``.  Never ``ray stop``,
which stops every Ray instance on the machine.

``root`` must be short: Ray puts Unix sockets under it and socket paths are limited to 107 bytes.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Ray's socket paths add ~60 bytes (session_<date>_<pid>/sockets/plasma_store) to the temp dir.
MAX_ROOT_CHARS = 40


class NodeExited(RuntimeError):
    """A ``ray start`` process ended before its node was ready (its log tail is in the message)."""


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free right now on 127.0.0.1 (all held open until all are chosen)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _children() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        out.setdefault(ppid, []).append(int(entry.name))
    return out


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat: tells a process from a later one that reused its pid."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def descendants(pid: int) -> dict[int, str | None]:
    """Every process below ``pid`` (Linux /proc), with its start time."""
    tree = _children()
    out: dict[int, str | None] = {}
    todo = list(tree.get(pid, []))
    while todo:
        child = todo.pop()
        if child not in out:
            out[child] = _start_time(child)
            todo.extend(tree.get(child, []))
    return out


def _naming(text: str) -> list[int]:
    """Pids whose command line contains ``text`` (this cluster's unique root)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if text.encode() in (entry / "cmdline").read_bytes():
                    out.append(int(entry.name))
    return out


@dataclass
class LoopbackCluster:
    """A head node and a second node on this machine; see the module docstring."""

    root: Path
    head_cpus: int = 1
    worker_cpus: int = 1
    worker_resources: dict[str, float] = field(default_factory=lambda: {"second_node": 1.0})
    object_store_mb: int = 128
    start_timeout: float = 120.0
    token: str = field(default_factory=lambda: secrets.token_hex(24))
    bin_dir: Path = field(default_factory=lambda: Path(sys.executable).parent)
    #: False: ``bin_dir`` is left off the nodes' PATH (``ray start`` still runs from it), as on a head started
    #: from a virtualenv that is not activated; a job's entrypoint must then find its interpreter itself.
    bin_dir_on_path: bool = True
    dashboard_url: str = ""
    gcs_address: str = ""
    _procs: list[subprocess.Popen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if len(str(self.root)) > MAX_ROOT_CHARS:
            raise ValueError(f"{self.root}: root longer than {MAX_ROOT_CHARS} characters; Ray's socket paths would not fit")

    # ------------------------------------------------------------------ environments
    def env(self) -> dict[str, str]:
        """The environment of this cluster's processes: its token, its binaries first on PATH (unless
        ``bin_dir_on_path`` is False: then not on it at all), no inherited cluster address or token file."""
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "LMPIPE_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
        path = [p for p in env.get("PATH", "").split(os.pathsep) if p and Path(p) != self.bin_dir]
        env.update(
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN=self.token,
            RAY_USAGE_STATS_ENABLED="0",
            # SIGTERM would otherwise drain the node for up to 30 s (Ray >= 2.5x) waiting for leases to end.
            RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",
            PATH=os.pathsep.join([str(self.bin_dir), *path] if self.bin_dir_on_path else path),
        )
        return env

    def client_env(self) -> dict[str, str]:
        """``env()`` plus ``LMPIPE_ADDRESS``: what an ``lmpipe submit`` subprocess needs."""
        return {**self.env(), "LMPIPE_ADDRESS": self.dashboard_url}

    # ------------------------------------------------------------------ lifecycle
    def _ray_start(self, name: str, args: list[str]) -> subprocess.Popen:
        temp = self.root / name
        temp.mkdir(parents=True, exist_ok=True)
        node_mgr, obj_mgr, agent, agent_grpc, rt_env, metrics = free_ports(6)
        cmd = [
            str(self.bin_dir / "ray"), "start", "--block", "--temp-dir", str(temp), "--disable-usage-stats",
            "--node-manager-port", str(node_mgr), "--object-manager-port", str(obj_mgr),
            "--dashboard-agent-listen-port", str(agent), "--dashboard-agent-grpc-port", str(agent_grpc),
            "--runtime-env-agent-port", str(rt_env), "--metrics-export-port", str(metrics),
            "--object-store-memory", str(self.object_store_mb << 20), "--num-gpus", "0", *args,
        ]  # fmt: skip
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 - the child holds it; closed in stop()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env(), start_new_session=True)
        proc.lmpipe_log = log  # type: ignore[attr-defined]
        self._procs.append(proc)
        return proc

    def _wait(self, what: str, ready: Callable[[], Any], proc: subprocess.Popen, deadline: float) -> Any:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise NodeExited(f"{what} exited with {proc.returncode}:\n{self.log_tail()}")
            value = ready()
            if value:
                return value
            time.sleep(0.5)
        raise TimeoutError(f"{what} not ready after {self.start_timeout:g} s:\n{self.log_tail()}")

    def _start_node(self, name: str, args: Callable[[], list[str]], ready: Callable[[Path], Any], deadline: float) -> Any:
        """``ray start`` one node and wait until ``ready(temp_dir)``.  A start that gives up is retried once:
        Ray waits a fixed 30 s for a new raylet to register, which a heavily loaded machine can exceed."""
        for attempt in (1, 2):
            tag = name if attempt == 1 else f"{name}-retry"
            proc = self._ray_start(tag, args())
            try:
                return self._wait(f"the {name} node", lambda tag=tag: ready(self.root / tag), proc, deadline)
            except NodeExited:
                if attempt == 2 or time.monotonic() > deadline:
                    raise
                for pid in _naming(str(self.root / tag)):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)

    def start(self) -> LoopbackCluster:
        deadline = time.monotonic() + self.start_timeout

        def head_args() -> list[str]:
            gcs, dashboard, client = free_ports(3)
            self.dashboard_url = f"http://127.0.0.1:{dashboard}"
            return [
                "--head", "--port", str(gcs), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
                "--ray-client-server-port", str(client), "--include-dashboard", "true", "--num-cpus", str(self.head_cpus),
            ]  # fmt: skip

        def head_ready(temp: Path) -> str | None:
            address = temp / "ray_current_cluster"
            if address.is_file() and self._get("/api/version") is not None:
                return address.read_text().strip()
            return None

        self.gcs_address = self._start_node("head", head_args, head_ready, deadline)
        worker_args = [
            "--address", self.gcs_address, "--num-cpus", str(self.worker_cpus),
            "--resources", json.dumps(self.worker_resources),
        ]  # fmt: skip
        self._start_node("second", lambda: worker_args, lambda _temp: len(self.nodes()) >= 2, deadline)
        return self

    def _get(self, path: str) -> Any:
        import requests

        try:
            r = requests.get(self.dashboard_url + path, headers={"Authorization": f"Bearer {self.token}"}, timeout=5)
        except requests.exceptions.RequestException:
            return None
        return r.json() if r.status_code == 200 else None

    def nodes(self) -> list[dict[str, Any]]:
        """Alive nodes from the state API: ``node_id``, ``is_head_node``, ``resources_total`` ..."""
        data = self._get("/api/v0/nodes?limit=100")
        rows = (data or {}).get("data", {}).get("result", {}).get("result", [])
        return [r for r in rows if r.get("state") == "ALIVE"]

    def stop(self) -> None:
        """Stop only this cluster's processes (see the module docstring); safe to call twice."""
        owned: dict[int, str | None] = {}
        for proc in self._procs:
            owned.update(descendants(proc.pid))
        for proc in reversed(self._procs):  # the second node first, then the head
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self._procs):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        for pid, started in owned.items():
            if started is not None and _start_time(pid) == started:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for pid in _naming(str(self.root)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for proc in self._procs:  # reaped: their pids may be reused, so no killpg here
            proc.lmpipe_log.close()  # type: ignore[attr-defined]
        self._procs.clear()

    def leftovers(self) -> list[int]:
        """Pids still naming this cluster's root (empty after ``stop``)."""
        return _naming(str(self.root))

    def log_tail(self, lines: int = 30) -> str:
        out = []
        for path in sorted(self.root.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path} ---\n" + "\n".join(text))
        return "\n".join(out)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LoopbackCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
