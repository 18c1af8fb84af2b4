"""The anonymize job with its videos, models and output on S3 (a moto server), run in-process on the shared Ray.

What a user on a cloud archive runs: `anonvid anonymize s3://.../videos/ --out s3://.../run --encoder s3://...`.
Every reader (s3fs + pyarrow, Ray Data's own S3 client) must find each video exactly once, with its commit marker,
and a re-run must find nothing left to do.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from jobs.cli import main

pytestmark = pytest.mark.slow  # each anonymize run is a Ray Data pipeline: 20-40 s on 2 CPUs

ROOT = Path(__file__).resolve().parents[1]
# Fake, but each one distinctive enough that a match can only be a leak (moto accepts any credentials).
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "AKIAANONVIDLEAKTEST7",
    "AWS_SECRET_ACCESS_KEY": "anonvid-leak-test-secret-Zq8wR1xK",
    "AWS_SESSION_TOKEN": "anonvid-leak-test-token-Hn4vT2pL",
}


def fresh_fs():
    """A client with no listing cache: the job's Ray workers write behind the test process's back."""
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False)


def upload_dir(fs, local, remote: str) -> list[str]:
    """Every file under `local` to `remote`/<relative path>; returns the s3:// URIs."""
    uris = []
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        uri = f"{remote.rstrip('/')}/{path.relative_to(local).as_posix()}"
        fs.put_file(str(path), uri)
        uris.append(uri)
    return uris


@pytest.fixture(scope="module")
def s3_data(s3_endpoint, small_corpus, tiny_models):
    """in-bucket/videos/ (the small corpus), models/<kind>/ (the tiny bundles) and an empty out-bucket."""
    fs = fresh_fs()
    for bucket in ("in-bucket", "models", "out-bucket"):
        if not fs.exists(bucket):
            fs.mkdir(bucket)
    videos = upload_dir(fs, small_corpus / "videos", "s3://in-bucket/videos")
    models = {}
    for kind, path in tiny_models.items():
        upload_dir(fs, Path(path), f"s3://models/{kind}")
        models[kind] = f"s3://models/{kind}"
    assert len(videos) == 12
    return {"endpoint": s3_endpoint, "videos": videos, "models": models}


def anonymize(capsys, source: list[str], out: str, models: dict, *extra: str) -> tuple[int, dict]:
    """`anonvid anonymize` in-process (it joins the session's Ray); returns the exit code and the JSON summary."""
    capsys.readouterr()
    argv = ["anonymize", *source, "--out", out, "--json", "--rows-per-shard", "4", "--batch-size", "4", *extra]
    argv += [f"--{kind}={uri}" for kind, uri in models.items()]
    stdout = sys.stdout
    rc = main(argv)
    sys.stdout = stdout  # --json leaves the rest of the process's stdout on stderr; the next call needs it back
    captured = capsys.readouterr()
    return rc, json_summary(rc, captured.out, captured.err)


def json_summary(rc: int, out: str, err: str) -> dict:
    start = re.search(r"^\{$", out, re.MULTILINE)  # the summary starts on a line of its own
    assert start, f"no JSON summary (exit {rc}); stderr:\n{err[-4000:]}"
    return json.JSONDecoder().raw_decode(out, start.start())[0]


def read_features_s3(fs, prefix: str) -> pd.DataFrame:
    return pq.read_table(f"{prefix}/features", filesystem=fs).to_pandas()


def commits_s3(fs, prefix: str) -> dict[str, dict]:
    names = [p for p in fs.ls(f"{prefix}/_commits", detail=False) if p.endswith(".json")]
    return {p.rsplit("/", 1)[1][: -len(".json")]: json.loads(fs.cat_file(p)) for p in names}


