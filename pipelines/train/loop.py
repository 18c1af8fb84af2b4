"""Ray Train (TorchTrainer, V2) for the video models: the encoder (supervised action pretraining) and the pruner
(arXiv 2603.26336: CE + BCE through the GRL with the DANN schedule, AdamW, warm-up then cosine).

Every checkpoint directory is a model bundle (config.json + model.safetensors, what `anonvid anonymize` loads) plus
train_state.pt (optimizer, scheduler, epoch). Re-running the same command (same RunConfig name and storage_path)
resumes from the latest checkpoint: Ray Train V2 hands it to get_checkpoint().
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass
class TrainConfig:
    kind: str  # "encoder" | "pruner"
    manifest: str
    storage_path: str
    name: str
    builder: str | None = None  # a name in anon_core.models.bundle.BUILDERS; None: video_vit_tiny / pruner_tiny
    num_classes: int = 8
    num_privacy_classes: int = 5  # pruner only
    depth: int | None = None  # None: the builder's
    out: str | None = None  # where the final bundle is copied (a path or fsspec URI)

    def __post_init__(self) -> None:
        if self.builder is None:
            self.builder = "pruner_tiny" if self.kind == "pruner" else "video_vit_tiny"

    def model_kwargs(self) -> dict:
        kwargs = {"num_classes": self.num_classes, "img_size": self.clip_size, "num_frames": self.clip_frames}
        if self.kind == "pruner":
            kwargs["num_privacy_classes"] = self.num_privacy_classes
        if self.depth is not None:
            kwargs["depth"] = self.depth
        return kwargs

    def validate(self) -> list[str]:
        errors = []
        if self.kind not in ("encoder", "pruner"):
            errors.append(f"kind must be 'encoder' or 'pruner', got {self.kind!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.num_workers < 1:
            errors.append("epochs, batch_size and num_workers must be >= 1")
        if not 0 <= self.warmup_frac < 1:
            errors.append(f"warmup_frac must lie in [0, 1), got {self.warmup_frac}")
        from anon_core.models.bundle import BUILDERS

        fits = sorted(b for b, (k, _) in BUILDERS.items() if k == self.kind)
        if BUILDERS.get(self.builder, ("",))[0] != self.kind:
            errors.append(f"builder {self.builder!r} does not build a {self.kind}: one of {', '.join(fits)}")
        if self.clip_size % 16 or self.clip_frames % 2:
            errors.append(f"clips of {self.clip_frames} frames at {self.clip_size}px do not tile into 2x16x16 "
                          "tubelets: use an even clip_frames and a clip_size that is a multiple of 16")  # fmt: skip
        return errors
    init_from: str | None = None
    epochs: int = 2
    batch_size: int = 8  # per worker
    lr: float = 1e-4
    weight_decay: float = 0.05
    warmup_frac: float = 0.1
    privacy_weight: float = 1.0
    seed: int = 0
    num_workers: int = 2
    cpus_per_worker: float = 0.5
    max_failures: int = 0
    use_gpu: bool | None = None  # None: when the cluster has GPUs (bf16 autocast on them)
    clip_frames: int = 16
    clip_stride: int = 2
    clip_size: int = 112


def lr_lambda(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def train_func(cfg: dict) -> None:
    import ray.train
    import ray.train.torch
    import torch

    from anon_core.models.bundle import BUILDERS, IMAGENET_MEAN, IMAGENET_STD, normalize_clips
    from anon_core.models.grl import dann_coefficient
    from anon_core.models.pruner import pruner_loss
    from anon_core.models.video_vit import load_pretrained

    from .common import autocast, report_epoch, restore

    device = ray.train.torch.get_device()
    torch.manual_seed(cfg["seed"])
    model = BUILDERS[cfg["builder"]][1](**cfg["kwargs"])
    if cfg.get("init_from"):
        load_pretrained(model, cfg["init_from"])
    model = ray.train.torch.prepare_model(model)
    core = model.module if hasattr(model, "module") else model
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    total = cfg["epochs"] * cfg["steps_per_epoch"]
    warmup = max(1, int(cfg["warmup_frac"] * total))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_lambda(s, total, warmup))
    start, step = 0, 0
    state = restore(core)
    if state:
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        start, step = state["epoch"] + 1, state["step"]
    shard = ray.train.get_dataset_shard("train")
    for epoch in range(start, cfg["epochs"]):
        model.train()
        losses = []
        for b in shard.iter_torch_batches(batch_size=cfg["batch_size"], drop_last=True):
            x = normalize_clips(b["clip"], IMAGENET_MEAN, IMAGENET_STD)  # (B, 3, T, H, W)
            with autocast(torch, device):
                if cfg["kind"] == "encoder":
                    loss = torch.nn.functional.cross_entropy(model(x), b["action"])
                else:
                    out = model(x, grl_coeff=dann_coefficient(step / max(1, total)))
                    loss = pruner_loss(out, b["action"], b["attributes"], cfg["privacy_weight"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            losses.append(loss.item())
        metrics = {"epoch": epoch, "step": step, "loss": sum(losses) / max(1, len(losses))}  # this worker's mean
        report_epoch(core, cfg["builder"], cfg["kwargs"], {"epoch": epoch, "step": step, "run": cfg["name"]},
                     {"opt": opt.state_dict(), "sched": sched.state_dict(), "epoch": epoch, "step": step},
                     metrics)  # fmt: skip

def run_training(cfg: TrainConfig):
    from anon_core.video import ClipSpec

    from .common import fit, ordered_data
    from .data import labelled_clips, labelled_videos

    with ordered_data():
        spec = ClipSpec(cfg.clip_frames, cfg.clip_stride, cfg.clip_size)
        n_videos = len(labelled_videos(cfg.manifest, "train"))
        ds = labelled_clips(cfg.manifest, spec, "train")
        steps = max(1, n_videos // (cfg.batch_size * cfg.num_workers))  # an estimate: one clip per video at least
        return fit(train_func, {**asdict(cfg), "kwargs": cfg.model_kwargs(), "steps_per_epoch": steps}, cfg, ds)
