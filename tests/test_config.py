"""jobs.config: YAML + overrides -> dataclass, with every error reported at once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import fsspec
import pytest

from jobs.config import ConfigError, config_errors, dump_config, load_config


@dataclass
class Optim:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: Literal["cosine", "constant"] = "cosine"

    def validate(self) -> list[str]:
        return [] if self.lr > 0 else [f"lr must be > 0, got {self.lr}"]


@dataclass
class Head:
    name: str
    classes: int = 2


@dataclass
class Model:
    name: str  # required: no default
    depth: int = 12
    dropout: float | None = None
    keep_ratio: list[float] = field(default_factory=lambda: [0.9, 0.7])


@dataclass
class Job:
    model: Model
    mode: Literal["aam", "prune"] = "aam"
    optim: Optim = field(default_factory=Optim)
    resume: bool = False
    out: str | None = None
    stages: tuple[int, ...] = (1, 2)
    heads: list[Head] = field(default_factory=list)


def write(tmp_path, text: str, name: str = "job.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_dump_then_load_round_trips(tmp_path):
    cfg = Job(model=Model(name="vit", depth=4, dropout=0.1, keep_ratio=[0.5]), mode="prune",
              optim=Optim(lr=1e-10, betas=(0.8, 0.9), schedule="constant"), resume=True, out="s3://b/run",
              stages=(3, 4, 5), heads=[Head("age", 5), Head("yes")])
    text = dump_config(cfg)
    assert load_config(Job, write(tmp_path, text)) == cfg
    assert "1.0e-10" in text  # floats keep a dot, so YAML reads them back as floats


def test_overrides_reach_nested_fields_lists_nulls_and_bools(tmp_path):
    path = write(tmp_path, "model:\n  name: vit\n  dropout: 0.2\n")
    cfg = load_config(Job, path, ["model.depth=4", "model.keep_ratio=[0.5,0.25]", "model.dropout=null",
                                  "resume=true", "optim.lr=1e-4", "mode=prune", "heads=[{name: age}]"])
    assert cfg.model == Model(name="vit", depth=4, dropout=None, keep_ratio=[0.5, 0.25])
    assert cfg.resume is True and cfg.mode == "prune" and cfg.heads == [Head("age")]
    assert cfg.optim.lr == 1e-4 and type(cfg.optim.lr) is float  # "1e-4" is a YAML string; a float field takes it


def test_overrides_alone_need_no_file():
    cfg = load_config(Job, None, ["model.name=vit", "optim.lr=3", "stages=[7]"])
    assert cfg.model.name == "vit" and cfg.optim.lr == 3.0 and type(cfg.optim.lr) is float and cfg.stages == (7,)


def test_overrides_apply_to_a_config_built_in_code(monkeypatch):
    # what a command whose required fields come from flags (anonvid evaluate) does with its key=value words
    from jobs.config import apply_overrides

    monkeypatch.setenv("X", "/data")
    base = Job(model=Model(name="${X}"), heads=[Head("age", 5)])  # a flag's value: never expanded
    words = ["model.depth=4", "optim.betas=[0.5,0.6]", 'heads=[{name: "$${X}"}]', "out=${X}/o"]
    cfg = apply_overrides(base, words)
    assert cfg.model == Model(name="${X}", depth=4) and cfg.optim.betas == (0.5, 0.6)
    assert base.model.depth == 12  # the base is left as it was
    # the words' values expand as load_config's do ($${ is a literal ${); the config's own strings stay as they were
    assert (cfg.out, cfg.heads) == ("/data/o", [Head("${X}")])
    assert cfg == load_config(Job, None, ["model.name=$${X}", *words])
    with pytest.raises(ConfigError) as e:
        apply_overrides(base, ["model.dept=4", "optim.lr=0", "mode=x"])
    assert len(e.value.errors) == 3 and "did you mean 'depth'" in str(e.value) and "lr must be > 0" in str(e.value)


def test_every_error_is_reported_at_once(tmp_path):
    path = write(tmp_path, """\
mode: amm             # not one of the Literal values
reume: true           # typo for resume
stages: [1, two]      # wrong type inside a tuple
model:
  depth: 4.5          # float where an int is expected; name (required) is missing
optim:
  lr: -0.1            # Optim.validate(): must be > 0
