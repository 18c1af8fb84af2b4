"""The anonymize pipeline: a video archive -> anonymized clip features in Parquet, every video exactly once.

    list (driver) -> plan segments (tasks) -> decode clips (tasks; on CPU inside the clip-model actors instead)
        -> clip models (actors: [prune] -> [pixel baseline] -> [keep pixels] -> encode f_E, one process per clip batch)
        -> gather whole videos (one actor; the AAM runs in it) -> write shards + commit markers (tasks)

Modes store the frozen encoder's f_E in every case, so outputs of different modes are comparable:
    raw = f_E(clip)   prune = f_E(masked clip)   aam = f_A(f_E(clip))   prune+aam = f_A(f_E(masked clip))
The papers' simple pixel baselines (for comparison in the evaluation): blur / down2 / down4 / blacken = f_E(transformed
clip). With keep_pixels, a small copy of the clip as it leaves the pixel stages is stored too (the pixel attacker's).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import sys
import time
import traceback
import uuid
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Literal

import pandas as pd

from anon_core.video import ClipSpec
from anon_core.video.reader import DEFAULT_BACKEND

from .modes import MODES, ModeName, mode
from .sources import Listing, list_input
from .stages.workers import ModelResources
from .store import OutputStore, RepairReport

FORMAT = "anonvid-features/1"
# Videos per block of the listing, and per plan call: the clip-model actors take a block of segments whole. Measured
# on 2 cores, 128 videos: 2 per block ran 3% slower than 8 (more tasks), so 8.
VIDEOS_PER_BLOCK = 8
# A run id names files under the output (_runs/<run_id>.json, part-<run_id>-<hash>.parquet): one path component, not
# hidden, short enough for any file system, so no run id can put a file outside the output root.
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# What a remote cluster's workers need to find the storage, never a credential: Ray writes a runtime env in plain text
# to its session logs. Credentials reach workers by their own chain (docs/credentials.md).
FORWARDED_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE")


@dataclass
class AnonymizeConfig:
    output: str
    input: str | None = None
    manifest: str | None = None
    mode: ModeName = "prune+aam"  # pipelines/modes.py
    allow_raw: bool = False
    encoder: str | None = None  # model bundle URIs (anon_core.models.bundle)
    pruner: str | None = None
    aam: str | None = None
    keep_ratio: float | None = None  # None: the pruner bundle's own
    lambda_priv: float | None = None
    keep_pixels: int = 0  # > 0: store each clip's anonymized pixels at this size (8 frames), for the pixel attacker
    # Manifest columns the output rows carry as JSON `labels`. None: only the manifest's own id (sources.ID_COLUMNS),
    # never the rest, which may be exactly what anonymizing hides (skin tone, gender, identity); [] carries none.
    label_columns: list[str] | None = None
    clip_frames: int = 16
    clip_stride: int = 2
    clip_size: int = 112
    max_clips: int | None = None  # per video; None = every clip
    backend: Literal["decord", "pyav", "torchcodec"] = DEFAULT_BACKEND
    clips_per_task: int = 32
    decode_timeout_s: float = 600.0
    # Decode inside the clip-model actors (True) or in tasks of their own (False). None: inside when the models run on
    # CPU (model.gpus_per_actor == 0), where it saves moving every clip between processes; in tasks with a GPU, so the
    # GPU never waits for a decode (pipelines/stages/clip_models.py).
    decode_in_model_actor: bool | None = None
    model: ModelResources = field(default_factory=ModelResources)
    rows_per_shard: int = 16384
    commit_interval_s: float = 30.0  # whole videos wait at most this long to be written: bounds the work a kill loses
    max_failed_fraction: float = 0.05
    retry_failed: bool = False
    address: str | None = None
    run_id: str | None = None
    lease_ttl_s: float = 300.0  # the output lease expires this long after its holder's last heartbeat
    lease_wait_s: float = 3600.0  # how long a run waits for another run of the same output to finish

    def validate(self) -> list[str]:
        """Config-level problems, all at once (preflight checks what needs the input, output and models)."""
        errors = []
        if self.input is None and self.manifest is None:
            errors.append("give the videos: input (a folder or s3:// prefix; the positional argument) or manifest")
        if self.input is not None and self.manifest is not None:
            errors.append("give input or manifest, not both")
        if self.label_columns and self.manifest is None:
            errors.append(f"label_columns (--label-column) name manifest columns, but the input is a folder: list the "
                          f"videos in a manifest (--manifest), or drop {self.label_columns}")  # fmt: skip
        if self.mode == "raw" and not self.allow_raw:
            errors.append(
                "mode raw stores un-anonymized features: exactly what anonvid exists to prevent. It is meant only as "
                "an evaluation baseline; pass --allow-raw (allow_raw: true) to confirm"
            )
        if self.keep_pixels and not self.anonymizes_pixels() and self.mode != "raw" and not self.allow_raw:
            errors.append(f"--keep-pixels with mode {self.mode} stores each clip's raw pixels (no stage of this mode "
                          "changes pixels: the AAM anonymizes features): drop --keep-pixels, use a mode that changes "
                          "pixels (prune, prune+aam, blur, down2, down4, blacken), or pass --allow-raw (allow_raw: "
                          "true) to confirm raw pixels for an evaluation (docs/privacy.md)")  # fmt: skip
        for kind, needed in self.needs().items():
            if needed and not getattr(self, kind):
                article = "an" if kind[0] in "ae" else "a"
                errors.append(f"mode {self.mode} needs {article} {kind} model: pass --{kind} PATH_OR_URI (a model "
                              "bundle)")  # fmt: skip
        if self.keep_pixels and not 8 <= self.keep_pixels <= self.clip_size:
            errors.append(f"keep_pixels (--keep-pixels) must be 0 or lie in [8, clip_size={self.clip_size}], "
                          f"got {self.keep_pixels}")  # fmt: skip
        if not 0 <= self.max_failed_fraction <= 1:
            errors.append(f"max_failed_fraction must lie in [0, 1], got {self.max_failed_fraction}")
        try:
            _ = self.spec
        except ValueError as e:
            errors.append(str(e))
        positive = {"clips_per_task": self.clips_per_task, "rows_per_shard": self.rows_per_shard,
                    "decode_timeout_s": self.decode_timeout_s}  # fmt: skip
        errors += [f"{k} must be > 0, got {v}" for k, v in positive.items() if v <= 0]
        if self.commit_interval_s < 0 or self.lease_wait_s < 0:
            errors.append("commit_interval_s and lease_wait_s must be >= 0")
        if self.lease_ttl_s < 10:
            errors.append(f"lease_ttl_s must be >= 10 (the holder renews it every ttl/5), got {self.lease_ttl_s}")
        if self.run_id is not None and not RUN_ID.fullmatch(str(self.run_id)):
            errors.append(f"run_id (--run-id) {self.run_id!r} is not a safe file name, and it names files under the "
                          "output (_runs/<run_id>.json): use 1-128 letters, digits, '.', '_' or '-', starting with a "
                          "letter or digit, e.g. --run-id nightly-2026-11-22")  # fmt: skip
        return errors

    @property
    def spec(self) -> ClipSpec:
        return ClipSpec(self.clip_frames, self.clip_stride, self.clip_size, self.max_clips)

    def needs(self) -> dict[str, bool]:
        return mode(self.mode).needs

    def decodes_in_model_actor(self) -> bool:
        if self.decode_in_model_actor is not None:
            return self.decode_in_model_actor
        return self.model.gpus_per_actor == 0

    def anonymizes_pixels(self) -> bool:
        """Whether a pixel stage changes each clip before --keep-pixels stores it (Mode.changes_pixels):
        pipeline_stages places those stages by the same Mode."""
        return mode(self.mode).changes_pixels


class PreflightError(ValueError):
    """The job cannot start; the message names the fix."""


@dataclass(frozen=True)
class Plan:
    """What one run does, fixed once built: each later fact (the lease's generation, the work left under the lease)
    makes a new Plan with dataclasses.replace, so a stage built from a plan never sees it change."""

    config: AnonymizeConfig
    listing: Listing
    todo: pd.DataFrame  # the videos this run processes
    already_done: int
    models: dict  # kind -> BundleInfo
    output_config: dict
    run_id: str
    repaired: RepairReport
    retry: dict = field(default_factory=dict)  # --retry-failed: failed videos' commit markers, forgotten at run start
    lease_generation: int | None = None  # set while the run holds the output lease; the sink checks it

    def describe(self) -> str:
        c = self.config
        stages = [_describe_stage(name, stage.ray_args()) for name, stage in pipeline_stages(self)]
        models = "\n".join(
            f"  {k}: {i.model_id} from {i.uri}" + ("" if i.trained else "  ** UNTRAINED weights **")
            for k, i in self.models.items()
        )
        return "\n".join(
            [
                f"run {self.run_id}: mode {c.mode}, clips {c.clip_frames}x{c.clip_size}px at stride {c.clip_stride}",
                f"input: {self.listing.source}: {len(self.listing.videos)} videos"
                + (f" ({self.listing.skipped_other} other files skipped)" if self.listing.skipped_other else ""),
                f"  already committed: {self.already_done}; to process now: {len(self.todo)}",
                "models:",
                models,
                "stages:",
                *(f"  {i}. {s}" for i, s in enumerate(stages, 1)),
                f"output: {c.output} (about {c.rows_per_shard} clip rows per file, written at least every "
                f"{c.commit_interval_s:g} s)",
                "  features/part-*.parquet  errors/part-*.parquet  _commits/<video_id>.json  _runs/<run_id>.json",
            ]
        )


def config_hash(output_config: dict) -> str:
    return hashlib.sha256(json.dumps(output_config, sort_keys=True).encode()).hexdigest()[:16]


def _warn_aam_features(cfg: AnonymizeConfig, aam) -> None:
    """A trained AAM fits its eraser to the features it was trained on: whole clips', or (trained with `pruner=`) the
    kept tubelets'. Fed the other kind it still runs, but leaves directions of them open (docs/methods.md, section
    2): say so, with the fix, and go on."""
    if aam is None or not aam.trained:
        return  # an untrained bundle has its own warning
    pruned = cfg.needs()["pruner"]
    trained_on = aam.extra.get("pruner")
    if pruned and not trained_on:
        print(f"WARNING: mode {cfg.mode} feeds the AAM {cfg.aam} the features of the tubelets the pruner keeps, but "
              "it was trained on whole clips', so its eraser was fitted to other features and leaves more of the "
              f"attributes: train one for this mode with `anonvid train aam pruner={cfg.pruner} ...`",
              file=sys.stderr)  # fmt: skip
    elif trained_on and not pruned:
        print(f"WARNING: mode {cfg.mode} feeds the AAM {cfg.aam} whole-clip features, but it was trained on those of "
              f"the tubelets the pruner {trained_on} keeps, so its eraser was fitted to other features and leaves "
              "more of the attributes: use an AAM trained without pruner= for this mode", file=sys.stderr)  # fmt: skip


def preflight(cfg: AnonymizeConfig) -> Plan:
    """Everything that can fail before any work starts, failing fast with the fix in the message."""
    from anon_core.models.bundle import load_bundle

    problems = cfg.validate() if cfg.mode in MODES else [f"--mode must be one of {', '.join(MODES)}, got {cfg.mode!r}"]
    if problems:
        raise PreflightError("; ".join(problems))
    # Relative local paths mean this process's working directory: the stages' workers on a running cluster
    # (RAY_ADDRESS) have their own, so every path the plan hands them is made absolute here.
    cfg = replace(cfg, **{k: os.path.abspath(v) for k in ("input", "manifest", "output", "encoder", "pruner", "aam")
                          if isinstance(v := getattr(cfg, k), str) and v and "://" not in v})  # fmt: skip
    spec = cfg.spec
    labels = "own_id" if cfg.label_columns is None else cfg.label_columns
    listing = list_input(cfg.input, cfg.manifest, label_columns=labels)
    store = OutputStore(cfg.output)
    store.check_writable()

    models, errors = {}, []
    for kind, needed in cfg.needs().items():
        uri = getattr(cfg, kind)
        if not needed:
            continue
        try:
            model, info = load_bundle(uri, expect_kind=kind)
        except (FileNotFoundError, ValueError) as e:
            errors.append(str(e))
            continue
        models[kind] = info
        if kind in ("encoder", "pruner"):
            frames, size = info.input.get("num_frames"), info.input.get("size")
            if (frames, size) != (spec.num_frames, spec.size):
                errors.append(
                    f"the {kind} {uri} takes {frames} frames at {size}px, but clips are {spec.num_frames} frames at "
                    f"{spec.size}px: pass --clip-frames {frames} --clip-size {size}, or a {kind} built for the clips"
                )
        if kind == "pruner" and cfg.keep_ratio is not None:
            try:
                model._keep_ratios(cfg.keep_ratio)
            except ValueError as e:
                errors.append(f"--keep-ratio: {e}")
        if kind == "encoder":
            encoder_dim = model.embed_dim
            if cfg.needs()["pruner"] and getattr(model, "patch_embed", None) is None:
                errors.append(
                    f"mode {cfg.mode} needs a tubelet ViT encoder (a video_vit_* bundle), and {uri} is "
                    f"{info.builder}: the pruner blacks out whole tubelets, which only a ViT on the pruner's tubelet "
                    "grid sees as dropped tokens (other encoders mix the black into their neighbours' features). Use "
                    "this encoder with --mode aam, or pass a video_vit encoder for pruning"
                )
    if "aam" in models and "encoder" in models and models["aam"].extra.get("embed_dim") != encoder_dim:
        errors.append(
            f"the AAM {cfg.aam} works on {models['aam'].extra.get('embed_dim')}-d features but the encoder "
            f"{cfg.encoder} makes {encoder_dim}-d ones: use an AAM trained on this encoder's features"
        )
    if errors:
        raise PreflightError("model check failed:\n  - " + "\n  - ".join(errors))
    _warn_aam_features(cfg, models.get("aam"))

    output_config = {
        "format": FORMAT,
        "mode": cfg.mode,
        "clip": {"frames": spec.num_frames, "stride": spec.stride, "size": spec.size, "max_clips": spec.max_clips},
        "models": {k: i.model_id for k, i in sorted(models.items())},
        "keep_ratio": cfg.keep_ratio,
        "lambda_priv": cfg.lambda_priv,
    }
    if cfg.keep_pixels:  # only when asked, so outputs without pixels keep their earlier config hash
        output_config["keep_pixels"] = cfg.keep_pixels
    if cfg.label_columns is not None:  # likewise: one output holds one set of label columns
        output_config["label_columns"] = list(cfg.label_columns)
    output_config["config_hash"] = config_hash(output_config)
    run_id = cfg.run_id or f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"

    plan = Plan(cfg, listing, listing.videos, 0, models, output_config, run_id, RepairReport())
    return _plan_work(plan, store)  # read-only here (a dry run writes nothing); again under the lease before the run


def _plan_work(plan: Plan, store: OutputStore) -> Plan:
    """The videos to process now: every listed video without a commit marker (with --retry-failed, failed ones too).
    Incremental runs over a growing prefix rest on this: a video's id changes with its bytes (pipelines.sources)."""
    cfg, videos = plan.config, plan.listing.videos
    done = store.committed()
    failed = {}
    if cfg.retry_failed and done:
        failed = {v: rec for v, rec in store.read_commits(sorted(done)).items() if rec.get("status") == "failed"}
        done -= set(failed)
    todo = videos[~videos["video_id"].isin(done)].reset_index(drop=True)
    return replace(plan, todo=todo, already_done=int(videos["video_id"].isin(done).sum()), retry=failed)


