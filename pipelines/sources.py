"""Listing the input: a folder or object-store prefix (any fsspec URI), or a manifest of URIs.

Every source gets a deterministic `video_id` from its URI, size and version (etag where the store has one, else the
modification time), so the same bytes at the same place get the same id in every run, and a replaced file gets a
new one (an incremental run then processes it again).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import fsspec
import pandas as pd

VIDEO_EXTENSIONS = (
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts", ".wmv", ".flv", ".3gp",
    ".ogv",
)  # fmt: skip
LISTING_COLUMNS = ["video_id", "uri", "size_bytes", "version", "labels", "source_id"]
# A manifest's own name for its videos, the first of these it has: all an anonymize output carries by default, since
# every other column (skin_dark, gender_proxy, identity, ...) may be exactly what anonymizing hides.
ID_COLUMNS = ("video_id", "id")  # its value (as a string) is also the output's `source_id` column
LabelColumns = Sequence[str] | Literal["all", "own_id"]


class InputError(ValueError):
    """The input names nothing we can process; the message says what to fix."""


@dataclass(frozen=True)
class Listing:
    videos: pd.DataFrame  # LISTING_COLUMNS, sorted by uri
    skipped_other: int  # files under the prefix that are not videos by extension
    source: str


def video_id_for(uri: str, size_bytes: int, version: str) -> str:
    key = json.dumps([uri, int(size_bytes), str(version)])
    return hashlib.sha256(key.encode()).hexdigest()[:20]


def _version(info: dict) -> str:
    for key in ("ETag", "etag", "e_tag"):
        if info.get(key):
            return "etag:" + str(info[key]).strip('"')
    for key in ("mtime", "LastModified", "last_modified", "created"):
        if info.get(key) is not None:
            value = info[key]
            return "mtime:" + (value.isoformat() if hasattr(value, "isoformat") else repr(float(value)))
    return "unversioned"


def _full_uri(fs: fsspec.AbstractFileSystem, path: str, like: str) -> str:
    if "://" not in like:
        return os.path.abspath(path)
    return fs.unstrip_protocol(path)


def list_prefix(source: str, extensions=VIDEO_EXTENSIONS, storage_options: dict | None = None) -> Listing:
    fs, root = fsspec.core.url_to_fs(source, **(storage_options or {}))
    if not fs.exists(root):
        raise InputError(f"input {source} does not exist; check the path (or bucket and endpoint) and credentials")
    if not fs.isdir(root):
        raise InputError(f"input {source} is a file; pass its folder, or list files in a manifest (--manifest)")
    rows, other = [], 0
    entries = _local_entries(root) if _is_local_fs(fs) else fs.find(root, detail=True)
    for path, info in sorted(entries.items()):
        rel = path[len(root.rstrip("/")) + 1 :]
        if info.get("type", "file") != "file" or any(_hidden(part) for part in rel.split("/")):
            continue  # hidden files and folders (.cache/, .DS_Store, our own temp files)
        if not path.lower().endswith(tuple(extensions)):
            other += 1
            continue
        uri = _full_uri(fs, path, source)
        version = "broken_link" if info.get("broken_link") else _version(info)
        size = int(info.get("size") or 0)
        rows.append((video_id_for(uri, size, version), uri, size, version, None, None))
    return Listing(pd.DataFrame(rows, columns=LISTING_COLUMNS), other, source)


def _hidden(name: str) -> bool:
    """A dot-file or dot-folder. An object key may hold "." or ".." as a literal part (s3://b/in/../x.mp4 is one
    key): that is a name, not a hidden file, and the video is listed like any other."""
    return name.startswith(".") and name not in (".", "..")


def _is_local_fs(fs: fsspec.AbstractFileSystem) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocol or "local" in protocol


def _local_entries(root: str) -> dict[str, dict]:
    """Every file under a local folder, symbolic links followed: a link to a video is listed as that video (under
    the link's own path, with its target's size and time), links to folders are walked, each real folder once (a
    link loop ends there). A link that leads nowhere (dangling, or a loop of links) is listed as a file of version
    "broken_link", so the decode stage gives it an error row instead of it vanishing."""
    out: dict[str, dict] = {}
    seen_dirs = {os.path.realpath(root)}
    for folder, dirs, files in os.walk(root, followlinks=True):
        for d in list(dirs):
            real = os.path.realpath(os.path.join(folder, d))
            if real in seen_dirs:
                dirs.remove(d)  # a folder reached twice (a link back up the tree): walk it once
            seen_dirs.add(real)
        for name in files:
            path = os.path.join(folder, name)
            try:
                st = os.stat(path)  # follows links
            except OSError:  # dangling link, or a loop of links (ELOOP)
                out[path] = {"name": path, "type": "file", "size": -1, "broken_link": True}
                continue
            kind = "file" if os.path.isfile(path) else "other"  # sockets, fifos, devices
            out[path] = {"name": path, "type": kind, "size": st.st_size, "mtime": st.st_mtime}
    return out


def list_manifest(manifest: str, storage_options: dict | None = None, label_columns: LabelColumns = "all") -> Listing:
    """Parquet or CSV with a `uri` column (or `path`, relative to the manifest's folder, as `anonvid synth`'s
    labels.parquet has); other columns are kept per video as JSON `labels`: "all" of them (training and evaluation
    read their targets there), "own_id" (the first of ID_COLUMNS the manifest has, else none: the anonymize job's
    default) or the named ones."""
    with fsspec.open(manifest, "rb", **(storage_options or {})) as f:
        if manifest.lower().endswith((".parquet", ".pq")):
            table = pd.read_parquet(f)
        elif manifest.lower().endswith((".csv", ".tsv")):
            table = pd.read_csv(f, sep="\t" if manifest.lower().endswith(".tsv") else ",")
        else:
            raise InputError(f"manifest {manifest} must be .parquet or .csv/.tsv")
    if "uri" not in table.columns and "path" in table.columns:
        table = table.rename(columns={"path": "uri"})
    if "uri" not in table.columns:
        raise InputError(f"manifest {manifest} has no `uri` (or `path`) column (columns: {list(table.columns)})")
    label_cols = _label_columns(manifest, [c for c in table.columns if c != "uri"], label_columns)
    id_col = next((c for c in ID_COLUMNS if c in table.columns), None)
    base = os.path.dirname(manifest) if "://" not in manifest else manifest.rsplit("/", 1)[0]
    rows, seen = [], {}
    for rec in table.to_dict("records"):
        uri = given = str(rec["uri"])
        if "://" not in uri and not os.path.isabs(uri):
            uri = os.path.join(os.path.abspath(base), uri) if "://" not in base else f"{base}/{uri}"
        if "://" not in uri:
            uri = os.path.abspath(uri)  # a.mp4, ./a.mp4 and /abs/a.mp4 are one video, with one video_id
        if uri in seen:
            also = "" if seen[uri] == given else f" (as {seen[uri]!r} and {given!r})"
            raise InputError(f"manifest {manifest} lists {uri} more than once{also}; every video must appear once")
        seen[uri] = given
        try:
            fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
            info = fs.info(path)
            size, version = int(info.get("size") or 0), _version(info)
        except FileNotFoundError:
            size, version = -1, "missing"  # the decode stage records it as not_found: listed, so never silently lost
        labels = {c: _plain(rec[c]) for c in label_cols}
        if "://" in uri:
            uri = _full_uri(fs, path, uri)  # the store's own spelling; local paths are absolute already
        own = None if id_col is None or _plain(rec[id_col]) is None else str(_plain(rec[id_col]))
        rows.append((video_id_for(uri, size, version), uri, size, version, json.dumps(labels) if labels else None,
                     own))  # fmt: skip
    videos = pd.DataFrame(rows, columns=LISTING_COLUMNS).sort_values("uri", ignore_index=True)
    return Listing(videos, 0, manifest)


def _label_columns(manifest: str, available: list[str], wanted: LabelColumns) -> list[str]:
    if isinstance(wanted, str) and wanted not in ("all", "own_id"):  # a bare name would be read letter by letter
        raise ValueError(f"label_columns must be 'all', 'own_id' or a list of column names, got {wanted!r}")
    if wanted == "all":
        return available
    if wanted == "own_id":
        return [c for c in ID_COLUMNS if c in available][:1]
    missing = [c for c in wanted if c not in available]
    if missing:
        raise InputError(f"manifest {manifest} has no column {missing} to keep as labels (its columns: "
                         f"{sorted(available)}): name only those with --label-column (label_columns)")  # fmt: skip
    return list(wanted)


def _plain(value):
    if hasattr(value, "item"):
        value = value.item()
    return None if isinstance(value, float) and value != value else value


def list_input(
    source: str | None, manifest: str | None = None, storage_options: dict | None = None,
    label_columns: LabelColumns = "all",
) -> Listing:  # fmt: skip
    """A folder/prefix (no labels) or a manifest (`label_columns`: see list_manifest)."""
    if bool(source) == bool(manifest):
        raise InputError("give exactly one input: a folder/prefix (INPUT) or --manifest FILE")
    if manifest:
        listing = list_manifest(manifest, storage_options, label_columns)
    else:
        listing = list_prefix(source, storage_options=storage_options)
    if listing.videos.empty:
        hint = f" ({listing.skipped_other} other files were skipped by extension)" if listing.skipped_other else ""
        raise InputError(
            f"no videos found in {listing.source}{hint}; check the path, or list files in a manifest "
            f"(--manifest). Video extensions: {' '.join(VIDEO_EXTENSIONS)}"
        )
    return listing
