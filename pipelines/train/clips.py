"""Decode once: a corpus's training clips, decoded by the anonymize pipeline's own plan and decode stages into Parquet
under `storage_path`/clips/<key>/, then read by every epoch and every later run with the same videos and clip spec
(key = the videos' ids, which change when a file changes, the clip spec and the decoder backend).

Layout of a cache folder:
    part-*.parquet   rows: video (int64, the labels' `index`), clip_index (int64), clip (binary, T*S*S*3 uint8)
    index.parquet    file (int), row (int), video, clip_index: where each good clip lies, sorted by (video, clip)
    errors.parquet   one row per video that failed: video, uri, error_type, error_stage, error_message
    _complete.json   written last: a folder without it is a killed build and is rebuilt

Workers read it with `ClipStore` and walk it with `epoch_batches`: a seeded order per epoch that depends only on
(seed, epoch, rank, world), so a resumed run sees exactly the batches an uninterrupted one saw.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from anon_core.video import ClipSpec
from anon_core.video.reader import DEFAULT_BACKEND


class TrainDataError(RuntimeError):
    """Too many videos failed to decode for the run to mean anything (exit 1)."""


ROWS_PER_FILE = 64  # clips per Parquet file: the unit the epoch order permutes


class CacheRows:
    """Decode-stage rows -> cache rows: good clips as bytes, one row per failed segment, gaps dropped."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        keep = np.array([k != "gap" for k in batch["kind"]], dtype=bool)
        good = np.array([k == "clip" and e == "" for k, e in zip(batch["kind"], batch["error_type"], strict=True)])
        clips = batch["clip"]
        return {
            "video": np.array([int(s) for s in batch["labels"][keep]], dtype=np.int64),
            "clip_index": batch["clip_index"][keep].astype(np.int64),
            "good": good[keep],
            "clip": np.array([clips[i].tobytes() if good[i] else b"" for i in np.flatnonzero(keep)], dtype=object),
            **{c: batch[c][keep].astype(str) for c in ("uri", "error_type", "error_stage", "error_message")},
        }


def cache_key(videos: pd.DataFrame, spec: ClipSpec, backend: str) -> str:
    key = json.dumps([sorted(videos["video_id"]), [spec.num_frames, spec.stride, spec.size, spec.max_clips], backend])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def cache_uri(root: str, videos: pd.DataFrame, spec: ClipSpec, backend: str) -> str:
    """Where the cache of these videos and this clip spec lives under `root` (built or not)."""
    return f"{root.rstrip('/')}/clips/{cache_key(videos, spec, backend)}"


def _fs(uri: str):
    import fsspec

    return fsspec.core.url_to_fs(uri)


def build_clip_cache(videos: pd.DataFrame, spec: ClipSpec, root: str, backend: str = DEFAULT_BACKEND,
                     max_failed_fraction: float = 0.05, log=print) -> str:  # fmt: skip
    """The cache folder of these videos (columns video_id, uri, index) under `root`, decoded now if absent. Every
    video that fails is logged with its reason and kept as an error row; more than `max_failed_fraction` failed
    raises TrainDataError (after the cache is written: a re-run with a higher threshold needs no new decode)."""
    uri = cache_uri(root, videos, spec, backend)
    fs, path = _fs(uri)
    if fs.exists(f"{path}/_complete.json"):
        log(f"clips reused from {uri}")
    else:
        if fs.exists(path):
            fs.rm(path, recursive=True)  # a killed build's partial files
        _decode(videos, spec, backend, uri, log)
    summary = json.loads(fs.cat_file(f"{path}/_complete.json"))
    failed = pd.read_parquet(f"{path}/errors.parquet", filesystem=fs)
    for r in failed.itertuples():
        log(f"  failed video {r.uri}: {r.error_type} at {r.error_stage}: {r.error_message[:200]}")
    frac = len(failed) / max(1, summary["videos"])
    if frac > max_failed_fraction:
        raise TrainDataError(
            f"{len(failed)} of {summary['videos']} videos failed to decode ({100 * frac:.1f}% > max_failed_fraction "
            f"{100 * max_failed_fraction:g}%); the reasons are listed above and in {uri}/errors.parquet: fix or "
            "drop those videos, or raise max_failed_fraction"
        )
    return uri


