"""Job configs: every shipped config validates and its header runs it; a broken config lists all its errors; the
commands read --config plus flags plus key=value overrides in that order of precedence."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from jobs.cli import main, parse_args
from jobs.jobconfigs import JOBS, command_errors, job_from_filename, job_from_header, load_job_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "jobs" / "configs").glob("*.yaml"))
# what a deployment provides (infra/k8s: the ConfigMap anonvid-paths); the GPU configs read their paths from these
DEPLOYMENT_ENV = {
    "ANONVID_INPUT": "s3://archive/videos/",
    "ANONVID_OUTPUT": "s3://features/vitb",
    "ANONVID_MODELS": "s3://models/vitb",
    "ANONVID_TRAIN_MANIFEST": "s3://archive/train/labels.parquet",
    "ANONVID_TRAIN_STORAGE": "s3://checkpoints/anonvid",
    "ANONVID_EVAL_LABELS": "s3://archive/eval/labels.parquet",
    "ANONVID_EVAL": "s3://features/eval",
}


@pytest.fixture
def deployment_env(monkeypatch):
    for k, v in DEPLOYMENT_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(REPO)  # header commands name configs relative to the repo root


def header_commands(path: Path) -> list[list[str]]:
    """The `anonvid ...` commands in a config's header comment, as argv lists."""
    commands = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        m = re.search(r"\banonvid\s.*", line)
        if m and "--config" in m.group(0):
            text = m.group(0).split(" (")[0].split(";")[0]  # prose after the command
            commands.append(shlex.split(text))
    return commands


def test_every_job_has_a_tiny_and_a_gpu_config():
    names = {p.name for p in CONFIGS}
    for job in ("anonymize", "train_encoder", "train_pruner", "train_aam", "evaluate"):
        assert f"{job}_tiny.yaml" in names and f"{job}_gpu_vitb.yaml" in names, job
    assert "benchmark_tiny.yaml" in names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_validates_and_its_header_runs_it(path, deployment_env, capsys):
    job = job_from_header(path.read_text())
    assert job is not None and job == job_from_filename(path.name), "the header's command names the config's job"
    assert main(["validate-config", str(path)]) == 0, capsys.readouterr().out
    assert f"ok ({job} config)" in capsys.readouterr().out
    commands = header_commands(path)
    assert commands, "the header gives the exact command"
    first = commands[0]
    assert first[:1 + len(job.split())] == ["anonvid", *job.split()] and f"jobs/configs/{path.name}" in first
    for argv in commands:  # every command the header shows parses and its config validates
        assert command_errors(argv) == [], argv


@pytest.mark.parametrize("path", [p for p in CONFIGS if "gpu" in p.name], ids=lambda p: p.name)
def test_gpu_configs_take_every_path_from_the_environment(path, deployment_env):
    """No bucket is written into a shipped cluster config: the deployment provides it."""
    text = path.read_text()
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    assert "s3://" not in body and "${ANONVID_" in body
    cfg = load_job_config(job_from_filename(path.name), str(path))
    for name in JOBS[job_from_filename(path.name)].path_fields:
        value = getattr(cfg, name, None)
        assert value is None or value.startswith("s3://"), (name, value)
    if "anonymize" in path.name:
        assert (cfg.clip_frames, cfg.clip_size, cfg.model.gpus_per_actor) == (16, 224, 0.25)
    if path.name.startswith("train_") and "aam" not in path.name:
        assert cfg.builder.endswith("_base") and cfg.use_gpu is True


def test_an_unset_variable_is_an_error_that_names_it(monkeypatch, capsys):
    for k in DEPLOYMENT_ENV:
        monkeypatch.delenv(k, raising=False)
    assert main(["validate-config", str(REPO / "jobs/configs/anonymize_gpu_vitb.yaml")]) == 2
    out = capsys.readouterr().out
    assert "environment variable ANONVID_INPUT is not set" in out and "override input=" in out
    # an override replaces the reference, so nothing is missing for that field
    assert main(["validate-config", str(REPO / "jobs/configs/anonymize_gpu_vitb.yaml"), "input=s3://a/b"]) == 2
    assert "ANONVID_INPUT" not in capsys.readouterr().out


def test_env_references_keep_their_yaml_types(tmp_path, monkeypatch):
    monkeypatch.setenv("EPOCHS", "7")
    monkeypatch.delenv("NOT_SET", raising=False)
    path = tmp_path / "train_pruner_x.yaml"
    path.write_text("manifest: ${NOT_SET:-/data/labels.parquet}\nstorage_path: /ckpt\nname: x\nepochs: ${EPOCHS}\n"
                    "init_from: ${NOT_SET:-null}\nout: $${literal}\n")  # fmt: skip
    cfg = load_job_config("train pruner", str(path))
    assert (cfg.manifest, cfg.epochs, cfg.init_from, cfg.out, cfg.kind) == (
        "/data/labels.parquet", 7, None, "${literal}", "pruner")


