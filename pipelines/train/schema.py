"""The label schema: which manifest columns hold a video's action, its private attributes, its identity and its split.

Every train and evaluate config carries one (`labels:`), so a user's own archive trains and evaluates as it is:
VISPR- or PA-HMDB-style attribute columns, string action names, any split column. The defaults are the columns
`anonvid synth` writes, so the shipped configs need none.

`resolve_labels` turns a manifest into one row per video with integer targets:

    video_id, uri, index (stable int per video), split, action (int64), identity (int64, -1 = none), <attributes>

String actions are mapped to ids in sorted order of their names over the whole manifest (every split), and the
names travel into the trained bundle's config.json (`classes`); integer actions keep their ids.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from anon_core.synthetic import ATTRIBUTES


class LabelError(ValueError):
    """The manifest does not fit the label schema; the message names the columns and the fix."""


@dataclass
class LabelSchema:
    action: str = "action_id"  # integer ids or class names (strings: ids in sorted order, names kept in the bundle)
    attributes: list[str] = field(default_factory=lambda: list(ATTRIBUTES))  # 0/1 private-attribute columns
    identity: str | None = "identity"  # None: the archive has no identity column (validation by video only)
    split: str = "split"
    train_split: str = "train"
    test_split: str = "test"

    def validate(self) -> list[str]:
        errors = []
        if not self.action:
            errors.append("action: name the manifest column holding each video's action")
        if len(set(self.attributes)) != len(self.attributes):
            errors.append(f"attributes: a column is listed twice in {self.attributes}")
        if self.action in self.attributes:
            errors.append(f"attributes: {self.action!r} is the action column; it cannot also be a private attribute")
        if self.train_split == self.test_split:
            errors.append(f"train_split and test_split are both {self.train_split!r}: name two different values")
        return errors


@dataclass(frozen=True)
class Labelled:
    videos: pd.DataFrame  # one row per video (module docstring); split: "train", "val", "test" or other values
    classes: list[str]  # action class names, index = action id
    attributes: list[str]

    def split(self, name: str) -> pd.DataFrame:
        return self.videos[self.videos["split"] == name].reset_index(drop=True)

    def class_counts(self) -> dict[str, dict[str, int]]:
        """{split: {class name: videos}}: what --dry-run prints."""
        out = {}
        for split, part in self.videos.groupby("split"):
            counts = part["action"].value_counts()
            out[str(split)] = {self.classes[int(a)]: int(counts.get(a, 0)) for a in range(len(self.classes))}
        return out


def resolve_labels(manifest: str, schema: LabelSchema, needed: bool = True) -> Labelled:
    """needed=False (self-supervised training): every label column is optional; a manifest of bare `uri`s is all
    training videos with no classes and no attributes, and the columns it does have are used."""
    from ..sources import list_manifest

    listing = list_manifest(manifest).videos
    table = pd.DataFrame([json.loads(s or "{}") for s in listing["labels"]], index=range(len(listing)))
    no_action = not needed and schema.action not in table.columns
    if not needed:
        schema = replace(schema, attributes=[c for c in schema.attributes if c in table.columns],
                         identity=schema.identity if schema.identity in table.columns else None)  # fmt: skip
        if no_action:
            table[schema.action] = 0
        if schema.split not in table.columns:
            table[schema.split] = schema.train_split
    wanted = [schema.action, schema.split, *schema.attributes, *([schema.identity] if schema.identity else [])]
    missing = [c for c in wanted if c not in table.columns]
    if missing:
        raise LabelError(
            f"{manifest} has no column {', '.join(map(repr, missing))} (its columns: {sorted(table.columns)}); "
            "name the right columns in the config's label_schema section (label_schema.action, "
            "label_schema.attributes, label_schema.identity, label_schema.split)"
        )
    actions, classes = _action_ids(table[schema.action], schema.action, manifest, _class_names(manifest))
    if no_action:
        classes = []  # a self-supervised run on unlabelled videos: no classes
    videos = pd.DataFrame({
        "video_id": listing["video_id"].to_numpy(),
        "uri": listing["uri"].to_numpy(),
        "index": np.arange(len(listing), dtype=np.int64),  # listing order is sorted by uri: stable across runs
        "split": [_split_name(str(v), schema) for v in table[schema.split]],
        "action": actions,
        "identity": _identity(table, schema.identity, manifest),
    })  # fmt: skip
    for a in schema.attributes:
        videos[a] = _binary(table[a], a, manifest)
    if not (videos["split"] == "train").any():
        found = sorted(set(videos["split"]))
        raise LabelError(f"{manifest}: no video has {schema.split}={schema.train_split!r} (values: {found}); set "
                         "label_schema.train_split to the value that marks training videos")  # fmt: skip
    return Labelled(videos, classes, list(schema.attributes))


def _split_name(value: str, schema: LabelSchema) -> str:
    """The manifest's split values as the loops name them; other values are kept apart (never trained on)."""
    if value == schema.train_split:
        return "train"
    if value == schema.test_split:
        return "test"
    return value if value not in ("train", "test", "val") else f"other:{value}"


