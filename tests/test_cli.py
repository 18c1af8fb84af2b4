"""The `anonvid` entrypoint, run for real on tiny generated data."""

import json
import os
import subprocess
import sys

import pandas as pd
import pyarrow.parquet as pq
import pytest

from anon_core.synthetic import ATTRIBUTES
from jobs.cli import main


def test_synth_writes_videos_and_labels(tmp_path, capsys):
    out = tmp_path / "corpus"
    rc = main(["synth", "--out", str(out), "--videos", "10", "--seed", "3", "--size", "64", "--frames", "16",
               "--workers", "1"])
    assert rc == 0
    labels = pd.read_parquet(out / "labels.parquet")
    assert len(labels) == 10 and set(ATTRIBUTES) <= set(labels.columns)
    assert all((out / p).stat().st_size > 0 for p in labels["path"])
    assert json.loads((out / "corpus.json").read_text())["config"]["seed"] == 3
    assert "wrote 10 videos" in capsys.readouterr().out


def test_synth_rejects_bad_config_with_exit_code_2(tmp_path, capsys):
    rc = main(["synth", "--out", str(tmp_path), "--videos", "0", "--seed", "1", "--size", "63"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "videos=0" in err and "size=63" in err  # every error at once


def test_probe_reports_good_and_bad_files(tmp_path, indexed_videos, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    rc = main(["probe", "--decode", "--frames", "4", str(indexed_videos["h264"]), str(bad)])
    assert rc == 1  # one failed
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows[0]["num_frames"] == 64 and rows[0]["clips"] == 8
    assert rows[1]["error"] == "not_a_video"


def test_demo_runs_through_the_console_script(tmp_path, ray_session):
    """What `make demo` runs, through the installed `anonvid` script, on a small corpus (on the session's Ray
    through RAY_ADDRESS, which the job honours like any other: saves two cluster start-ups)."""
    exe = sys.executable.replace("/python", "/anonvid")
    cmd = [exe, "demo", "--out", str(tmp_path / "demo"), "--videos", "8", "--workers", "1"]
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr
    assert "videos: 8 ok, 0 failed, 0 unfinished, 0 already done; 8 clips" in res.stdout  # one 16x2 clip each
    assert "UNTRAINED" in res.stdout and "UNTRAINED" in res.stderr  # the plan and the summary both say so
    out = tmp_path / "demo" / "output"
    table = pq.read_table(out / "features")
    assert table.num_rows == 8 and table.column("video_id").to_pandas().nunique() == 8
    (run,) = list((out / "_runs").glob("*.json"))
    assert json.loads(run.read_text())["videos_ok"] == 8
    assert (out / "preview" / "contact_sheet.png").stat().st_size > 0
    # `make demo` twice: the second run finds every video committed and does nothing
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr
    assert "videos: 0 ok, 0 failed, 0 unfinished, 8 already done; 0 clips" in res.stdout
    assert pq.read_table(out / "features").num_rows == 8


@pytest.mark.parametrize("cmd", ["synth", "probe", "anonymize", "demo"])
def test_every_command_has_examples_in_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    assert "examples:" in capsys.readouterr().out


def test_version_names_the_installed_package(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"anonvid {version('anonvid')}"


def test_a_mistyped_flag_shows_that_commands_usage(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "encoder", "--confg", "x.yaml"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "usage: anonvid train" in err and "unrecognized arguments: --confg" in err


def test_every_flag_of_every_command_has_help():
    import argparse

    from jobs.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = [f"{name} {a.option_strings or a.dest}" for name, p in sub.choices.items() for a in p._actions
               if not a.help and not isinstance(a, argparse._HelpAction)]  # fmt: skip
    assert not missing


def test_synth_into_a_corpus_made_another_way_is_refused_naming_the_differences(tmp_path, capsys):
    args = ["synth", "--out", str(tmp_path / "c"), "--videos", "4", "--size", "32", "--frames", "8", "--workers", "1"]
    assert main(args) == 0
    assert main([*args[:4], "6", *args[5:]]) == 2
    err = capsys.readouterr().err
    assert "anonvid synth: " in err and "videos=4 there, 6 now" in err and "Traceback" not in err
    assert main(args) == 0  # the same settings again: the corpus is complete, nothing to redo


def test_every_command_that_reports_takes_json(tmp_path, capsys):
    import argparse

    from jobs.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    with_json = {name for name, p in sub.choices.items() if any("--json" in a.option_strings for a in p._actions)}
    assert {"synth", "anonymize", "train", "evaluate", "benchmark", "bench", "runs"} <= with_json
    assert main(["synth", "--out", str(tmp_path / "c"), "--videos", "4", "--size", "32", "--frames", "8",
                 "--workers", "1", "--json"]) == 0  # fmt: skip
    doc = json.loads(capsys.readouterr().out)  # stdout is the document and nothing else
    assert doc["videos"] == 4 and sum(doc["splits"].values()) == 4 and set(doc["attribute_prevalence"]) == set(
        ATTRIBUTES
    )


def test_config_flags_come_from_the_config_fields():
    """A flag's type, choices and shown default are the config field's (one source); flags not given override
    nothing; only the command being run imports its config (the others' would cost seconds of imports)."""
    import dataclasses
    import subprocess
    import sys

    from jobs.cli import build_parser, parse_args
    from jobs.commands.anonymize import FLAGS
    from pipelines.anonymize import AnonymizeConfig

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["anonymize"]
    flags = {a.dest: a for a in sub._actions}
    defaults = {f.name: f.default for f in dataclasses.fields(AnonymizeConfig)}
    assert flags["clip_size"].type is int and f"(default {defaults['clip_size']})" in flags["clip_size"].help
    assert flags["backend"].choices == ["decord", "pyav", "torchcodec"] and flags["label_column"].type is str
    assert f"(default {defaults['max_failed_fraction']})" in flags["max_failed_fraction"].help
    assert set(FLAGS) <= set(flags) and all(flags[d].default is None for d in FLAGS)
    args = parse_args(["anonymize", "vids", "--out", "o", "--clip-size", "64", "--label-column", "a", "--label-column",
                       "b"])  # fmt: skip
    from jobs.commands.anonymize import job_config

    assert job_config(args)[2] == ["input=\"vids\"", "label_columns=[\"a\", \"b\"]", "output=\"o\"", "clip_size=64"]
    code = "import sys; from jobs.cli import parse_args; parse_args(['bench', '--tiny']); print(sorted(sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "jobs.recipes.bench" in loaded and "torch" not in loaded and "pipelines.anonymize" not in loaded