def _decode(videos: pd.DataFrame, spec: ClipSpec, backend: str, uri: str, log) -> None:
    import pyarrow.fs
    import pyarrow.parquet as pq
    import ray.data

    from ..stages import DecodeClips, PlanSegments

    fs, path = _fs(uri)
    arrow_fs = pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs))  # s3fs settings (endpoint, profile) apply
    rows = videos.assign(labels=videos["index"].astype(str))[["video_id", "uri", "labels"]]
    log(f"decoding the clips of {len(rows)} videos once into {uri} ...")
    ds = ray.data.from_pandas([rows.iloc[i : i + 8] for i in range(0, len(rows), 8)])
    plan, decode = PlanSegments(spec), DecodeClips(spec, backend=backend)
    ds = ds.map_batches(plan, **plan.ray_args()).map_batches(decode, **decode.ray_args())
    ds.map_batches(CacheRows, num_cpus=0.25, batch_size=64, concurrency=1).write_parquet(
        f"{path}/parts", filesystem=arrow_fs, min_rows_per_file=ROWS_PER_FILE
    )  # fmt: skip
    files = sorted(f for f in fs.find(f"{path}/parts") if f.endswith(".parquet"))
    meta = []
    for i, f in enumerate(files):
        t = pq.read_table(f, columns=["video", "clip_index", "good", "uri", "error_type", "error_stage",
                                      "error_message"], filesystem=arrow_fs).to_pandas()  # fmt: skip
        meta.append(t.assign(file=i, row=np.arange(len(t))))
    meta = pd.concat(meta, ignore_index=True) if meta else pd.DataFrame(columns=["video", "good", "file"])
    bad = meta[~meta["good"].astype(bool)].drop_duplicates("video")
    # A video shorter than one clip has a plan of zero clips and so no row at all: it fails here, by name.
    seen = set(meta["video"].tolist())
    short = videos[~videos["index"].isin(seen)]
    errors = pd.concat([
        bad[["video", "uri", "error_type", "error_stage", "error_message"]],
        pd.DataFrame({"video": short["index"], "uri": short["uri"], "error_type": "too_short", "error_stage": "plan",
                      "error_message": f"shorter than one clip ({spec.span} frames at stride {spec.stride})"}),
    ], ignore_index=True)  # fmt: skip
    # a video with any failed segment is left out whole, as the anonymize job fails it whole
    index = meta[meta["good"].astype(bool) & ~meta["video"].isin(errors["video"])]
    index = index[["file", "row", "video", "clip_index"]].sort_values(["video", "clip_index"], ignore_index=True)
    with fs.open(f"{path}/index.parquet", "wb") as f:
        index.astype("int64").to_parquet(f)
    with fs.open(f"{path}/errors.parquet", "wb") as f:
        errors.astype({"video": "int64"}).to_parquet(f)
    summary = {"videos": len(videos), "clips": len(index), "failed": len(errors), "files": [f[len(path) + 1 :]
               for f in files], "spec": [spec.num_frames, spec.stride, spec.size, spec.max_clips], "backend": backend}
    with fs.open(f"{path}/_complete.json", "w") as f:  # last: its presence means the folder is whole
        json.dump(summary, f)
    log(f"decoded {len(index)} clips of {len(videos) - len(errors)} videos ({len(errors)} failed)")


