"""``lmpipe submit`` and ``lmpipe jobs``: pipelines as Ray jobs on a cluster.

    lmpipe submit SPEC [--address http://HEAD:8265] [--run-dir DIR] [--wait] [--set k=v ...] [--pip] [--env K=V]
                  [--python PATH]
    lmpipe jobs list|status|logs|stop [JOB] [--address http://HEAD:8265]

``--address`` defaults to ``LMPIPE_ADDRESS``, then ``RAY_ADDRESS``.  Exit status: 0 on success; 2 when the
cluster cannot be reached, refuses the token, does not know the job, or the spec or run directory is bad
(all before a job is created); 1 when a waited-for job fails or is stopped (the tail of its log is printed).
The spec is read by the run layer (``lmpipe.pipelines.cli`` passes its ``submit`` command in), which hands
:func:`submit_spec` a resolved :class:`~lmpipe.cluster.submit.ShippedSpec`: this floor reads no spec.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lmpipe.cluster.submit import ShippedSpec


def _address(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--address", help="the head node's Job API, http://HEAD:8265 (default: LMPIPE_ADDRESS, then RAY_ADDRESS)"
    )


def _finish(client, job_id: str, *, timeout: float | None, tail: int) -> int:
    from lmpipe.cluster.jobs import log_tail, translated_errors, wait_for_job

    try:
        status = wait_for_job(client, job_id, timeout=timeout, on_status=lambda s: print(f"job {job_id}: {s}", flush=True))
    except TimeoutError as exc:
        print(f"lmpipe: {exc}; follow it with `lmpipe jobs logs {job_id} --follow`", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"lmpipe: stopped waiting; the job keeps running (lmpipe jobs stop {job_id})", file=sys.stderr)
        return 130
    if status == "SUCCEEDED":
        print(log_tail(client, job_id, lines=tail))
        return 0
    with translated_errors(client.lmpipe_address, job_id):
        info = client.get_job_info(job_id)
    print(f"lmpipe: job {job_id} {status}: {info.message or ''}".rstrip(), file=sys.stderr)
    print(f"--- last {tail} lines of its log ---", file=sys.stderr)
    print(log_tail(client, job_id, lines=tail), file=sys.stderr)
    return 1


def submit_spec(args: argparse.Namespace, spec: ShippedSpec, *, version: str) -> int:
    """``lmpipe submit`` once the CLI has validated and resolved the spec (cluster/ reads no spec)."""
    from lmpipe.cluster.jobs import jobs_client
    from lmpipe.cluster.submit import describe, plan_job, submit

    client = jobs_client(args.address)  # unreachable: exit 2 before anything is staged
    plan = plan_job(
        spec, version=version, run_dir=args.run_dir, stages=args.stages, force=args.force,
        pip=args.pip, env_vars=args.env, excludes=args.exclude, python=args.python,
    )  # fmt: skip
    for line in describe(plan):
        print(line)
    job_id = submit(client, plan)
    print(f"submitted {job_id} to {client.lmpipe_address}", flush=True)
    if not args.wait:
        print(f"follow it: lmpipe jobs logs {job_id} --follow --address {client.lmpipe_address}")
        return 0
    return _finish(client, job_id, timeout=args.timeout, tail=args.tail)


def cmd_jobs_list(args: argparse.Namespace) -> int:
    from lmpipe.cluster.jobs import jobs_client, translated_errors

    client = jobs_client(args.address)
    with translated_errors(client.lmpipe_address):
        jobs = client.list_jobs()
    jobs.sort(key=lambda j: j.start_time or 0)
    print(f"{'JOB':<44} {'STATUS':<10} {'STARTED':<19} RUN DIRECTORY / ENTRYPOINT")
    for job in jobs:
        started = datetime.fromtimestamp(job.start_time / 1000).strftime("%Y-%m-%d %H:%M:%S") if job.start_time else "-"
        where = (job.metadata or {}).get("lmpipe_run_dir") or job.entrypoint
        print(f"{job.submission_id or job.job_id or '-':<44} {job.status.value:<10} {started:<19} {where}")
    return 0


def cmd_jobs_status(args: argparse.Namespace) -> int:
    from lmpipe.cluster.jobs import jobs_client, translated_errors

    client = jobs_client(args.address)
    with translated_errors(client.lmpipe_address, args.job):
        info = client.get_job_info(args.job)
    print(f"{args.job}: {info.status.value}")
    if info.message:
        print(f"  {info.message}")
    for key, value in sorted((info.metadata or {}).items()):
        print(f"  {key}: {value}")
    print(f"  entrypoint: {info.entrypoint}")
    return 0


def cmd_jobs_logs(args: argparse.Namespace) -> int:
    from lmpipe.cluster.jobs import follow_logs, jobs_client, log_tail

    client = jobs_client(args.address)
    if args.follow:
        follow_logs(client, args.job, lambda chunk: print(chunk, end="", flush=True))
    else:
        print(log_tail(client, args.job, lines=args.tail))
    return 0


def cmd_jobs_stop(args: argparse.Namespace) -> int:
    from lmpipe.cluster.jobs import jobs_client, translated_errors, wait_for_job

    client = jobs_client(args.address)
    with translated_errors(client.lmpipe_address, args.job):
        stopped = client.stop_job(args.job)
    if not stopped:
        with translated_errors(client.lmpipe_address, args.job):
            print(f"{args.job}: already finished ({client.get_job_status(args.job).value})")
        return 0
    print(f"{args.job}: stop requested")
    if args.wait:
        print(f"{args.job}: {wait_for_job(client, args.job, timeout=60)}")
    return 0


def add_cluster_commands(sub: argparse._SubParsersAction, *, submit_command: Callable[[argparse.Namespace], int]) -> None:
    """``submit`` and ``jobs``; ``submit_command`` is the CLI's: it reads the spec and calls :func:`submit_spec`."""
    submit = sub.add_parser("submit", help="run a spec on a Ray cluster as a Ray job (lmpipe run is the driver)")
    submit.add_argument("spec", help="pipeline YAML; validated here before the job is created")
    _address(submit)
    submit.add_argument(
        "--run-dir", help="run directory on storage every node mounts at the same path (default: ./runs/<name>, "
        "made absolute); file:// URIs are local paths, s3:// gs:// hdfs:// are refused (mount them)",
    )  # fmt: skip
    submit.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", help="override a spec value (YAML)")
    submit.add_argument("--stages", help="comma-separated stages to run (default: the spec's `stages`)")
    submit.add_argument("--force", help="comma-separated stages to recompute even if up to date")
    submit.add_argument("--wait", action="store_true", help="wait for the job; exit 1 with its log's tail if it fails")
    submit.add_argument("--timeout", type=float, help="with --wait: give up waiting after this many seconds")
    submit.add_argument("--tail", type=int, default=40, help="log lines printed when the job ends (default 40)")
    pip = submit.add_mutually_exclusive_group()
    pip.add_argument("--pip", dest="pip", action="store_true", help="install lmpipe's requirements in the job (needs an index)")
    pip.add_argument("--no-pip", dest="pip", action="store_false", help="use the cluster image's packages (default)")
    submit.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="environment variable for the job")
    submit.add_argument("--exclude", action="append", default=[], metavar="GLOB", help="file or folder names not to ship")
    submit.add_argument(
        "--python", metavar="PATH", help="the head's interpreter for the job's driver (default: the first of this "
        "process's interpreter, python3 and python on the head that imports ray and finds lmpipe)",
    )  # fmt: skip
    submit.set_defaults(func=submit_command, pip=False)

    jobs = sub.add_parser("jobs", help="list, inspect, follow and stop Ray jobs")
    jobs_sub = jobs.add_subparsers(dest="jobs_command", required=True)
    listing = jobs_sub.add_parser("list", help="every job of the cluster")
    _address(listing)
    listing.set_defaults(func=cmd_jobs_list)
    status = jobs_sub.add_parser("status", help="a job's status, message and metadata")
    status.add_argument("job", help="job id (see `lmpipe jobs list`)")
    _address(status)
    status.set_defaults(func=cmd_jobs_status)
    logs = jobs_sub.add_parser("logs", help="a job's log (the tail, or --follow)")
    logs.add_argument("job", help="job id (see `lmpipe jobs list`)")
    _address(logs)
    logs.add_argument("--follow", action="store_true", help="stream the log until the job ends")
    logs.add_argument("--tail", type=int, default=100000, help="print only the last N lines")
    logs.set_defaults(func=cmd_jobs_logs)
    stop = jobs_sub.add_parser("stop", help="stop a running job")
    stop.add_argument("job", help="job id (see `lmpipe jobs list`)")
    _address(stop)
    stop.add_argument("--wait", action="store_true", help="wait until it has stopped")
    stop.set_defaults(func=cmd_jobs_stop)