def test_a_broken_config_lists_all_its_errors(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text(
        "# anonvid anonymize --config broken.yaml\n"
        "manifest: /data/labels.parquet\n"
        "output: /data/out\n"
        "mode: prune+amm\n"  # a typo
        "clip_size: big\n"  # a wrong type
        "modle: {}\n"  # an unknown key
        "model:\n  batch_size: 0\n"  # a range error in a section
        "max_failed_fraction: 2\n"  # a range error in validate()
    )
    assert main(["validate-config", str(path)]) == 2
    out = capsys.readouterr().out
    assert "4 errors (anonymize config)" in out
    for words in ("did you mean 'prune+aam'", "clip_size: expected int", "modle: unknown key",
                  "model: need batch_size >= 1"):
        assert words in out, (words, out)
    # validate() runs only on sections whose fields converted: fix the types and the rule errors appear too
    fixed = path.read_text().replace("prune+amm", "prune+aam").replace("big", "112").replace("modle", "#")
    path.write_text(fixed.replace("batch_size: 0", "batch_size: 8"))
    assert main(["validate-config", str(path)]) == 2
    out = capsys.readouterr().out
    assert "max_failed_fraction must lie in [0, 1]" in out and "needs an encoder model" in out
    assert "needs a pruner model" in out and "needs an aam model" in out


def test_validate_config_finds_the_job_or_says_how(tmp_path, capsys):
    plain = tmp_path / "settings.yaml"
    plain.write_text("epochs: 3\n")
    assert main(["validate-config", str(plain)]) == 2
    assert "cannot tell which job" in capsys.readouterr().out
    assert main(["validate-config", str(plain), "--job", "benchmark"]) == 0
    assert main(["validate-config", str(plain), "--job", "train encoderr"]) == 2
    assert "--job must be one of" in capsys.readouterr().err
    assert main(["validate-config", str(tmp_path / "missing.yaml"), "--job", "benchmark"]) == 2
    assert "file not found" in capsys.readouterr().out


def test_job_from_header_reads_submit_and_train_commands():
    assert job_from_header("# x\n#   anonvid train aam --config a.yaml\nk: 1\n") == "train aam"
    assert job_from_header("#  anonvid submit --address http://h:8265 evaluate --config e.yaml\n") == "evaluate"
    assert job_from_header("k: 1\n# anonvid anonymize --config late.yaml\n") is None  # after the header: not it


def test_anonymize_flags_override_the_config_file_and_key_values_override_both(tmp_path):
    from jobs.commands.anonymize import config_from_args

    cfg_file = REPO / "jobs/configs/anonymize_tiny.yaml"
    args = parse_args(["anonymize", "--config", str(cfg_file)])
    cfg = config_from_args(args)
    assert (cfg.model.batch_size, cfg.output, cfg.mode) == (16, "demo_out/features-trained", "prune+aam")
    cfg = config_from_args(parse_args(["anonymize", "--config", str(cfg_file), "--batch-size", "4", "--mode", "aam"]))
    assert (cfg.model.batch_size, cfg.mode) == (4, "aam")
    cfg = config_from_args(parse_args(["anonymize", "--config", str(cfg_file), "--batch-size", "4",
                                       "model.batch_size=2", "output=/x"]))  # fmt: skip
    assert (cfg.model.batch_size, cfg.output, cfg.input) == (2, "/x", None)
    # the positional input and key=value words are told apart
    cfg = config_from_args(parse_args(["anonymize", str(tmp_path), "--config", str(cfg_file), "manifest=null"]))
    assert (cfg.input, cfg.manifest) == (str(tmp_path), None)


def test_config_errors_exit_2_for_every_job(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochz: 3\n")
    for argv in (["anonymize", "--config", str(bad)], ["train", "pruner", "--config", str(bad)],
                 ["train", "aam", "--config", str(bad)], ["benchmark", "--config", str(bad)],
                 ["evaluate", "--config", str(bad)]):  # fmt: skip
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "epochz: unknown key" in err, (argv, err)
        assert "Traceback" not in err


def test_command_errors_checks_commands_without_running_them(deployment_env):
    ok = ["anonvid", "anonymize", "--config", "jobs/configs/anonymize_gpu_vitb.yaml"]
    assert command_errors(ok) == []
    assert command_errors([*ok, "model.batch_size=8"]) == []
    assert any("unknown key" in e for e in command_errors([*ok, "model.batch=8"]))
    assert any("invalid choice" in e for e in command_errors(["anonvid", "anonymse", "--config", "x.yaml"]))
    assert any("file not found" in e for e in command_errors(["anonvid", "train", "pruner", "--config", "no.yaml"]))
    assert any("not an anonvid command" in e for e in command_errors(["ray", "job", "submit"]))
    assert command_errors(["anonvid", "submit", "train", "aam", "--config", "jobs/configs/train_aam_gpu_vitb.yaml",
                           "--run-key", "k", "epochs=3"]) == []  # fmt: skip
    assert any("unknown job" in e for e in command_errors(["anonvid", "submit", "trian", "--config", "x.yaml"]))
    assert command_errors(["anonvid", "synth", "--out", "x", "--videos", "4"]) == []  # reads no config
    assert any("--init-from is for the encoder and the pruner" in e for e in command_errors(
        ["anonvid", "train", "aam", "--config", "jobs/configs/train_aam_tiny.yaml", "--init-from", "w.pt"]))


def test_validate_config_inputs_reports_what_the_run_would_refuse(tmp_path, monkeypatch, capsys):
    """--inputs opens what a config names: a missing manifest, a label column the manifest lacks and a wrong class
    count are reported now (exit 2), not minutes into the run; a config whose inputs fit passes."""
    from anon_core.synthetic import CorpusConfig, generate_corpus

    generate_corpus(tmp_path / "demo_out" / "corpus", CorpusConfig(videos=8, size=32, frames=8), workers=1)
    monkeypatch.chdir(tmp_path)  # the tiny config's relative paths resolve here, as for a user in a fresh clone
    cfg = str(Path(__file__).parents[1] / "jobs" / "configs" / "train_encoder_tiny.yaml")
    assert main(["validate-config", "--inputs", cfg]) == 0
    assert "ok (train encoder config)" in capsys.readouterr().out
    assert main(["validate-config", "--inputs", cfg, "label_schema.action=activity", "num_classes=3"]) == 2
    assert "has no column 'activity'" in capsys.readouterr().out
    assert main(["validate-config", "--inputs", cfg, "num_classes=3"]) == 2
    assert "num_classes=3 but the manifest has 8" in capsys.readouterr().out
    assert main(["validate-config", "--inputs", cfg, "manifest=nowhere/labels.parquet"]) == 2
    assert "nowhere/labels.parquet does not exist" in capsys.readouterr().out
    assert main(["validate-config", cfg, "manifest=nowhere/labels.parquet"]) == 0  # without --inputs: the file only


def test_evaluate_key_value_words_apply_last_with_or_without_a_config_file(tmp_path, monkeypatch):
    from jobs.cli import parse_args
    from jobs.commands.evaluate import build_config

    (tmp_path / "ev.yaml").write_text("labels: l.parquet\nout: r\nmethods: [{name: raw, output: o}]\nepochs: 3\n")
    schema = "label_schema.attributes=[glasses,scarf]"
    argv = ["evaluate", "--config", str(tmp_path / "ev.yaml"), "--epochs", "7", "epochs=9", schema]
    cfg = build_config(parse_args(argv), argv[1:])
    assert cfg.epochs == 9 and cfg.label_schema.attributes == ["glasses", "scarf"]  # over the flag and the file
    argv = ["evaluate", "--config", str(tmp_path / "ev.yaml"), "--epochs", "7"]
    assert build_config(parse_args(argv), argv[1:]).epochs == 7  # a flag over the file
    # without a file: the words were dropped before, so a corpus with other attribute columns could not be evaluated
    argv = ["evaluate", "--method", "raw=o", "labels=l.parquet", "out=r", schema]
    cfg = build_config(parse_args(argv), argv[1:])
    assert (cfg.labels, cfg.out, cfg.label_schema.attributes) == ("l.parquet", "r", ["glasses", "scarf"])
    # ${NAME} in a word means the same with a file as without one (applied twice with a file: expanded both times)
    monkeypatch.setenv("REPORTS", "/reports")
    for argv in (["evaluate", "--config", str(tmp_path / "ev.yaml"), "out=${REPORTS}/r"],
                 ["evaluate", "--method", "raw=o", "labels=l.parquet", "out=${REPORTS}/r"]):  # fmt: skip
        assert build_config(parse_args(argv), argv[1:]).out == "/reports/r"
