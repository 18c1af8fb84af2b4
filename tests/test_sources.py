"""Listing the input: a folder, or a manifest (CSV or Parquet) of URIs; video ids stable until the file changes;
every mistake an InputError that names the fix."""

import json
import os
import re

import pandas as pd
import pytest

from pipelines.sources import LISTING_COLUMNS, InputError, list_input

FOLDER = {
    "a.mp4": b"a" * 10,
    "c.webm": b"c" * 30,
    "sub/b.MOV": b"b" * 20,  # extensions match in any case, in subfolders too
    "notes.txt": b"not a video",
    "thumbs/x.jpg": b"jpeg",
    ".hidden.mp4": b"h",  # hidden files are neither listed nor counted
    "sub/.DS_Store": b"",
}


def make_folder(root, files=FOLDER):
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def ids(listing) -> dict[str, str]:
    return dict(zip(listing.videos["uri"], listing.videos["video_id"], strict=True))


def test_folder_lists_videos_only(tmp_path):
    root = make_folder(tmp_path / "in")
    listing = list_input(str(root))
    v = listing.videos
    assert list(v.columns) == LISTING_COLUMNS
    assert list(v["uri"]) == [str(root / "a.mp4"), str(root / "c.webm"), str(root / "sub" / "b.MOV")]
    assert list(v["size_bytes"]) == [10, 30, 20]
    assert all(s.startswith("mtime:") for s in v["version"])
    assert v["labels"].isna().all()
    assert listing.skipped_other == 2  # notes.txt, x.jpg
    assert listing.source == str(root)
    assert all(re.fullmatch("[0-9a-f]{20}", i) for i in v["video_id"]) and v["video_id"].is_unique


def test_video_id_is_stable_until_the_file_changes(tmp_path):
    root = make_folder(tmp_path / "in")
    a, b, c = (str(root / n) for n in ("a.mp4", "sub/b.MOV", "c.webm"))
    first = ids(list_input(str(root)))
    assert ids(list_input(str(root))) == first

    st = os.stat(a)
    os.utime(a, (st.st_atime, st.st_mtime + 100))  # touched: same bytes, new version
    touched = ids(list_input(str(root)))
    assert touched[a] != first[a] and (touched[b], touched[c]) == (first[b], first[c])

    st = os.stat(b)
    (root / "sub" / "b.MOV").write_bytes(b"B" * 21)  # new bytes, old modification time
    os.utime(b, (st.st_atime, st.st_mtime))
    rewritten = ids(list_input(str(root)))
    assert rewritten[b] != first[b] and rewritten[a] == touched[a] and rewritten[c] == first[c]


def test_the_same_file_elsewhere_gets_another_id(tmp_path):
    one, two = make_folder(tmp_path / "one"), make_folder(tmp_path / "two")
    st = os.stat(one / "a.mp4")
    os.utime(two / "a.mp4", (st.st_atime, st.st_mtime))
    assert ids(list_input(str(one)))[str(one / "a.mp4")] != ids(list_input(str(two)))[str(two / "a.mp4")]


def test_manifest_csv_with_uri_column_keeps_other_columns_as_labels(tmp_path):
    root = make_folder(tmp_path / "in")
    manifest = tmp_path / "m.csv"
    pd.DataFrame(
        {
            "uri": [str(root / "c.webm"), str(root / "a.mp4")],
            "action": ["wave", "walk"],
            "identity": [3, 7],
            "score": [0.5, float("nan")],
        }
    ).to_csv(manifest, index=False)
    listing = list_input(None, manifest=str(manifest))
    v = listing.videos
    assert list(v["uri"]) == [str(root / "a.mp4"), str(root / "c.webm")]  # sorted by uri
    assert list(v["size_bytes"]) == [10, 30]
    assert [json.loads(s) for s in v["labels"]] == [
        {"action": "walk", "identity": 7, "score": None},
        {"action": "wave", "identity": 3, "score": 0.5},
    ]
    assert listing.source == str(manifest) and listing.skipped_other == 0
    assert ids(listing) == {u: i for u, i in ids(list_input(str(root))).items() if u in set(v["uri"])}


def test_manifest_csv_path_column_is_relative_to_the_manifest(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "in")
    manifest = root / "m.csv"
    pd.DataFrame({"path": ["sub/b.MOV", "a.mp4"], "split": ["test", "train"]}).to_csv(manifest, index=False)
    monkeypatch.chdir(make_folder(tmp_path / "elsewhere"))  # not relative to the working directory
    v = list_input(None, manifest=str(manifest)).videos
    assert list(v["uri"]) == [str(root / "a.mp4"), str(root / "sub" / "b.MOV")]
    assert list(v["size_bytes"]) == [10, 20]
    assert [json.loads(s) for s in v["labels"]] == [{"split": "train"}, {"split": "test"}]