""")
    with pytest.raises(ConfigError) as e:
        load_config(Job, path, ["foo"])
    lines = str(e.value).splitlines()
    assert lines == e.value.errors == config_errors(Job, path, ["foo"])
    assert all(line.startswith(f"{path}: ") for line in lines)
    expected = [
        "mode: must be one of 'aam', 'prune'; got str 'amm' (did you mean 'aam'?)",
        "reume: unknown key (did you mean 'resume'?)",
        "stages[1]: expected int, got str 'two'",
        "model.depth: expected int, got float 4.5",
        "model.name: missing required field (str)",
        "optim: lr must be > 0, got -0.1",
        "override 'foo': expected key=value, e.g. model.lr=3e-4",
    ]
    assert sorted(line.removeprefix(f"{path}: ") for line in lines) == sorted(expected)


@pytest.mark.parametrize("text, overrides, message", [
    ("model: {name: 3}", [], "model.name: expected str, got int 3 (quote it to make it a string)"),
    ("model: {name: vit, depth: true}", [], "model.depth: expected int, got bool True"),
    ("model: {name: vit, depth: null}", [], "model.depth: expected int, got null"),
    ("model: {name: vit}\nresume: 1", [], "resume: expected bool, got int 1"),
    ("model: {name: vit}\noptim: {lr: fast}", [], "optim.lr: expected float, got str 'fast'"),
    ("model: {name: vit}\noptim: {betas: [0.9]}", [], "optim.betas: expected 2 items (tuple[float, float]), got 1"),
    ("model: {name: vit, keep_ratio: 0.5}", [], "model.keep_ratio: expected a list (list[float]), got float 0.5"),
    ("model: vit", [], "model: expected a section (Model fields), got str 'vit'"),
    ("model: {name: vit}\nheads: [{classes: 3}]", [], "heads[0].name: missing required field (str)"),
    ("model: {name: vit}\nzzz: 1", [], "zzz: unknown key (known keys: model, mode, optim, resume, out, stages, heads)"),
    ("model: {name: vit}", ["model.name.x=1"], "override 'model.name.x=1': model.name is not a section"),
    ("model: {name: vit}", ["out=[oops"], "override 'out=[oops': the value is not valid YAML"),
    ("model: [unclosed", [], "not valid YAML: line 1, column 17: expected ',' or ']'"),
])
def test_each_error_names_the_field_and_the_fix(tmp_path, text, overrides, message):
    path = write(tmp_path, text)
    errors = config_errors(Job, path, overrides)
    assert len(errors) == 1 and errors[0].startswith(f"{path}: {message}"), errors


def test_yaml_that_is_not_a_mapping_is_rejected(tmp_path):
    path = write(tmp_path, "- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping of keys to values, got list"):
        load_config(Job, path)


def test_missing_file_names_the_path(tmp_path):
    path = str(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError) as e:
        load_config(Job, path, ["bad"])
    assert e.value.errors == [f"{path}: file not found",
                              f"{path}: override 'bad': expected key=value, e.g. model.lr=3e-4"]


def test_empty_file_means_defaults(tmp_path):
    assert load_config(Optim, write(tmp_path, "")) == Optim()


def test_fsspec_uri(tmp_path):
    fs = fsspec.filesystem("memory")
    fs.pipe("/test_config/job.yaml", b"model: {name: vit}\nmode: prune\n")
    try:
        assert load_config(Job, "memory://test_config/job.yaml") == Job(model=Model(name="vit"), mode="prune")
    finally:
        fs.rm("/test_config", recursive=True)


@dataclass
class BadDefault:
    optim: Optim = field(default_factory=lambda: Optim(lr=-1.0))


def test_validate_also_runs_on_defaults_not_given_in_the_file():
    assert config_errors(BadDefault, None) == ["<no file>: optim: lr must be > 0, got -1.0"]


@dataclass
class OptionalSection:
    optim: Optim | None = None


def test_validate_runs_inside_an_optional_section_started_by_an_override():
    assert load_config(OptionalSection, None, ["optim.lr=0.5"]).optim == Optim(lr=0.5)
    assert config_errors(OptionalSection, None, ["optim.lr=-2"]) == ["<no file>: optim: lr must be > 0, got -2.0"]


@dataclass
class Unsupported:
    table: dict[str, int] = field(default_factory=dict)


def test_unsupported_annotation_is_a_programming_error():
    with pytest.raises(TypeError, match="unsupported annotation"):
        load_config(Unsupported, None, ["table={a: 1}"])