def pipeline_stages(plan: Plan, counter=None) -> list[tuple[str, object]]:
    """The stages, in order: (name, stage), each stage of the one shape of pipelines/stages/workers.py. `counter`: a
    ClipCounter actor the decode and encode steps report their clips to."""
    from .stages import ApplyAam, ClipModels, DecodeClips, GatherVideos, PlanSegments, WriteShards

    cfg, res, m = plan.config, plan.config.model, mode(plan.config.mode)
    row_fields = {
        "mode": cfg.mode,
        "encoder_id": plan.models["encoder"].model_id,
        "pruner_id": plan.models["pruner"].model_id if "pruner" in plan.models else "",
        "aam_id": plan.models["aam"].model_id if "aam" in plan.models else "",
        "config_hash": plan.output_config["config_hash"],
    }
    prunes = m.needs["pruner"]
    fused = cfg.decodes_in_model_actor()
    decode = DecodeClips(cfg.spec, cfg.backend, cfg.decode_timeout_s, segment_clips=cfg.clips_per_task, counter=counter)
    if fused:  # its clips go straight to the models: one model batch per block
        decode = replace(decode, clips_per_block=res.batch_size)
    # every step that touches a clip's pixels runs in one actor: clips never cross the object store between them
    clip_models = ClipModels(
        cfg.encoder, cfg.pruner if prunes else None, cfg.keep_ratio, cfg.lambda_priv,
        baseline=cfg.mode if m.baseline else None, keep_pixels=cfg.keep_pixels, resources=res, counter=counter,
        decode=decode if fused else None,
    )  # fmt: skip
    stages = [
        ("plan segments", PlanSegments(cfg.spec, cfg.clips_per_task, timeout_s=min(cfg.decode_timeout_s, 120.0),
                                       videos_per_call=VIDEOS_PER_BLOCK)),  # fmt: skip
        *([] if fused else [("decode clips", decode)]),
        (clip_models.describe(), clip_models),
    ]
    # the AAM runs in the gather actor, on CPU with one thread: a small adapter over features (gather.py)
    aam = ApplyAam(cfg.aam, replace(res, cpus_per_actor=1.0, gpus_per_actor=0.0)) if m.needs["aam"] else None
    gather = GatherVideos(len(plan.todo), cfg.rows_per_shard, cfg.commit_interval_s, aam=aam)
    stages.append(("gather whole videos" + (" -> AAM" if aam else ""), gather))
    stages.append(("write shards", WriteShards(cfg.output, plan.run_id, row_fields,
                                               lease_generation=plan.lease_generation)))  # fmt: skip
    return stages


