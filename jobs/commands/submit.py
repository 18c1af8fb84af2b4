"""`anonvid submit JOB --config FILE`: run a job on a running Ray cluster through the Ray Jobs API.

The submission id is a function of the job, its resolved config and --run-key, so submitting the same scheduled run
twice (a CronJob pod retried, an operator pressing enter twice) finds the first submission instead of starting a
second run. The config is checked and resolved here (`${VAR}` references from this process's environment) and
travels with the job as its working directory, so the cluster runs exactly what was checked.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import sys
import tempfile
import time

from . import add_command

EXAMPLES = """examples:
  kubectl -n anonvid port-forward svc/anonvid-head-svc 8265:8265 &
  anonvid submit anonymize --address http://127.0.0.1:8265 --config jobs/configs/anonymize_gpu_vitb.yaml \\
      --run-key 2026-11-22T10 --wait
  anonvid submit train pruner --config jobs/configs/train_pruner_gpu_vitb.yaml epochs=20
  anonvid submit anonymize --config cfg.yaml --run-key nightly-1 --dry-run     # print the id and entrypoint only

Submitting the same job, config and --run-key again is a no-op that reports the first submission's status (with
--wait it waits for that one). --resubmit replaces a FAILED or STOPPED submission of the same id.
Exit code: 0 submitted (with --wait: the job SUCCEEDED); 1 the job FAILED or was STOPPED; 2 the job could not be
submitted (config, address; the message names the fix); 3 --timeout passed while waiting.
"""
TERMINAL = {"SUCCEEDED": 0, "FAILED": 1, "STOPPED": 1}
CONFIG_NAME = "anonvid-job.yaml"


def add_parser(sub, name: str) -> None:
    p = add_command(sub, name, "submit a job to a running Ray cluster (Ray Jobs API)", EXAMPLES)
    p.add_argument("words", nargs="+", metavar="JOB [key=value ...]",
                   help="anonymize | train encoder|pruner|aam | evaluate | benchmark, then config overrides")
    p.add_argument("--config", required=True, help="the job's YAML config (checked and resolved here)")
    p.add_argument("--address", help="Ray dashboard URL (default: RAY_ADDRESS, else http://127.0.0.1:8265)")
    p.add_argument("--run-key", default="",
                   help="names the scheduled run, e.g. the CronJob's job name: the same key is the same submission")
    p.add_argument("--wait", action="store_true", help="wait for the job and exit with its status")
    p.add_argument("--timeout", type=float, default=0, help="with --wait: give up waiting after this many seconds")
    p.add_argument("--resubmit", action="store_true", help="replace a FAILED/STOPPED submission of the same id")
    p.add_argument("--dry-run", action="store_true", help="print the submission id, entrypoint and config only")
    p.set_defaults(run=run, job_config=job_config, overrides=[])


def split_words(words: list[str]) -> tuple[str, list[str]]:
    """['train', 'pruner', 'lr=1e-3'] -> ('train pruner', ['lr=1e-3'])."""
    from ..config import ConfigError
    from ..jobconfigs import job_names

    n = 2 if words[0] == "train" else 1
    job, rest = " ".join(words[:n]), words[n:]
    problems = [] if job in job_names() else [f"unknown job {job!r}: one of {', '.join(job_names())}"]
    problems += [f"{w!r}: expected key=value (job flags go into the config or overrides)" for w in rest if "=" not in w]
    if problems:
        raise ConfigError(problems)
    return job, rest


def job_config(args: argparse.Namespace) -> tuple[str, str | None, list[str]]:
    job, overrides = split_words(args.words)
    return job, args.config, [*overrides, *args.overrides]


def submission_id(job: str, config_yaml: str, run_key: str) -> str:
    digest = hashlib.sha256("\n".join([job, config_yaml, run_key]).encode()).hexdigest()[:16]
    return f"anonvid-{job.replace(' ', '-')}-{digest}"


def run(args: argparse.Namespace) -> int:
    from ..config import ConfigError, dump_config
    from ..jobconfigs import load_or_report, relative_paths

    prog = "anonvid submit"
    try:
        job, path, overrides = job_config(args)
    except ConfigError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    cfg = load_or_report(prog, job, path, overrides)
    if cfg is None:
        return 2
    relative = relative_paths(job, cfg)
    if relative:
        print(f"{prog}: a submitted job runs in its own working directory on the cluster, where relative paths mean "
              "nothing: give absolute paths (on storage the cluster mounts) or URIs (s3://...):\n  - "
              + "\n  - ".join(relative), file=sys.stderr)  # fmt: skip
        return 2
    sid = submission_id(job, dump_config(cfg), args.run_key)
    if job == "anonymize" and cfg.run_id is None:
        cfg.run_id = sid  # the output's run record then carries the submission's name
    entrypoint = f"anonvid {job} --config {CONFIG_NAME}"
    address = args.address or os.environ.get("RAY_ADDRESS") or "http://127.0.0.1:8265"
    if args.dry_run:
        print(f"submission id: {sid}\naddress: {address}\nentrypoint: {entrypoint}\n--- {CONFIG_NAME}")
        print(dump_config(cfg), end="")
        return 0
    client = _client(address, prog)
    if client is None:
        return 2
    with tempfile.TemporaryDirectory(prefix="anonvid-submit-") as workdir:
        with open(os.path.join(workdir, CONFIG_NAME), "w", encoding="utf-8") as f:
            f.write(f"# submitted as {sid}: {entrypoint}\n{dump_config(cfg)}")
        status = _submit(client, sid, entrypoint, workdir, job, args, prog)
    if status is None:
        return 2
    print(f"follow it:\n  ray job status {sid} --address {address}\n  ray job logs {sid} --address {address} --follow"
          f"\n  ray job stop {sid} --address {address}")  # fmt: skip
    if job == "anonymize":
        print(f"  anonvid runs {cfg.output}")
    if not args.wait:
        return 0
    return _wait(client, sid, args.timeout)


def _client(address: str, prog: str):
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except AuthenticationError as e:  # reached, but the cluster wants a token (Ray 2.60 `ray start` turns that on)
        print(f"{prog}: the Ray dashboard at {address} refused the request ({str(e).splitlines()[0]}): set "
              "RAY_AUTH_MODE=token and the cluster's token in RAY_AUTH_TOKEN (or in a file: RAY_AUTH_TOKEN_PATH, "
              "default ~/.ray/auth_token)", file=sys.stderr)  # fmt: skip
        return None
    except Exception as e:  # ConnectionError, or a RuntimeError wrapping it
        print(f"{prog}: cannot reach the Ray dashboard at {address} ({type(e).__name__}: {str(e).splitlines()[0]}); "
              "give --address http://HEAD:8265 (or RAY_ADDRESS), e.g. after `kubectl port-forward "
              "svc/anonvid-head-svc 8265:8265`", file=sys.stderr)  # fmt: skip
        return None


def _existing(client, sid: str):
    try:
        return client.get_job_info(sid)
    except RuntimeError as e:
        if "404" in str(e):
            return None
        raise


def _submit(client, sid: str, entrypoint: str, workdir: str, job: str, args, prog: str) -> str | None:
    """Submit unless this id exists; -> the submission's status ('PENDING' for a new one), None on failure."""
    info = _existing(client, sid)
    if info is not None and args.resubmit and str(info.status) in ("FAILED", "STOPPED"):
        print(f"{sid} {info.status}: --resubmit replaces it")
        client.delete_job(sid)
        info = None
    if info is not None:
        print(f"{sid} was already submitted ({info.status}): not submitting it again")
        return str(info.status)
    try:
        client.submit_job(
            entrypoint=entrypoint,
            submission_id=sid,
            runtime_env={"working_dir": workdir},
            metadata={"anonvid_job": job, "run_key": args.run_key, "config": args.config},
        )
    except RuntimeError as e:
        if "already exists" in str(e):  # another submitter won the race for this id: the same run, once
            info = _existing(client, sid)
            print(f"{sid} was submitted by another process just now ({info.status if info else '?'})")
            return str(info.status) if info else "PENDING"
        print(f"{prog}: the cluster refused the job: {e}", file=sys.stderr)
        return None
    print(f"submitted {sid}: {entrypoint}  (args: {shlex.join(args.words)})")
    return "PENDING"


def _wait(client, sid: str, timeout: float) -> int:
    t0, last = time.monotonic(), None
    while True:
        status = str(client.get_job_status(sid))
        if status != last:
            print(f"{sid}: {status}", flush=True)
            last = status
        if status in TERMINAL:
            logs = client.get_job_logs(sid).rstrip().splitlines()
            print("--- last lines of the job's log\n" + "\n".join(logs[-25:]))
            return TERMINAL[status]
        if timeout and time.monotonic() - t0 > timeout:
            print(f"{sid}: still {status} after {timeout:.0f} s; it keeps running (ray job stop to end it)")
            return 3
        time.sleep(2)