def _class_names(manifest: str) -> list[str] | None:
    """`anonvid synth` writes its action names beside labels.parquet; other manifests have none."""
    import fsspec

    path = f"{os.path.dirname(manifest) if '://' not in manifest else manifest.rsplit('/', 1)[0]}/corpus.json"
    try:
        with fsspec.open(path) as f:
            return list(json.load(f).get("actions") or []) or None
    except (OSError, ValueError):
        return None


def _action_ids(col: pd.Series, name: str, manifest: str, known: list[str] | None) -> tuple[np.ndarray, list[str]]:
    if col.isna().any():
        raise LabelError(f"{manifest}: {int(col.isna().sum())} videos have no {name!r} value; every video needs "
                         "an action (drop unlabelled videos from the manifest)")  # fmt: skip
    numeric = pd.to_numeric(col, errors="coerce")
    if numeric.notna().all() and (numeric == numeric.round()).all():
        ids = numeric.astype(np.int64).to_numpy()
        if ids.min() < 0:
            raise LabelError(f"{manifest}: action ids in {name!r} must be >= 0 (found {ids.min()})")
        n = int(ids.max()) + 1
        names = known if known and len(known) == n else [str(i) for i in range(n)]
        return ids, names
    names = sorted(col.astype(str).unique())  # every split: test-only classes still get an id
    index = {c: i for i, c in enumerate(names)}
    return np.array([index[c] for c in col.astype(str)], dtype=np.int64), names


def _identity(table: pd.DataFrame, column: str | None, manifest: str) -> np.ndarray:
    if column is None:
        return np.full(len(table), -1, dtype=np.int64)
    col = table[column]
    numeric = pd.to_numeric(col, errors="coerce")
    if numeric.notna().all():
        return numeric.astype(np.int64).to_numpy()
    # string identities (names, hashes): ids by sorted value; missing ones stay unknown (-1)
    names = sorted(col.dropna().astype(str).unique())
    index = {c: i for i, c in enumerate(names)}
    return np.array([index.get(str(v), -1) if v == v and v is not None else -1 for v in col], dtype=np.int64)


def _binary(col: pd.Series, name: str, manifest: str) -> np.ndarray:
    values = col.map(lambda v: {"true": 1, "false": 0}.get(v.lower(), v) if isinstance(v, str) else v)
    numeric = pd.to_numeric(values, errors="coerce")
    bad = ~numeric.isin([0, 1])
    if bad.any():
        raise LabelError(f"{manifest}: private attribute {name!r} must be 0/1 (or true/false) for every video; "
                         f"found {col[bad].iloc[0]!r} in {int(bad.sum())} videos")  # fmt: skip
    return numeric.astype(np.float32).to_numpy()


def check_num_classes(given: int | None, found: int, what: str) -> list[str]:
    """`num_classes` follows from the data unless given; a given number that disagrees is a config error."""
    if given is None or given == found:
        return []
    return [f"{what}={given} but the manifest has {found}: remove {what} (it follows from the labels) or fix the "
            "label_schema section"]  # fmt: skip


def carve_validation(videos: pd.DataFrame, fraction: float, by: str, seed: int) -> pd.Series:
    """Split names with a seeded `fraction` of the training videos moved to "val": whole identities when
    by="identity" (no person in both), else single videos. At least one video when fraction > 0."""
    split = videos["split"].copy()
    train = np.flatnonzero(split.to_numpy() == "train")
    if fraction <= 0 or len(train) < 2:
        return split
    rng = np.random.default_rng([seed, 7])
    if by == "identity":
        ids = videos["identity"].to_numpy()[train]
        if (ids < 0).any():
            raise LabelError("val_by=identity needs an identity for every training video; set label_schema.identity or "
                             "use val_by=video")  # fmt: skip
        groups = np.unique(ids)
        if len(groups) < 2:
            raise LabelError(f"val_by=identity needs >= 2 identities in the training split, found {len(groups)}")
        n = max(1, round(fraction * len(groups)))
        held = set(rng.permutation(groups)[: min(n, len(groups) - 1)].tolist())
        val = train[np.isin(ids, list(held))]
    else:
        n = max(1, round(fraction * len(train)))
        val = rng.permutation(train)[: min(n, len(train) - 1)]
    split.iloc[val] = "val"
    return split
