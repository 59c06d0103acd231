"""Talking to a Ray cluster's Job API (the dashboard's HTTP port, 8265 by default): address, token, errors.

    >>> client = jobs_client("http://head:8265")        # or LMPIPE_ADDRESS / RAY_ADDRESS
    >>> status = wait_for_job(client, "lmpipe-ptb-...")  # JobStatus.SUCCEEDED / FAILED / STOPPED

Why a layer over ``ray.job_submission.JobSubmissionClient``:

* **Fail in seconds.**  The SDK's requests carry no timeout, so an address that drops packets hangs for
  minutes.  ``probe`` asks ``/api/version`` with a 5 s timeout first and names the address and what to check.
* **Token authentication** (Ray >= 2.52; ``ray start`` enables it when ``RAY_AUTH_MODE=token`` or a token
  exists, ``ray.init()`` local clusters by default since 2.59).  The SDK adds the token only when this
  process itself runs with ``RAY_AUTH_MODE=token``; here the token is sent whenever one is given, in Ray's
  own order: ``RAY_AUTH_TOKEN``, the file named by ``RAY_AUTH_TOKEN_PATH``, then ``~/.ray/auth_token`` when
  ``RAY_AUTH_MODE=token``.  It travels as ``Authorization: Bearer <token>`` (what the dashboard checks).
* **Errors a user can act on**: connection, 401/403 and unknown-job failures become :class:`SubmitError`
  (``lmpipe`` exit status 2) instead of a traceback.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

logger = logging.getLogger(__name__)

DEFAULT_DASHBOARD_PORT = 8265
#: Environment variables read for the address when ``--address`` is not given, in this order.
ADDRESS_ENV = ("LMPIPE_ADDRESS", "RAY_ADDRESS")
PROBE_TIMEOUT_S = 5.0
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")

_CHECK = (
    "check that the head node is up, that its dashboard listens on that host and port "
    "(ray start --head --dashboard-host 0.0.0.0 --dashboard-port 8265; on Kubernetes: "
    "kubectl port-forward svc/<cluster>-head-svc 8265:8265), and that no firewall is in the way"
)
_TOKEN_HELP = (
    "set RAY_AUTH_TOKEN to the cluster's token (`ray get-auth-token` on the head node; KubeRay keeps it in "
    "the cluster's Secret) or RAY_AUTH_TOKEN_PATH to a file holding it"
)


class SubmitError(RuntimeError):
    """The cluster cannot be reached or refuses the request; the message names the address and the fix."""


# ------------------------------------------------------------------------------------------ address, token
def resolve_address(address: str | None, env: Mapping[str, str] = os.environ) -> str:
    """``http(s)://host:port`` of the Job API from ``--address``, ``LMPIPE_ADDRESS`` or ``RAY_ADDRESS``."""
    value = address or next((env[k] for k in ADDRESS_ENV if env.get(k)), None)
    if not value:
        raise SubmitError(
            "no cluster address: pass --address http://HEAD:8265 (the head node's dashboard) or set LMPIPE_ADDRESS"
        )
    if value in ("auto", "local") or value.startswith("ray://"):
        raise SubmitError(
            f"address {value!r} is not the Job API: jobs are submitted to the head node's dashboard, "
            "e.g. --address http://HEAD:8265 (ray:// is Ray Client, port 10001; HOST:6379 is the GCS)"
        )
    parsed = urlparse(value if "://" in value else f"http://{value}")
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise SubmitError(f"address {value!r}: expected http://HOST:PORT (the head node's dashboard, port 8265)")
    try:
        port = parsed.port or DEFAULT_DASHBOARD_PORT
    except ValueError as exc:
        raise SubmitError(f"address {value!r}: bad port ({exc})") from None
    host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
    return f"{parsed.scheme}://{host}:{port}"


def auth_token(env: Mapping[str, str] = os.environ) -> str | None:
    """The token to send, from Ray's own sources in Ray's order (see the module docstring), or None."""
    if env.get("RAY_AUTH_TOKEN", "").strip():
        return env["RAY_AUTH_TOKEN"].strip()
    path = env.get("RAY_AUTH_TOKEN_PATH")
    if path:
        try:
            token = Path(path).expanduser().read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SubmitError(f"RAY_AUTH_TOKEN_PATH={path}: cannot read the token ({exc.strerror or exc})") from None
        if not token:
            raise SubmitError(f"RAY_AUTH_TOKEN_PATH={path}: the file is empty")
        return token
    default = Path.home() / ".ray" / "auth_token"
    if env.get("RAY_AUTH_MODE", "").lower() == "token" and default.is_file():
        return default.read_text(encoding="utf-8").strip() or None
    return None