@pytest.mark.timeout(420)
def test_s3_input_models_and_output_every_video_exactly_once(ray_session, s3_data, capsys):
    videos, models = s3_data["videos"], s3_data["models"]
    out = "s3://out-bucket/run"
    rc, summary = anonymize(capsys, ["s3://in-bucket/videos/"], out, models, "--s3-endpoint", s3_data["endpoint"])
    assert rc == 0, summary
    assert (summary["videos_listed"], summary["videos_ok"], summary["videos_failed"]) == (12, 12, 0)
    assert summary["videos_incomplete"] == 0 and summary["ok"]
    assert {i["uri"] for i in summary["models"].values()} == set(models.values())

    fs = fresh_fs()
    prefix = "out-bucket/run"
    feats = read_features_s3(fs, prefix)
    assert sorted(feats["source_uri"].unique()) == videos  # every uploaded video, by its s3:// URI
    assert not feats.duplicated(["video_id", "clip_index"]).any()
    assert len(feats) == 12  # 32 frames at 16x2: one clip per video
    assert feats.groupby("video_id")["source_uri"].nunique().eq(1).all()
    assert len(feats["features"].iloc[0]) == 192 and (feats["mode"] == "prune+aam").all()

    # Ray Data's own reader (pyarrow's S3 client, endpoint from AWS_ENDPOINT_URL) sees the same rows
    import ray.data

    via_ray = ray.data.read_parquet(f"{out}/features").to_pandas()
    key = ["video_id", "clip_index"]
    assert sorted(map(tuple, via_ray[key].values.tolist())) == sorted(map(tuple, feats[key].values.tolist()))

    # one commit marker per video, naming a shard that holds exactly that video's rows
    commits = commits_s3(fs, prefix)
    assert set(commits) == set(feats["video_id"])
    shard_files = {p.rsplit("/", 1)[1] for p in fs.ls(f"{prefix}/features", detail=False)}
    for vid, rec in commits.items():
        assert rec["status"] == "ok" and rec["rows"] == 1 and rec["run_id"] == summary["run_id"]
        assert f"part-{rec['shard']}.parquet" in shard_files
        shard = pq.read_table(io.BytesIO(fs.cat_file(f"{prefix}/features/part-{rec['shard']}.parquet")))
        assert shard.column("video_id").to_pylist().count(vid) == 1
    recorded = {p.rsplit("/", 1)[1][: -len(".json")] for p in fs.ls(f"{prefix}/_shards", detail=False)}
    assert {f[len("part-") : -len(".parquet")] for f in shard_files} <= recorded  # no unrecorded (orphan) shard
    assert len(shard_files) >= 2  # --rows-per-shard 4 --batch-size 4: the 12 videos went out in several shards
    assert json.loads(fs.cat_file(f"{prefix}/_output.json"))["config_hash"] == feats["config_hash"].iloc[0]
    assert fs.exists(f"{prefix}/_runs/{summary['run_id']}.json")

    # the same command again: everything is committed, nothing is processed or written twice
    rc, again = anonymize(capsys, ["s3://in-bucket/videos/"], out, models, "--s3-endpoint", s3_data["endpoint"])
    assert rc == 0, again
    assert (again["videos_ok"], again["videos_failed"], again["videos_skipped_committed"]) == (0, 0, 12)
    assert len(read_features_s3(fresh_fs(), prefix)) == 12
    assert len(fresh_fs().ls(f"{prefix}/_runs", detail=False)) == 2


@pytest.mark.timeout(420)
def test_s3_manifest_to_local_output(ray_session, s3_data, capsys, tmp_path):
    """A CSV manifest on S3 listing s3:// URIs (one of them missing), written to a local folder."""
    fs = fresh_fs()
    videos = s3_data["videos"][:6]
    missing = "s3://in-bucket/videos/not-there.mp4"
    manifest = pd.DataFrame({"uri": [*videos, missing], "split": ["train"] * 3 + ["test"] * 4})
    fs.pipe_file("in-bucket/manifests/six.csv", manifest.to_csv(index=False).encode())

    out = tmp_path / "out"
    rc, summary = anonymize(
        capsys, ["--manifest", "s3://in-bucket/manifests/six.csv"], str(out), s3_data["models"],
        "--max-failed-fraction", "0.2", "--label-column", "split",
    )  # fmt: skip
    assert rc == 0, summary
    assert (summary["videos_listed"], summary["videos_ok"], summary["videos_failed"]) == (7, 6, 1)
    assert summary["errors_by_type"] == {"not_found": 1}

    feats = pd.read_parquet(out / "features")
    assert sorted(feats["source_uri"]) == videos  # one clip each, every s3:// URI once
    labels = feats.set_index("source_uri")["labels"].map(json.loads)  # the column named, and no other
    assert [labels[u] for u in videos] == [{"split": "train"}] * 3 + [{"split": "test"}] * 3
    errors = pd.read_parquet(out / "errors")
    assert errors["uri"].tolist() == [missing] and errors["error_type"].tolist() == ["not_found"]
    commits = {p.stem: json.loads(p.read_text()) for p in (out / "_commits").glob("*.json")}
    assert len(commits) == 7
    assert sorted(c["status"] for c in commits.values()) == ["failed"] + ["ok"] * 6
    assert set(feats["video_id"]) | set(errors["video_id"]) == set(commits)