def _describe_stage(name: str, kw: dict) -> str:
    """One line of the plan, read from the same arguments the pipeline is built with."""
    compute = kw.get("compute")
    how = f"{compute.min_size}-{compute.max_size} actors" if compute is not None else "tasks"
    gpu = f", {kw['num_gpus']} GPU" if kw.get("num_gpus") else ""
    batch = kw.get("batch_size")
    per_call = "a whole block per call" if batch is None else f"{batch} rows per call"
    pinned = " on the head node" if "node:__internal_head__" in kw.get("resources", {}) else ""
    return f"{name}: {how}{pinned}, {kw.get('num_cpus', 1)} CPU{gpu}, {per_call}"


def build_pipeline(plan: Plan, counter=None):
    """The stages, in order. Nothing runs until the dataset is iterated."""
    import ray.data

    from .stages.workers import ray_map

    todo = plan.todo
    n = VIDEOS_PER_BLOCK
    ds = ray.data.from_pandas([todo.iloc[i : i + n] for i in range(0, len(todo), n)])
    for _, stage in pipeline_stages(plan, counter):
        fn, kwargs = ray_map(stage)
        ds = ds.map_batches(fn, **kwargs)
    return ds


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run, raised after its record is written: the message says what the run committed."""

    def __init__(self, summary: dict) -> None:
        self.summary = summary
        s = summary
        super().__init__(f"{s['videos_ok']} videos ok and {s['videos_failed']} failed were committed before the "
                         f"stop ({s['clips']} clips); {s['videos_incomplete']} were not and a re-run does them. "
                         f"Record: {s['run_record']}")  # fmt: skip


def connect(address: str | None = None) -> None:
    """RAY_ADDRESS / --address when given, else a local Ray. Ray logs a runtime env in plain text, so no credential
    goes there: a local Ray's workers inherit this process's environment, credentials included; a cluster's workers
    use their own credential chain and get only the FORWARDED_ENV settings (docs/credentials.md)."""
    import ray

    if ray.is_initialized():
        return
    # Workers' and Ray's own lines (progress bars, actor and placement-group chatter) stay in Ray's log folder:
    # the jobs print their own progress. `--verbose` (ANONVID_VERBOSE=1) forwards them to this terminal too.
    verbose = os.environ.get("ANONVID_VERBOSE", "") not in ("", "0")
    import logging

    # and Ray's own INFO and WARNING lines in this process (start-up, executor plans): errors are kept. Ray Data sets
    # its loggers up when first imported, so it is imported first: a later import would undo the levels set here.
    import ray.data  # noqa: F401

    level = logging.INFO if verbose else logging.ERROR
    for name in ("ray", "ray.data", "ray.train"):
        logging.getLogger(name).setLevel(level)
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:  # ray.init starts the raylet from this process, and every worker from the raylet
        # A run holds about seven actor processes (clip models, gather, the progress counter, Ray Data's own).
        # Ray keeps idle workers up to a soft limit of one per CPU, and those count: the plan tasks' workers were
        # killed a second after they went idle, and the first write task then waited ~2 s for a new process (and its
        # imports). Measured on 2 cores, 16 videos, the same script run with and without it: 18.5 s -> 16.6 s a run.
        soft_limit = (os.cpu_count() or 1) + 8
        ray.init(include_dashboard=False, log_to_driver=verbose, logging_level=level,
                 _system_config={"num_workers_soft_limit": soft_limit})  # fmt: skip
        from .reaper import start_reaper

        start_reaper()  # this Ray ends with this job, even a killed one (pipelines/reaper.py)
        return
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    ray.init(address=address, runtime_env={"env_vars": env} if env else None, log_to_driver=verbose,
             logging_level=level)


def _check_gpus(cfg: AnonymizeConfig) -> None:
    """Actors asking for GPUs a cluster does not have would wait for ever; say so (an autoscaler may still add some)."""
    import ray

    if cfg.model.gpus_per_actor > 0 and not ray.cluster_resources().get("GPU", 0):
        print(
            f"WARNING: --gpus-per-actor {cfg.model.gpus_per_actor} but the cluster has no GPU now; the model actors "
            "wait until an autoscaler adds one. Drop --gpus-per-actor to run on CPU.",
            file=sys.stderr,
        )


def _check_cpus(plan: Plan) -> None:
    """Model actors hold their CPUs for the whole run. If they leave less than one task's share, the plan and decode
    tasks are never scheduled and the run waits for ever without a word: refuse on a fixed (local) Ray, warn on a
    cluster, where an autoscaler may still add nodes."""
    import ray

    stages = [stage.ray_args() for _, stage in pipeline_stages(plan)]
    held = sum(kw["compute"].min_size * kw.get("num_cpus", 1) for kw in stages if kw.get("compute") is not None)
    task = max(kw.get("num_cpus", 1) for kw in stages if kw.get("compute") is None)
    total = ray.cluster_resources().get("CPU", 0)
    if held + task <= total + 1e-9:
        return
    m = plan.config.model
    msg = (f"the model actors hold {held:g} of the cluster's {total:g} CPUs (min_actors {m.pool_min} x "
           f"cpus_per_actor {m.cpus_per_actor:g} per model stage), leaving less than the {task:g} CPU a decode task "
           f"needs, so decoding would never start: lower model.cpus_per_actor or model.min_actors until the model "
           f"stages hold at most {total - task:g} CPUs together, or add CPUs")  # fmt: skip
    if plan.config.address or os.environ.get("RAY_ADDRESS"):
        print(f"WARNING: {msg}; the run waits until an autoscaler adds some", file=sys.stderr)
    else:
        raise PreflightError(msg)


def run_pipeline(plan: Plan, progress=None, log=None) -> dict:
    """Execute a preflighted plan under the output's lease; returns the summary (also OUT/_runs/<run_id>.json)."""
    from .lease import OutputLease

    cfg = plan.config
    if len(plan.todo):  # before the lease and the run record: a run that cannot start is a config error
        connect(cfg.address)
        _check_cpus(plan)
    log = sys.stderr if log is None else log
    store = OutputStore(cfg.output)
    listed_todo = len(plan.todo)
    with OutputLease(store, plan.run_id, cfg.lease_ttl_s, cfg.lease_wait_s, log=log) as lease:
        # Under the lease nobody else writes here: repair a killed run's leftovers, then see what is left to do
        # (a run we waited for may have committed some of our videos).
        store.claim(plan.output_config)
        plan = _plan_work(replace(plan, lease_generation=lease.generation, repaired=store.repair()), store)
        if lease.waited_s >= 1 or len(plan.todo) != listed_todo:
            print(f"lease taken after {lease.waited_s:.0f} s; to process now: {len(plan.todo)} videos "
                  f"({plan.already_done} already committed)", file=log)  # fmt: skip
        started = datetime.now(UTC)
        store.write_run(plan.run_id, {"run_id": plan.run_id, "status": "running", "started": started.isoformat(),
                                      "output": cfg.output, "input": plan.listing.source, "mode": cfg.mode,
                                      "videos_listed": len(plan.listing.videos),
                                      "videos_skipped_committed": plan.already_done,
                                      "videos_to_process": len(plan.todo), "lease_generation": lease.generation,
                                      "host": socket.gethostname()})  # fmt: skip
        store.forget_failed(plan.retry)
        summary = _execute(plan, store, lease, progress, started)
    return summary