def test_manifest_parquet_with_path_column(small_corpus):
    """`anonvid synth`'s labels.parquet: paths relative to it, every other column a label."""
    table = pd.read_parquet(small_corpus / "labels.parquet")
    v = list_input(None, manifest=str(small_corpus / "labels.parquet")).videos
    assert len(v) == len(table) == 12
    assert list(v["uri"]) == sorted(str(small_corpus / p) for p in table["path"])
    assert all(os.path.getsize(u) == s for u, s in zip(v["uri"], v["size_bytes"], strict=True))
    by_path = {str(small_corpus / r["path"]): r for r in table.to_dict("records")}
    for uri, labels in zip(v["uri"], v["labels"], strict=True):
        got, row = json.loads(labels), by_path[uri]
        assert set(got) == set(table.columns) - {"path"}
        assert (got["video_id"], got["action"], got["action_id"], got["frames"]) == (
            row["video_id"],
            row["action"],
            row["action_id"],
            row["frames"],
        )


def test_manifest_lists_a_uri_that_does_not_exist(tmp_path):
    root = make_folder(tmp_path / "in")
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"uri": [str(root / "a.mp4"), str(root / "gone.mp4")]}).to_csv(manifest, index=False)
    v = list_input(None, manifest=str(manifest)).videos
    gone = v[v["uri"] == str(root / "gone.mp4")].iloc[0]
    assert (gone["size_bytes"], gone["version"]) == (-1, "missing")  # decoded later as a not_found error row
    assert len(v) == 2 and gone["labels"] is None


def test_manifest_listing_a_uri_twice_is_refused(tmp_path):
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"uri": ["/data/a.mp4", "/data/b.mp4", "/data/a.mp4"]}).to_csv(manifest, index=False)
    with pytest.raises(InputError, match="/data/a.mp4 more than once"):
        list_input(None, manifest=str(manifest))


def test_manifest_naming_one_file_twice_in_different_spellings_is_refused(tmp_path):
    root = make_folder(tmp_path / "in")
    manifest = root / "m.csv"
    pd.DataFrame({"path": ["a.mp4", "./a.mp4", str(root / "a.mp4")]}).to_csv(manifest, index=False)
    with pytest.raises(InputError, match="more than once"):
        list_input(None, manifest=str(manifest))


def test_an_empty_folder_is_refused_with_the_fix(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError) as info:
        list_input(str(tmp_path / "empty"))
    msg = str(info.value)
    assert msg.startswith(f"no videos found in {tmp_path / 'empty'};") and "--manifest" in msg and ".mp4" in msg


def test_a_folder_of_other_files_says_how_many_were_skipped(tmp_path):
    root = make_folder(tmp_path / "in", {"a.txt": b"x", "b.jpg": b"y", ".c.mp4": b"z"})
    with pytest.raises(InputError, match=r"\(2 other files were skipped by extension\)"):
        list_input(str(root))


def test_an_empty_manifest_is_refused(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("uri,action\n")
    with pytest.raises(InputError, match="no videos found in"):
        list_input(None, manifest=str(manifest))


@pytest.mark.parametrize("given", [(None, None), ("", None), ("in", "m.csv")])
def test_exactly_one_of_input_and_manifest(given):
    with pytest.raises(InputError, match="give exactly one input"):
        list_input(*given)


def test_input_that_does_not_exist_or_is_a_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        list_input(str(tmp_path / "nope"))
    (tmp_path / "a.mp4").write_bytes(b"x")
    with pytest.raises(InputError, match="is a file; pass its folder"):
        list_input(str(tmp_path / "a.mp4"))


def test_manifest_without_uri_or_path_column_or_of_unknown_format(tmp_path):
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"file": ["a.mp4"]}).to_csv(manifest, index=False)
    with pytest.raises(InputError, match=r"no `uri` \(or `path`\) column \(columns: \['file'\]\)"):
        list_input(None, manifest=str(manifest))
    (tmp_path / "m.json").write_text("[]")
    with pytest.raises(InputError, match="must be .parquet or .csv"):
        list_input(None, manifest=str(tmp_path / "m.json"))


# ---------------------------------------------------------------------------------------------------------------
# Which manifest columns travel as labels. Training and evaluation read every column ("all", the default); the
# anonymize job keeps only those the user names, by default the manifest's own id ("own_id").

PRIVATE = {"skin_dark": [1, 0], "gender_proxy": [0, 1], "identity": [3, 7]}


def private_manifest(tmp_path, **id_columns) -> str:
    root = make_folder(tmp_path / "in")
    manifest = tmp_path / "m.csv"
    table = {"uri": [str(root / "a.mp4"), str(root / "c.webm")], **id_columns, "split": ["train", "test"], **PRIVATE}
    pd.DataFrame(table).to_csv(manifest, index=False)
    return str(manifest)