@pytest.mark.timeout(420)
def test_s3_incremental_run_processes_only_the_new_videos(ray_session, s3_data, capsys):
    """Videos added under the prefix after a run: the next run does them, and only them, and says it finished."""
    fs = fresh_fs()
    first, later = s3_data["videos"][:5], s3_data["videos"][5:8]
    for uri in first:
        fs.copy(uri, uri.replace("/videos/", "/incremental/"))
    src, out = "s3://in-bucket/incremental/", "s3://out-bucket/incremental"
    rc, summary = anonymize(capsys, [src], out, s3_data["models"])
    assert rc == 0 and summary["videos_ok"] == 5, summary

    for uri in later:
        fs.copy(uri, uri.replace("/videos/", "/incremental/"))
    rc, summary = anonymize(capsys, [src], out, s3_data["models"])
    assert (summary["videos_listed"], summary["videos_skipped_committed"], summary["videos_ok"]) == (8, 5, 3)
    assert summary["videos_incomplete"] == 0, summary.get("incomplete_sample")
    assert rc == 0

    # and once more in this same (long-lived) driver process: nothing left, nothing done twice
    rc, summary = anonymize(capsys, [src], out, s3_data["models"])
    assert rc == 0 and (summary["videos_skipped_committed"], summary["videos_ok"]) == (8, 0)
    feats = read_features_s3(fresh_fs(), "out-bucket/incremental")
    assert sorted(feats["source_uri"]) == sorted(u.replace("/videos/", "/incremental/") for u in first + later)
    assert len(commits_s3(fresh_fs(), "out-bucket/incremental")) == 8


def files_holding(root: str, secrets: list[str]) -> dict[str, list[str]]:
    """Every regular file under `root` (links not followed: Ray's session_latest) -> the secrets found in it."""
    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            try:
                if not stat.S_ISREG(os.lstat(path).st_mode):
                    continue  # Ray's sockets
                data = Path(path).read_bytes()
            except OSError:  # a file Ray removed while we walked
                continue
            hits = [s for s in secrets if s.encode() in data]
            if hits:
                found[path] = hits
    return found


@pytest.mark.timeout(420)
def test_no_credential_reaches_ray_logs_records_or_output(s3_data, tmp_path):
    """`anonvid anonymize` from s3:// to s3:// as a user starts it: its own process, its own local Ray, credentials
    in the environment. Workers must still reach the storage, and no credential may be in any file of the Ray
    session, in any object of the output (features, errors, markers, run records) or in what the job prints."""
    fs = fresh_fs()
    for uri in s3_data["videos"][:2]:
        fs.copy(uri, uri.replace("/videos/", "/secrets/"))
    out = "s3://out-bucket/secrets"
    ray_tmp = tempfile.mkdtemp(prefix="rays-", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a fresh local Ray, not the tests' one
    env.update(FAKE_CREDENTIALS, RAY_TMPDIR=ray_tmp)
    argv = [sys.executable, "-m", "jobs.cli", "anonymize", "s3://in-bucket/secrets/", "--out", out, "--json",
            *(f"--{kind}={uri}" for kind, uri in s3_data["models"].items())]  # fmt: skip
    secrets = list(FAKE_CREDENTIALS.values())
    try:
        proc = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=400)
        summary = json_summary(proc.returncode, proc.stdout, proc.stderr)
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert (summary["videos_ok"], summary["videos_failed"]) == (2, 0), summary  # the workers read and wrote S3
        assert any(Path(ray_tmp).rglob("session_*")), "the job did not start its Ray under RAY_TMPDIR"
        assert files_holding(ray_tmp, secrets) == {}
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert [s for s in secrets if s in proc.stdout or s in proc.stderr] == []
    objects = fs.find("out-bucket/secrets")
    assert any("/_runs/" in o for o in objects) and any("/features/" in o for o in objects)
    leaked = {o: [s for s in secrets if s.encode() in fs.cat_file(o)] for o in objects}
    assert {o: hits for o, hits in leaked.items() if hits} == {}