def _clip_counter(progress, every_s: float = 1.0):
    """(a ClipCounter actor, an Event that stops its reader): a thread hands the clips decoded and encoded so far to
    `progress.counts` every `every_s`, so the line moves before the first video is committed. No counter (None)
    when Ray is not up: the pipeline then fails on its own, and this must not start a Ray of its own first."""
    import threading

    import ray

    from .stages.rows import ClipCounter

    stop = threading.Event()
    if not ray.is_initialized():
        return None, stop
    counter = ray.remote(num_cpus=0)(ClipCounter).remote()

    def read() -> None:
        while not stop.wait(every_s):
            try:
                progress.counts(ray.get(counter.get.remote(), timeout=10))
            except Exception:  # a slow or gone actor costs a stale line, never the run
                continue

    if hasattr(progress, "counts"):
        threading.Thread(target=read, name="anonvid-progress", daemon=True).start()
    return counter, stop


def _final_counts(counter) -> dict[str, int]:
    """The counter's totals once the pipeline is done: the workers' last adds may still be in flight, so read until
    two readings agree; {} when the actor cannot answer."""
    import ray

    if counter is None:
        return {}
    last = None
    try:
        for _ in range(10):
            now = ray.get(counter.get.remote(), timeout=30)
            if now == last:
                break
            last = now
            time.sleep(0.2)
        return last or {}
    except Exception:
        return {}