@pytest.mark.parametrize(("id_columns", "want"), [
    ({"video_id": ["va", "vc"]}, [{"video_id": "va"}, {"video_id": "vc"}]),
    ({"id": ["ia", "ic"]}, [{"id": "ia"}, {"id": "ic"}]),
    ({"video_id": ["va", "vc"], "id": ["ia", "ic"]}, [{"video_id": "va"}, {"video_id": "vc"}]),  # video_id first
    ({}, [None, None]),  # no id column: no labels at all
])  # fmt: skip
def test_own_id_labels_keep_only_the_manifests_own_id(tmp_path, id_columns, want):
    v = list_input(None, manifest=private_manifest(tmp_path, **id_columns), label_columns="own_id").videos
    assert [None if s is None else json.loads(s) for s in v["labels"]] == want
    # the own id is also the listing's source_id, whatever label columns are kept
    own = [None if w is None else str(next(iter(w.values()))) for w in want]
    for columns in ("own_id", [], ["split"]):
        assert list(list_input(None, manifest=private_manifest(tmp_path, **id_columns),
                               label_columns=columns).videos["source_id"]) == own  # fmt: skip


def test_named_label_columns_are_the_only_ones_kept(tmp_path):
    manifest = private_manifest(tmp_path, video_id=["va", "vc"])
    v = list_input(None, manifest=manifest, label_columns=["split", "video_id"]).videos
    assert [json.loads(s) for s in v["labels"]] == [{"split": "train", "video_id": "va"},
                                                    {"split": "test", "video_id": "vc"}]  # fmt: skip
    assert list_input(None, manifest=manifest, label_columns=[]).videos["labels"].isna().all()
    everything = list_input(None, manifest=manifest).videos  # the default: what training and evaluation read
    assert set(json.loads(everything["labels"][0])) == {"video_id", "split", *PRIVATE}


def test_a_label_column_the_manifest_lacks_is_refused_naming_the_columns(tmp_path):
    manifest = private_manifest(tmp_path, video_id=["va", "vc"])
    with pytest.raises(InputError, match=r"no column \['skin_tone'\].*columns: \['gender_proxy', 'identity', "
                                         r"'skin_dark', 'split', 'video_id'\].*--label-column"):  # fmt: skip
        list_input(None, manifest=manifest, label_columns=["split", "skin_tone"])


def test_symbolic_links_are_followed_and_broken_ones_are_listed(tmp_path):
    """A folder of links to videos lists those videos (under the links' paths, with the targets' sizes); a link to a
    folder is walked once even when it loops back up; a dangling link and a loop of links are listed (version
    broken_link), so the decode stage gives them an error row instead of their vanishing."""
    store = tmp_path / "store"
    store.mkdir()
    (store / "a.mp4").write_bytes(b"a" * 10)
    (store / "sub").mkdir()
    (store / "sub" / "b.mp4").write_bytes(b"b" * 20)
    links = tmp_path / "links"
    links.mkdir()
    (links / "a.mp4").symlink_to(store / "a.mp4")
    (links / "more").symlink_to(store / "sub", target_is_directory=True)
    (links / "more_again").symlink_to(links, target_is_directory=True)  # a loop back to the root
    (links / "gone.mp4").symlink_to(store / "nothing.mp4")
    (links / "x.mp4").symlink_to(links / "y.mp4")
    (links / "y.mp4").symlink_to(links / "x.mp4")
    listing = list_input(str(links))
    v = listing.videos.set_index("uri")
    assert sorted(v.index) == [str(links / n) for n in ("a.mp4", "gone.mp4", "more/b.mp4", "x.mp4", "y.mp4")]
    assert v.loc[str(links / "a.mp4"), "size_bytes"] == 10 and v.loc[str(links / "more/b.mp4"), "size_bytes"] == 20
    assert (v.loc[[str(links / n) for n in ("gone.mp4", "x.mp4", "y.mp4")], "version"] == "broken_link").all()
    assert v.loc[str(links / "a.mp4"), "version"].startswith("mtime:")


def test_object_keys_with_dot_dot_are_listed_and_readable(s3_endpoint):
    """On an object store ".." is part of a key's name, not a way up: such a video is listed (processed or an error
    row, never silently skipped), and its bytes are the object's."""
    import fsspec

    from anon_core.video.source import file_size

    fs = fsspec.filesystem("s3", client_kwargs={"endpoint_url": s3_endpoint})
    if not fs.exists("dotdot"):
        fs.mkdir("dotdot")
    fs.pipe("dotdot/in/a/../b.mp4", b"x" * 7)
    fs.pipe("dotdot/in/c.mp4", b"y" * 9)
    fs.pipe("dotdot/in/.hidden/d.mp4", b"z")
    listing = list_input("s3://dotdot/in/")
    names = sorted(u.removeprefix("s3://dotdot/in/") for u in listing.videos["uri"])
    assert names == ["a/../b.mp4", "c.mp4"]
    assert file_size("s3://dotdot/in/a/../b.mp4") == 7