@dataclass
class ClipStore:
    """A finished cache folder as a worker reads it: the index in memory, clip files read on demand."""

    uri: str

    def __post_init__(self) -> None:
        self.fs, self.path = _fs(self.uri)
        summary = json.loads(self.fs.cat_file(f"{self.path}/_complete.json"))
        self.files = summary["files"]
        T, _, S, _ = summary["spec"]
        self.clip_shape = (T, S, S, 3)
        index = pd.read_parquet(f"{self.path}/index.parquet", filesystem=self.fs)
        self.file, self.row = index["file"].to_numpy(), index["row"].to_numpy()
        self.video, self.clip_index = index["video"].to_numpy(), index["clip_index"].to_numpy()
        self._cached: tuple[int, np.ndarray] | None = None

    def clips_of(self, videos) -> np.ndarray:
        """Positions (into the index) of every clip of these videos."""
        return np.flatnonzero(np.isin(self.video, np.asarray(videos, dtype=np.int64)))

    def _file(self, i: int) -> np.ndarray:
        """(rows, T, S, S, 3) uint8 of file i; the last file read is kept (windows of an epoch share files)."""
        import pyarrow.parquet as pq

        if self._cached is None or self._cached[0] != i:
            with self.fs.open(f"{self.path}/{self.files[i]}", "rb") as f:
                col = pq.read_table(f, columns=["clip"]).column("clip").combine_chunks()
            offsets = np.frombuffer(col.buffers()[1], np.int64 if col.type.id == 25 else np.int32)  # 25: large_binary
            offsets = offsets[col.offset : col.offset + len(col) + 1]
            data = np.frombuffer(col.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
            # error rows hold no bytes: give them a zero clip so row numbers stay positions
            full = np.zeros((len(col), int(np.prod(self.clip_shape))), np.uint8)
            sizes = np.diff(offsets)
            full[sizes > 0] = data.reshape(-1, full.shape[1])
            self._cached = (i, full.reshape(len(col), *self.clip_shape))
        return self._cached[1]

    def read(self, positions: np.ndarray) -> np.ndarray:
        """(n, T, S, S, 3) uint8 clips at these index positions, in the order given."""
        out = np.empty((len(positions), *self.clip_shape), np.uint8)
        order = np.argsort(self.file[positions], kind="stable")  # each file read once per call
        for j in order:
            p = positions[j]
            out[j] = self._file(int(self.file[p]))[self.row[p]]
        return out


def steps_per_epoch(num_clips: int, batch_size: int, world: int) -> int:
    """Every rank takes num_clips // world clips (at most world - 1 left out per epoch, a different few each time),
    in batches of batch_size, the last one possibly smaller: the same number of steps on every rank."""
    return -(-(num_clips // world) // batch_size)


def epoch_positions(store: ClipStore, positions: np.ndarray, seed: int, epoch: int, rank: int,
                    world: int) -> np.ndarray:  # fmt: skip
    """This rank's clips for one epoch, in file-grouped order: files shuffled, clips shuffled within each file, the
    whole list cut into `world` equal chunks."""
    rng = np.random.default_rng([seed, epoch])
    files = store.file[positions]
    order = []
    for f in rng.permutation(np.unique(files)):
        order.append(rng.permutation(positions[files == f]))
    flat = np.concatenate(order) if order else positions
    n = len(flat) // world
    return flat[rank * n : (rank + 1) * n]


def epoch_batches(store: ClipStore, positions: np.ndarray, batch_size: int, shuffle_window: int, seed: int,
                  epoch: int, rank: int, world: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    """(index positions, (B, T, S, S, 3) uint8 clips) of this rank's batches for one epoch: its chunk read
    `shuffle_window` clips at a time (each file once), each window shuffled; a window holding the whole chunk is a
    full shuffle. Memory: one window of clips."""
    mine = epoch_positions(store, positions, seed, epoch, rank, world)
    rng = np.random.default_rng([seed, epoch, rank, 1])
    window = max(batch_size, shuffle_window // batch_size * batch_size)
    for a in range(0, len(mine), window):
        part = mine[a : a + window]
        clips = store.read(part)
        perm = rng.permutation(len(part))
        for b in range(0, len(part), batch_size):
            take = perm[b : b + batch_size]
            yield part[take], clips[take]


def ordered_batches(store: ClipStore, positions: np.ndarray, batch_size: int, rank: int, world: int,
                    window: int = 1024) -> Iterator[tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    """This rank's share of `positions` (validation), in order, no shuffle; shares may differ by one clip."""
    mine = np.array_split(positions, world)[rank]
    for a in range(0, len(mine), window):
        part = mine[a : a + window]
        clips = store.read(part)
        for b in range(0, len(part), batch_size):
            yield part[b : b + batch_size], clips[b : b + batch_size]