def _execute(plan: Plan, store: OutputStore, lease, progress, started: datetime) -> dict:
    import ray.data

    cfg = plan.config
    t0 = time.perf_counter()
    counts = {"ok": 0, "failed": 0}
    clips, errors_by_type, seconds = 0, {}, {}
    seen: set[str] = set()
    aborted = trace = None
    by_stage: dict[str, int] = {}
    interrupted = False
    if len(plan.todo):
        connect(cfg.address)
        _check_gpus(cfg)
        ray.data.DataContext.get_current().enable_progress_bars = False  # ours is per video, below
        if progress:
            progress(0, len(plan.todo))  # the clock starts with the work, so the first rate is a true one
        counter, clip_counts = _clip_counter(progress)
        try:
            for batch in build_pipeline(plan, counter).iter_batches(batch_size=None, batch_format="numpy"):
                lease.check()  # a run that lost its lease stops here too, not only in the sink
                for i, vid in enumerate(batch["video_id"]):
                    if vid in seen:
                        continue
                    seen.add(vid)
                    counts[batch["status"][i]] += 1
                    clips += int(batch["num_clips"][i])
                    if batch["error_type"][i]:
                        errors_by_type[batch["error_type"][i]] = errors_by_type.get(batch["error_type"][i], 0) + 1
                    for k in batch:
                        if k.startswith("t_"):
                            seconds[k] = seconds.get(k, 0.0) + float(batch[k][i])
                if progress:
                    progress(len(seen), len(plan.todo))
        except Exception as e:  # the run stops, but what it committed stays committed and is recorded below
            aborted = f"{type(e).__name__}: {e}"
            trace = traceback.format_exc()  # where it failed: Ray's errors carry the worker's traceback in it too
        except KeyboardInterrupt:  # Ctrl-C: the same, and the record says what this run did before it stopped
            aborted, interrupted = "interrupted (Ctrl-C)", True
        finally:
            clip_counts.set()
        by_stage = _final_counts(counter)
    elapsed = time.perf_counter() - t0
    repaired_after = store.repair()  # a retried sink task may have left a shard its videos were re-committed from
    committed = store.committed()
    incomplete = sorted(set(plan.todo["video_id"]) - committed)
    processed = counts["ok"] + counts["failed"]
    failed_fraction = counts["failed"] / processed if processed else 0.0
    summary = {
        "run_id": plan.run_id,
        "mode": cfg.mode,
        "input": plan.listing.source,
        "output": cfg.output,
        "videos_listed": len(plan.listing.videos),
        "videos_skipped_committed": plan.already_done,
        "videos_ok": counts["ok"],
        "videos_failed": counts["failed"],
        "videos_incomplete": len(incomplete),
        "errors_by_type": errors_by_type,
        "clips": clips,
        "clips_by_stage": by_stage,  # clips decoded and encoded by this run (a retried task's count twice)
        "elapsed_s": round(elapsed, 3),
        "videos_per_s": round(processed / elapsed, 3) if elapsed > 0 and processed else 0.0,
        "clips_per_s": round(clips / elapsed, 3) if elapsed > 0 and clips else 0.0,
        "stage_busy_s": {k[2:]: round(v, 3) for k, v in sorted(seconds.items())},
        "failed_fraction": round(failed_fraction, 4),
        "max_failed_fraction": cfg.max_failed_fraction,
        "repaired": {"before": asdict(plan.repaired), "after": asdict(repaired_after)},
        "models": {k: {"id": i.model_id, "uri": i.uri, "trained": i.trained} for k, i in plan.models.items()},
        "config": _jsonable(asdict(cfg)),
        "output_config": plan.output_config,
        "started": started.isoformat(),
        "finished": datetime.now(UTC).isoformat(),
        "lease_generation": plan.lease_generation,
        "host": socket.gethostname(),
    }
    if aborted:
        summary["aborted"] = aborted[:4000]
        if trace:
            summary["traceback"] = trace[-20000:]  # its end names the error; the record stays small
    summary["ok"] = not incomplete and not aborted and failed_fraction <= cfg.max_failed_fraction
    summary["status"] = ("interrupted" if interrupted else "aborted" if aborted else "incomplete" if incomplete else
                         "ok" if summary["ok"] else "failed")  # fmt: skip
    summary["run_record"] = store.write_run(plan.run_id, summary)
    if interrupted:
        raise RunInterrupted(summary)
    if incomplete:
        summary["incomplete_sample"] = incomplete[:10]
    return summary


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))
