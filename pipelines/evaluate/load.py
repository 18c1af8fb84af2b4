"""Reading what the evaluation attacks: an anonymize output's committed feature rows, or a pixel set's clips, joined
to the corpus labels (`labels.parquet` of `anonvid synth`, or any manifest, read through the label schema).

Rows are joined to labels by source URI (the manifest's `uri`/`path`, resolved as the anonymize job resolves it),
so an output made from a folder or from the manifest both work.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from anon_core.evaluation import Split

from ..sources import list_manifest
from ..store import OutputStore
from ..train.schema import LabelSchema


class EvalInputError(ValueError):
    """An input the evaluation cannot use; the message names the fix."""


def corpus_labels(labels: str, schema: LabelSchema, extra: tuple[str, ...] = ()) -> tuple[pd.DataFrame, list[str]]:
    """One row per video: uri, split ("train" / "test" / other), action_id, identity, the schema's attribute columns
    and any `extra` manifest columns (the bias group), read through the config's label schema, so an archive with
    its own column names and string actions evaluates as it is."""
    from pipelines.train.schema import LabelError, resolve_labels

    try:
        labelled = resolve_labels(labels, schema)
    except LabelError as e:
        raise EvalInputError(str(e)) from e
    table = labelled.videos.rename(columns={"action": "action_id"})
    missing = [c for c in extra if c not in table.columns]
    if missing:
        videos = list_manifest(labels).videos
        raw = pd.DataFrame([json.loads(s or "{}") for s in videos["labels"]], index=videos["uri"])
        absent = [c for c in missing if c not in raw.columns]
        if absent:
            raise EvalInputError(f"{labels} has no column {absent} (its columns: {sorted(raw.columns)})")
        for c in missing:
            table[c] = raw.loc[table["uri"], c].to_numpy()
    splits = set(table["split"])
    if not {"train", "test"} <= splits:
        raise EvalInputError(f"{labels} needs both a {schema.train_split!r} and a {schema.test_split!r} value in its "
                             f"{schema.split!r} column; it has {sorted(splits)}")  # fmt: skip
    return table, labelled.attributes


def probe_classes(labels: pd.DataFrame, column: str) -> tuple[pd.Series, list[str]]:
    """One int class per video (indexed by uri) for a utility probe on `column`, and the class names: a numeric
    column with more than two values becomes above / below its training-split median (a continuous quantity such as
    a speed becomes a balanced two-way task); anything else gets one class per value, in sorted order."""
    values = labels[column]
    if values.isna().any():
        raise EvalInputError(f"probe column {column!r} is empty for {int(values.isna().sum())} videos: give a "
                             "column every video has, or drop it from probes")  # fmt: skip
    if pd.api.types.is_numeric_dtype(values) and values.nunique() > 2:
        median = float(values[labels["split"] == "train"].median())
        classes = (values > median).astype(np.int64)
        names = [f"{column} <= {median:.4g}", f"{column} > {median:.4g}"]
    else:
        names = sorted(values.astype(str).unique())
        classes = values.astype(str).map({n: i for i, n in enumerate(names)}).astype(np.int64)
    if classes[labels["split"] == "train"].nunique() < 2:
        raise EvalInputError(f"probe column {column!r} has one value in the training split: nothing to probe")
    return pd.Series(classes.to_numpy(), index=labels["uri"].to_numpy()), names


def output_config(output: str) -> dict:
    """What an anonymize output holds (its _output.json: mode, models, keep_pixels, ...)."""
    store = OutputStore(output)
    path = store.path("_output.json")
    if not store.exists(path):
        raise EvalInputError(f"{output} is not an anonvid output (no _output.json); give an `anonvid anonymize --out`")
    return store.read_json(path)


def _committed_table(output: str, columns: list[str]) -> pa.Table:
    """The rows of committed videos only (a concurrent or killed run may have left uncommitted shards)."""
    output_config(output)
    store = OutputStore(output)
    found = store.fs.find(store.path("features")) if store.exists(store.path("features")) else []
    files = [f for f in found if f.endswith(".parquet") and not f.rsplit("/", 1)[-1].startswith(".")]
    if not files:
        raise EvalInputError(f"{output} has no feature shards yet: run the anonymize job on it first")
    tables = [pq.read_table(f, columns=columns, filesystem=store.fs) for f in sorted(files)]
    table = pa.concat_tables(tables)
    done = store.committed()
    keep = np.array([v in done for v in table.column("video_id").to_pylist()], dtype=bool)
    table = table.filter(pa.array(keep))
    keys = pd.DataFrame({"v": table.column("video_id").to_pylist(), "c": table.column("clip_index").to_pylist()})
    if keys.duplicated().any():
        raise EvalInputError(
            f"{output} holds some clips twice (a run was interrupted before its repair): run the same "
            "`anonvid anonymize` command on it again, which repairs the output first"
        )
    return table


def _join(table: pa.Table, labels: pd.DataFrame, x: np.ndarray, attributes: list[str], group: str | None,
          source: str) -> dict[str, Split]:  # fmt: skip
    uri = np.array(table.column("source_uri").to_pylist(), dtype=object)
    lab = labels.set_index("uri")
    known = np.array([u in lab.index for u in uri], dtype=bool)
    if not known.any():
        raise EvalInputError(f"none of the videos in {source} appear in the labels: is it the same corpus?")
    uri, x = uri[known], x[known]
    rows = lab.loc[uri]
    splits = {}
    for name in ("train", "test"):
        sel = (rows["split"] == name).to_numpy()
        if not sel.any():
            raise EvalInputError(f"{source} has no rows of the {name} split")
        r = rows[sel]
        splits[name] = Split(
            x=x[sel],
            action=r["action_id"].to_numpy(np.int64),
            attributes=r[attributes].to_numpy(np.float64),
            identity=r["identity"].to_numpy(np.int64),
            video=uri[sel].astype(str),
            group=None if group is None else r[group].to_numpy(np.int64),
        )
    return splits


def feature_splits(output: str, labels: pd.DataFrame, attributes: list[str], group: str | None = None):
    """{"train": Split, "test": Split} of an anonymize output's committed clip features."""
    table = _committed_table(output, ["video_id", "source_uri", "clip_index", "features"])
    col = table.column("features").combine_chunks()
    n = len(table)
    x = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(n, -1)  # (N, D)
    return _join(table, labels, x, attributes, group, output)


def pixel_splits(output: str, labels: pd.DataFrame, attributes: list[str], group: str | None = None):
    """{"train": Split, "test": Split} of the clips' anonymized pixels (`--keep-pixels`): x (N, T, S, S, 3) uint8."""
    table = _committed_table(output, ["video_id", "source_uri", "clip_index", "pixels", "pixels_shape"])
    shapes = {tuple(s) for s in table.column("pixels_shape").to_pylist()}
    if len(shapes) != 1:
        raise EvalInputError(f"{output} mixes pixel shapes {sorted(shapes)}; one output must have one shape")
    shape = shapes.pop()
    x = np.stack([np.frombuffer(b, np.uint8).reshape(shape) for b in table.column("pixels").to_pylist()])
    return _join(table, labels, x, attributes, group, output)
