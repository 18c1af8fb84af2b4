"""The one stage protocol, and per-process helpers for the stages.

Every stage is one shape: a dataclass whose fields are its knobs, `ray_args()` (its resources and batching: the
keyword arguments of `Dataset.map_batches`) and `__call__(batch) -> batch`. A stage that keeps state or a model
(an actor stage: its `ray_args()` names a `compute` pool) also has `setup()`, which loads what it needs once; Ray
calls it when an actor starts, and `__call__` calls it on first use, so a stage called on a plain dict (the tests,
the plain loop) works the same. `ray_map(stage)` is the one place that turns a stage into map_batches arguments.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from anon_core.video import DecoderProcess

_DECODERS: dict[int, DecoderProcess] = {}


def decoder() -> DecoderProcess:
    """This worker process's one decoder child, shared by the plan and decode tasks it runs (started on first use;
    a crash or hang replaces it). Each call passes its own timeout."""
    pid = os.getpid()  # keyed by process: a forked child must not talk to its parent's decoder
    if pid not in _DECODERS:
        _DECODERS[pid] = DecoderProcess()
    return _DECODERS[pid]


@dataclass(frozen=True)
class ModelResources:
    """How a model stage's actor pool runs. gpus_per_actor > 0 puts each actor on a fraction of a GPU."""

    batch_size: int = 16  # clips per forward pass
    # Each model stage's actor pool: max_actors actors, or from min_actors up as work queues (None: a fixed pool of
    # max_actors). Two by default: one clip-model actor does the pruner's and the encoder's work, which were two
    # actors before they ran in one process; measured on a 2-core node, 1 actor took 1.45x and a 1-2 pool 1.16x the
    # time of 2 (32 videos, prune+aam).
    min_actors: int | None = None
    max_actors: int = 2
    cpus_per_actor: float = 0.5  # CPU-only hosts: raise it (and torch's threads follow) on big machines
    gpus_per_actor: float = 0.0

    @property
    def pool_min(self) -> int:
        return self.max_actors if self.min_actors is None else self.min_actors

    def validate(self) -> list[str]:
        errors = []
        if self.batch_size < 1 or self.pool_min < 1 or self.max_actors < self.pool_min:
            errors.append(f"need batch_size >= 1 and 1 <= min_actors <= max_actors, got {self.batch_size}, "
                          f"{self.min_actors}, {self.max_actors}")  # fmt: skip
        if self.cpus_per_actor <= 0 and self.gpus_per_actor <= 0:
            errors.append("an actor needs cpus_per_actor > 0 or gpus_per_actor > 0")
        if self.cpus_per_actor < 0 or not 0 <= self.gpus_per_actor <= 1:
            errors.append(f"cpus_per_actor must be >= 0 and gpus_per_actor in [0, 1] (a fraction of one GPU), got "
                          f"{self.cpus_per_actor}, {self.gpus_per_actor}")  # fmt: skip
        return errors

    def ray_args(self, min_actors: int | None = None) -> dict:
        import ray.data

        return {
            "compute": ray.data.ActorPoolStrategy(min_size=min_actors or self.pool_min, max_size=self.max_actors),
            "num_cpus": self.cpus_per_actor,
            "num_gpus": self.gpus_per_actor,
            "batch_size": self.batch_size,
        }


class ModelRunner:
    """Device, precision and thread set-up shared by the model stages: CUDA with bf16 autocast where the actor was
    given a GPU, CPU fp32 otherwise, with torch's threads matched to the CPUs Ray reserved for the actor."""

    def __init__(self, resources: ModelResources | None = None) -> None:
        import torch

        resources = resources or ModelResources()
        gpus, cpus = resources.gpus_per_actor, resources.cpus_per_actor
        self.torch = torch
        if gpus > 0 and torch.cuda.is_available():
            self.device = torch.device("cuda")
        else:
            self.device = torch.device("cpu")
            torch.set_num_threads(max(1, round(cpus)))

    def load(self, uri: str, kind: str):
        """-> (model on this runner's device, BundleInfo): the bundle at `uri`, which must hold a `kind`."""
        from anon_core.models.bundle import load_bundle

        model, info = load_bundle(uri, expect_kind=kind)
        return model.to(self.device), info

    def autocast(self):
        if self.device.type == "cuda":
            return self.torch.autocast("cuda", dtype=self.torch.bfloat16)
        return self.torch.autocast("cpu", enabled=False)


def load_model(stage, uri: str, kind: str) -> bool:
    """A model stage's setup: the bundle at `uri` (a `kind`) onto stage.runner / .model / .info, once per process.
    True when it loaded now (the stage then derives what it needs from the model), False when already loaded."""
    if getattr(stage, "model", None) is not None:
        return False
    stage.runner = ModelRunner(stage.resources)
    stage.model, stage.info = stage.runner.load(uri, kind)
    return True


class StageActor:
    """The actor Ray Data starts for an actor stage: it holds one copy of the stage and sets it up once."""

    def __init__(self, stage) -> None:
        self.stage = stage
        stage.setup()

    def __call__(self, batch):
        return self.stage(batch)


def ray_map(stage) -> tuple[object, dict]:
    """(fn, kwargs) for `ds.map_batches(fn, **kwargs)`: a task stage runs as itself, an actor stage (one whose
    ray_args name a `compute` pool) inside a StageActor per actor."""
    args = stage.ray_args()
    if args.get("compute") is None:
        return stage, args
    # a subclass named after the stage, so Ray's operator names and logs say which stage an actor runs
    actor = type(f"{type(stage).__name__}Actor", (StageActor,), {"__module__": __name__})
    return actor, {"fn_constructor_args": (stage,), **args}
