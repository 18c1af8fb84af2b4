"""The evaluation job writes every file of its report (report.json, report.md, plots, copied contact sheets) through
fsspec, so `--out s3://bucket/report` lands in the bucket, not in a local folder named `s3:`. Run here on fake
anonymize outputs (random features) and a memory:// report folder."""

from __future__ import annotations

import json
import uuid

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from anon_core.synthetic import ATTRIBUTES
from pipelines.evaluate.run import EvalMethod, EvaluateConfig, run_evaluation, write_report

N_VIDEOS, DIM = 24, 8


def fake_manifest(path) -> pd.DataFrame:
    """Labels of N_VIDEOS videos (the files need not exist: the evaluation joins rows to labels by uri)."""
    rng = np.random.default_rng(0)
    table = pd.DataFrame({
        "uri": [f"/videos/v{i:02d}.mp4" for i in range(N_VIDEOS)],
        "split": ["train", "test"] * (N_VIDEOS // 2),
        "action_id": [i // 2 % 2 for i in range(N_VIDEOS)],
        **{a: rng.integers(0, 2, N_VIDEOS) for a in ATTRIBUTES},
        "identity": [i % 6 for i in range(N_VIDEOS)],
    })  # fmt: skip
    table.to_csv(path, index=False)
    return table


def fake_output(uri: str, mode: str, uris: list[str], contact_sheet: bytes | None = None) -> None:
    """What `anonvid anonymize --out` leaves: _output.json, one feature shard, a commit marker per video."""
    fs, root = fsspec.core.url_to_fs(uri)
    vids = [f"vid{i:02d}" for i in range(len(uris))]
    features = np.random.default_rng(1).normal(size=(len(uris), DIM)).astype(np.float32)
    table = pa.table({
        "video_id": vids, "source_uri": uris, "clip_index": pa.array([0] * len(uris), pa.int32()),
        "features": pa.FixedSizeListArray.from_arrays(pa.array(features.ravel()), DIM),
    })  # fmt: skip
    fs.makedirs(f"{root}/features", exist_ok=True)
    with fs.open(f"{root}/features/part-0.parquet", "wb") as f:
        pq.write_table(table, f)
    fs.pipe(f"{root}/_output.json", json.dumps({"format": "anonvid-features/1", "mode": mode}).encode())
    for vid in vids:
        fs.pipe(f"{root}/_commits/{vid}.json", json.dumps({"video_id": vid, "status": "ok"}).encode())
    if contact_sheet is not None:
        fs.pipe(f"{root}/preview/contact_sheet.png", contact_sheet)


def test_the_report_goes_to_an_fsspec_uri_and_nowhere_else(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative local folder named `memory:` would appear here
    uris = list(fake_manifest(tmp_path / "labels.csv")["uri"])
    base = f"memory://eval-{uuid.uuid4().hex[:8]}"
    fake_output(f"{base}/raw", "raw", uris)
    fake_output(f"{base}/prune", "prune", uris, contact_sheet=b"\x89PNG a contact sheet")
    cfg = EvaluateConfig(labels=str(tmp_path / "labels.csv"), out=f"{base}/report", epochs=1, pixel_epochs=1,
                         n_boot=10, methods=[EvalMethod("raw", f"{base}/raw"), EvalMethod("prune", f"{base}/prune")])
    report = run_evaluation(cfg, log=lambda *a: None)

    fs, root = fsspec.core.url_to_fs(cfg.out)
    written = sorted(p.rsplit("/", 1)[-1] for p in fs.find(root))
    assert written == sorted(["report.json", "report.md", *report["plots"].values()])
    assert report["plots"]["pruned tubelets (prune)"] == "pruned_tubelets_prune.png"
    assert fs.cat(f"{root}/pruned_tubelets_prune.png") == b"\x89PNG a contact sheet"
    assert json.loads(fs.cat(f"{root}/report.json"))["methods"].keys() == {"raw", "prune"}
    assert list(tmp_path.iterdir()) == [tmp_path / "labels.csv"], "the report went to a local folder"

    write_report(report, f"{base}/again/")  # the benchmark writes the report a second time, by itself
    again = fsspec.core.url_to_fs(f"{base}/again")[1]
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.find(again)) == ["report.json", "report.md"]
    assert list(tmp_path.iterdir()) == [tmp_path / "labels.csv"]