def auth_headers(env: Mapping[str, str] = os.environ) -> dict[str, str]:
    token = auth_token(env)
    return {"Authorization": f"Bearer {token}"} if token else {}


# ------------------------------------------------------------------------------------------ connecting
def probe(address: str, headers: Mapping[str, str], timeout: float = PROBE_TIMEOUT_S) -> str:
    """The cluster's Ray version from ``/api/version``, or SubmitError within ``timeout`` seconds."""
    import requests

    try:
        response = requests.get(f"{address}/api/version", headers=dict(headers), timeout=timeout)
    except requests.exceptions.RequestException as exc:
        reason = type(exc).__name__
        if isinstance(exc, requests.exceptions.ConnectTimeout | requests.exceptions.ReadTimeout):
            reason = f"no answer within {timeout:g} s"
        elif isinstance(exc, requests.exceptions.ConnectionError):
            reason = "connection refused or host unknown"
        raise SubmitError(f"cannot reach the Ray Job API at {address}: {reason}; {_CHECK}") from None
    if response.status_code in (401, 403):
        raise SubmitError(f"the Ray cluster at {address} refused the request (HTTP {response.status_code}): {_TOKEN_HELP}")
    try:
        version = response.json()["ray_version"]
    except (ValueError, KeyError, TypeError):
        version = None
    if response.status_code != 200 or not version:
        raise SubmitError(
            f"{address} answered HTTP {response.status_code} but is not a Ray dashboard: give the dashboard port "
            "(8265 by default), not the GCS (6379) or Ray Client (10001) port"
        )
    return str(version)


@contextlib.contextmanager
def translated_errors(address: str, job_id: str | None = None) -> Iterator[None]:
    """Turn the SDK's connection, authentication and not-found errors into SubmitError."""
    import requests
    from ray.exceptions import AuthenticationError

    try:
        yield
    except AuthenticationError as exc:
        raise SubmitError(f"the Ray cluster at {address} refused the token: {_TOKEN_HELP} ({str(exc).splitlines()[0]})") from None
    except (ConnectionError, requests.exceptions.ConnectionError) as exc:
        raise SubmitError(f"lost the connection to the Ray Job API at {address} ({exc}); {_CHECK}") from None
    except RuntimeError as exc:
        if job_id is not None and ("404" in str(exc) or "does not exist" in str(exc)):
            raise SubmitError(f"no job {job_id!r} on the Ray cluster at {address} (see `lmpipe jobs list`)") from None
        raise


def jobs_client(address: str | None = None, env: Mapping[str, str] = os.environ):
    """A ``JobSubmissionClient`` for the cluster, after a quick reachability and version check."""
    from ray import __version__ as local_version
    from ray.job_submission import JobSubmissionClient

    resolved = resolve_address(address, env)
    headers = auth_headers(env)
    cluster_version = probe(resolved, headers)
    if cluster_version != local_version:
        logger.warning("the cluster runs Ray %s, this machine Ray %s: keep them equal", cluster_version, local_version)
    with translated_errors(resolved):
        client = JobSubmissionClient(resolved, headers=headers)
    client.lmpipe_address = resolved  # for messages
    return client


# ------------------------------------------------------------------------------------------ following a job
def wait_for_job(
    client: Any,
    job_id: str,
    *,
    timeout: float | None = None,
    poll: float = 1.0,
    on_status: Callable[[str], None] | None = None,
) -> str:
    """Poll until the job is SUCCEEDED, FAILED or STOPPED and return that status's name; TimeoutError after
    ``timeout`` seconds (the job keeps running)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    last = None
    address = getattr(client, "lmpipe_address", "the cluster")
    while True:
        with translated_errors(address, job_id):
            status = str(client.get_job_status(job_id).value)
        if status != last and on_status is not None:
            on_status(status)
        last = status
        if status in TERMINAL:
            return status
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {status} after {timeout:g} s; it keeps running")
        time.sleep(poll)


def log_tail(client: Any, job_id: str, lines: int = 40) -> str:
    """The last ``lines`` lines of a job's log."""
    with translated_errors(getattr(client, "lmpipe_address", "the cluster"), job_id):
        text = client.get_job_logs(job_id)
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def follow_logs(client: Any, job_id: str, write: Callable[[str], Any]) -> None:
    """Stream the job's log as it is written, until the job ends (the SDK's websocket tail)."""
    import asyncio

    async def _follow() -> None:
        async for chunk in client.tail_job_logs(job_id):
            write(chunk)

    with translated_errors(getattr(client, "lmpipe_address", "the cluster"), job_id):
        asyncio.run(_follow())
