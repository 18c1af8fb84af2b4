"""Per-process helpers for stages that run as Ray tasks (Ray reuses worker processes across tasks)."""

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
    min_actors: int = 1
    max_actors: int = 1
    cpus_per_actor: float = 0.5  # CPU-only hosts: raise it (and torch's threads follow) on big machines
    gpus_per_actor: float = 0.0

    def validate(self) -> list[str]:
        errors = []
        if self.batch_size < 1 or self.min_actors < 1 or self.max_actors < self.min_actors:
            errors.append(f"need batch_size >= 1 and 1 <= min_actors <= max_actors, got {self.batch_size}, "
                          f"{self.min_actors}, {self.max_actors}")  # fmt: skip
        if self.cpus_per_actor <= 0 and self.gpus_per_actor <= 0:
            errors.append("an actor needs cpus_per_actor > 0 or gpus_per_actor > 0")
        if self.cpus_per_actor < 0 or not 0 <= self.gpus_per_actor <= 1:
            errors.append(f"cpus_per_actor must be >= 0 and gpus_per_actor in [0, 1] (a fraction of one GPU), got "
                          f"{self.cpus_per_actor}, {self.gpus_per_actor}")  # fmt: skip
        return errors

    def ray_args(self) -> dict:
        import ray.data

        return {
            "compute": ray.data.ActorPoolStrategy(min_size=self.min_actors, max_size=self.max_actors),
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
