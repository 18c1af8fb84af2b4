"""Ray Train (TorchTrainer, V2) for the video models: the encoder (supervised action pretraining) and the pruner
(arXiv 2603.26336: CE + BCE through the GRL with the DANN schedule, AdamW, warm-up then cosine).

The driver resolves the labels, carves a validation split from train and decodes the clips once (`clips.py`); each
worker then walks the cached clips in a seeded order per epoch, validates after every epoch, and reports metrics
with a checkpoint: a model bundle (config.json + model.safetensors, what `anonvid anonymize` loads) plus
train_state.pt. Re-running the same command (same name and storage_path) resumes from the latest checkpoint, and
the run equals an uninterrupted one: the data order, augmentation and dropout depend on (seed, epoch, rank) only.
The best checkpoint by validation is exported.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from .common import TrainData


@dataclass
class TrainConfig(TrainData):
    kind: str  # "encoder" | "pruner"
    manifest: str
    storage_path: str
    name: str
    # encoder only: "mae" is masked-video pre-training (VideoMAE, anon_core/models/mae.py): no labels needed, the
    # export is a head-less encoder (features for the AAM or the anonymize job, or --init-from for a supervised run)
    objective: Literal["supervised", "mae"] = "supervised"
    mask_ratio: float = 0.9  # mae: the share of tubes hidden
    decoder_depth: int = 4  # mae: the pixel decoder's blocks (thrown away after training)
    builder: str | None = None  # a name in anon_core.models.bundle.BUILDERS; None: video_vit_tiny / pruner_tiny
    num_classes: int | None = None  # None: from the labels
    num_privacy_classes: int | None = None  # pruner only; None: the number of attribute columns
    depth: int | None = None  # None: the builder's
    motion_input: bool = False  # the model subtracts each clip's temporal mean (VideoViT's motion_input)
    model_options: Any = None  # more builder arguments, e.g. {stem: conv, global_pool: avg, drop_path_rate: 0.1}
    out: str | None = None  # where the best checkpoint's bundle is copied (a path or fsspec URI)
    init_from: str | None = None
    epochs: int = 2
    batch_size: int = 8  # per worker
    lr: float = 1e-4
    weight_decay: float = 0.05
    warmup_frac: float = 0.1
    privacy_weight: float = 1.0
    # pruner: weight of the loss that teaches the two CLS attention rows each tubelet's relevance (gradient x input of
    # the true action / attributes, anon_core.models.pruner.tubelet_relevance); 0: the paper's losses alone
    relevance_weight: float = 1.0
    label_smoothing: float = 0.0  # of the action cross-entropy
    grad_clip: float = 0.0  # max gradient norm; 0: no clipping
    augment: bool = True  # random resized crop + brightness/contrast, the same in every frame (anon_core.augment)
    hflip: bool = False  # only for label sets where no action depends on left/right
    # encoder only: each training batch keeps a random share of its clips' tubelets, drawn from [1 - tubelet_drop, 1]
    # (the kept ones at random per clip; VideoViT kept_ids). The anonymize job's prune mode feeds the encoder only
    # the tubelets the pruner kept, and an encoder trained on whole clips reads those badly. 0: whole clips.
    tubelet_drop: float = 0.0
    # the share of the epochs trained on whole clips before tubelet_drop starts: the encoder first learns the action
    # from whole clips, then learns to read kept subsets (dropping from the first step slows learning the action)
    tubelet_drop_start: float = 0.0
    seed: int = 0
    num_workers: int = 2
    cpus_per_worker: float = 0.5
    max_failures: int = 0
    use_gpu: bool | None = None  # None: when the cluster has GPUs (bf16 autocast on them)

    def __post_init__(self) -> None:
        if self.builder is None:
            self.builder = "pruner_tiny" if self.kind == "pruner" else "video_vit_tiny"

    @property
    def needs_labels(self) -> bool:
        return self.objective != "mae"

    def model_kwargs(self, num_classes: int, num_privacy_classes: int) -> dict:
        num_classes = 0 if self.objective == "mae" else num_classes  # a head-less encoder
        kwargs = {"num_classes": num_classes, "img_size": self.clip_size, "num_frames": self.clip_frames}
        if self.kind == "pruner":
            kwargs["num_privacy_classes"] = num_privacy_classes
        if self.depth is not None:
            kwargs["depth"] = self.depth
        if self.motion_input:
            kwargs["motion_input"] = True
        return {**(self.model_options or {}), **kwargs}

    def class_errors(self, labelled) -> list[str]:
        from .schema import check_num_classes

        if self.objective == "mae":
            return []
        errors = check_num_classes(self.num_classes, len(labelled.classes), "num_classes")
        if self.kind == "pruner":
            errors += check_num_classes(self.num_privacy_classes, len(labelled.attributes), "num_privacy_classes")
        return errors

    def validate(self) -> list[str]:
        errors = self.data_errors()
        if self.kind not in ("encoder", "pruner"):
            errors.append(f"kind must be 'encoder' or 'pruner', got {self.kind!r}")
        if self.objective not in ("supervised", "mae"):
            errors.append(f"objective must be 'supervised' or 'mae', got {self.objective!r}")
        if self.objective == "mae" and self.kind != "encoder":
            errors.append("objective=mae pre-trains an encoder: use `anonvid train encoder objective=mae`, then "
                          "start the pruner from it with --init-from")  # fmt: skip
        if self.objective == "mae" and self.num_classes is not None:
            errors.append("objective=mae trains no classifier head: remove num_classes")
        if not 0 < self.mask_ratio < 1 or self.decoder_depth < 1:
            errors.append(f"mask_ratio must lie in (0, 1) and decoder_depth be >= 1, got {self.mask_ratio}, "
                          f"{self.decoder_depth}")  # fmt: skip
        if self.epochs < 1 or self.batch_size < 1 or self.num_workers < 1:
            errors.append("epochs, batch_size and num_workers must be >= 1")
        if not 0 <= self.warmup_frac < 1:
            errors.append(f"warmup_frac must lie in [0, 1), got {self.warmup_frac}")
        from anon_core.models.bundle import BUILDERS

        fits = sorted(b for b, (k, _) in BUILDERS.items() if k == self.kind)
        if BUILDERS.get(self.builder, ("",))[0] != self.kind:
            errors.append(f"builder {self.builder!r} does not build a {self.kind}: one of {', '.join(fits)}")
        errors += self._option_errors()
        if not 0 <= self.tubelet_drop < 1 or not 0 <= self.tubelet_drop_start < 1:
            errors.append(f"tubelet_drop and tubelet_drop_start must lie in [0, 1), got {self.tubelet_drop}, "
                          f"{self.tubelet_drop_start}")  # fmt: skip
        elif self.tubelet_drop and (self.kind != "encoder" or self.objective != "supervised"):
            errors.append("tubelet_drop trains a supervised encoder to read pruned clips; the pruner prunes itself and "
                          "MAE masks its own tubes: leave it 0")  # fmt: skip
        if self.relevance_weight < 0:
            errors.append(f"relevance_weight must be >= 0 (0: the paper's losses alone), got {self.relevance_weight}")
        if self.label_smoothing < 0 or self.label_smoothing >= 1 or self.grad_clip < 0:
            errors.append("label_smoothing must lie in [0, 1) and grad_clip must be >= 0 (0: off)")
        if self.clip_size % 16 or self.clip_frames % 2:
            errors.append(f"clips of {self.clip_frames} frames at {self.clip_size}px do not tile into 2x16x16 "
                          "tubelets: use an even clip_frames and a clip_size that is a multiple of 16")  # fmt: skip
        return errors


    def _option_errors(self) -> list[str]:
        import inspect

        from anon_core.models import VideoViT

        if self.model_options is None:
            return []
        if not isinstance(self.model_options, dict):
            return [f"model_options must be a mapping of builder arguments, got {self.model_options!r}"]
        own = {"num_classes", "num_privacy_classes", "img_size", "num_frames", "depth", "motion_input"}
        if self.kind == "pruner":  # its two CLS tokens are the method
            own |= {"num_cls_tokens", "global_pool"}
        known = set(inspect.signature(VideoViT.__init__).parameters) - {"self"} - own
        unknown = sorted(set(self.model_options) - known)
        if unknown:
            return [f"model_options: unknown {unknown}; set {sorted(own & set(unknown)) or 'these'} through their own "
                    f"fields, or use one of {sorted(known)}"]  # fmt: skip
        return []


def lr_lambda(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def build_video_model(cfg: dict):
    """The run's VideoViT (or pruner) from its builder and kwargs, started from `init_from` when given."""
    from anon_core.models.bundle import BUILDERS
    from anon_core.models.video_vit import load_pretrained

    model = BUILDERS[cfg["builder"]][1](**cfg["kwargs"])
    if cfg.get("init_from"):
        load_pretrained(model, cfg["init_from"])
    return model


def warmup_cosine(opt, cfg: dict, train_clips: int, world: int):
    """(scheduler, total steps): linear warm-up over warmup_frac of the run, then cosine to 0, counted in the steps
    the cached clips give (ceil(clips per worker / batch) per epoch)."""
    import torch

    from .clips import steps_per_epoch

    total = cfg["epochs"] * steps_per_epoch(train_clips, cfg["batch_size"], world)
    warmup = max(1, int(cfg["warmup_frac"] * total))
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_lambda(s, total, warmup)), total


def clip_inputs(cfg: dict, device):
    """inputs(clips, gen): (B, T, H, W, 3) uint8 clips -> (B, 3, T, H, W) normalised on `device`, augmented (the same
    crop and jitter in every frame) when a generator is given."""
    import torch

    from anon_core.augment import augment_clips
    from anon_core.models.bundle import IMAGENET_MEAN, IMAGENET_STD, normalize_clips

    def inputs(clips, gen: torch.Generator | None) -> torch.Tensor:
        x = torch.from_numpy(clips)
        if gen is not None:
            x = augment_clips(x, gen, hflip=cfg["hflip"])
        return normalize_clips(x.to(device), IMAGENET_MEAN, IMAGENET_STD)  # (B, 3, T, H, W)

    return inputs


def random_kept_ids(batch: int, num_tubelets: int, drop: float, gen):
    """(batch, k) ascending random tubelet ids, k = num_tubelets * a share drawn from [1 - drop, 1] (one per batch:
    the kept tokens of a batch form one tensor); None when drop is 0."""
    import torch

    if drop <= 0:
        return None
    share = 1.0 - drop * float(torch.rand((), generator=gen))
    k = max(1, round(num_tubelets * share))
    return torch.rand(batch, num_tubelets, generator=gen).topk(k, dim=1).indices.sort(dim=1).values  # (B, k)


def optimizer_step(model, opt, sched, loss, grad_clip: float) -> None:
    """Backward, gradient clipping (grad_clip > 0), the optimizer and scheduler steps."""
    import torch

    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    sched.step()


def train_func(cfg: dict) -> None:
    import time

    import numpy as np
    import ray.train
    import ray.train.torch
    import torch

    from anon_core.models.grl import dann_coefficient
    from anon_core.models.pruner import pruner_loss, relevance_loss, tubelet_relevance

    from .clips import ClipStore, epoch_batches
    from .common import autocast, report_epoch, restore

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(cfg["seed"])
    model = ray.train.torch.prepare_model(build_video_model(cfg))
    core = model.module if hasattr(model, "module") else model
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])

    store = ClipStore(cfg["cache"])
    train_pos, val_pos = store.clips_of(cfg["train_videos"]), store.clips_of(cfg["val_videos"])
    action = torch.tensor(cfg["action"])  # per video index
    attributes = torch.tensor(cfg["attributes"]).reshape(len(cfg["action"]), -1)  # (videos, A)
    sched, total = warmup_cosine(opt, cfg, len(train_pos), world)
    start, step, best = 0, 0, None
    state = restore(core)
    if state:
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        start, step = state["epoch"] + 1, state["step"]

    inputs = clip_inputs(cfg, device)

    for epoch in range(start, cfg["epochs"]):
        t0 = time.monotonic()
        torch.manual_seed(cfg["seed"] * 100_003 + epoch * world + rank)  # dropout: the same after a resume
        gen = torch.Generator().manual_seed(cfg["seed"] * 100_003 + epoch * world + rank) if cfg["augment"] else None
        drop_gen = torch.Generator().manual_seed(cfg["seed"] * 100_019 + epoch * world + rank)
        model.train()
        losses, compute_s = [], 0.0
        for pos, clips in epoch_batches(store, train_pos, cfg["batch_size"], cfg["shuffle_window"], cfg["seed"],
                                        epoch, rank, world):  # fmt: skip
            videos = torch.from_numpy(store.video[pos])
            x, y = inputs(clips, gen), action[videos].to(device)
            tc = time.perf_counter()  # model compute alone: what reading and augmenting clips must keep up with
            with autocast(torch, device):
                if cfg["kind"] == "encoder":
                    drop = cfg["tubelet_drop"] if epoch >= cfg["tubelet_drop_start"] * cfg["epochs"] else 0.0
                    kept = random_kept_ids(len(x), core.patch_embed.num_patches, drop, drop_gen)
                    logits = model(x) if kept is None else model(x, kept.to(device))
                    loss = torch.nn.functional.cross_entropy(logits, y, label_smoothing=cfg["label_smoothing"])
                else:
                    attrs = attributes[videos].to(device)
                    out = model(x, grl_coeff=dann_coefficient(min(1.0, step / max(1, total))))
                    loss = pruner_loss(out, y, attrs, cfg["privacy_weight"])
                    if cfg["relevance_weight"] > 0:  # an extra unpruned forward and backward to the embeddings
                        relevance = tubelet_relevance(core, x, y, attrs)  # (B, N) each, detached targets
                        loss = loss + cfg["relevance_weight"] * relevance_loss(out, *relevance)
            optimizer_step(model, opt, sched, loss, cfg["grad_clip"])
            step += 1
            losses.append(loss.item())
            compute_s += time.perf_counter() - tc
        train_s = time.monotonic() - t0
        metrics = {"epoch": epoch, "step": step, "loss": float(np.mean(losses)) if losses else float("nan"),
                   "lr": float(sched.get_last_lr()[0]), "train_s": train_s, "compute_s": compute_s,
                   **validate(model, store, val_pos, inputs, cfg, rank, world)}  # fmt: skip
        metrics["epoch_s"] = time.monotonic() - t0  # the driver prints the epoch's line from its checkpoint
        extra = {"epoch": epoch, "step": step, "run": cfg["name"], "classes": cfg["classes"],
                 "attributes": cfg["attribute_names"]}  # fmt: skip
        report_epoch(core, cfg["builder"], cfg["kwargs"], extra,
                     {"opt": opt.state_dict(), "sched": sched.state_dict(), "epoch": epoch, "step": step,
                      "best": best}, metrics)  # fmt: skip


def validate(model, store, val_pos, inputs, cfg: dict, rank: int, world: int) -> dict:
    """Validation over every worker's share of the held-out clips: clip and video top-1 (video: mean of its clips'
    softmax) and, for the pruner, the privacy head's attribute cMAP and how alike its two CLS rows rank the tubelets
    (`score_agreement`, mean over clips). Empty when there is no validation split."""
    import numpy as np
    import torch

    from anon_core.metrics import cmap, top1_accuracy, video_top1_accuracy
    from anon_core.models.pruner import score_agreement

    from .clips import ordered_batches
    from .common import gather

    if len(val_pos) == 0:
        return {}
    model.eval()
    probs, privacy, videos, agreement = [], [], [], []
    with torch.no_grad():
        for pos, clips in ordered_batches(store, val_pos, cfg["batch_size"], rank, world):
            out = model(inputs(clips, None))
            logits = out if cfg["kind"] == "encoder" else out.action_logits
            probs += logits.float().softmax(-1).cpu().tolist()
            if cfg["kind"] == "pruner":
                privacy += out.privacy_logits.float().sigmoid().cpu().tolist()
                rho = score_agreement(out)
                agreement += [] if rho is None else rho.cpu().tolist()
            videos += store.video[pos].tolist()
    probs, privacy, videos = np.array(gather(probs)), np.array(gather(privacy)), np.array(gather(videos))
    agreement = gather(agreement)
    labels = np.array(cfg["action"])[videos]
    metrics = {"val_top1": float(video_top1_accuracy(probs, labels, videos)),
               "val_clip_top1": float(top1_accuracy(probs, labels))}  # fmt: skip
    if cfg["kind"] == "pruner":
        attrs = np.array(cfg["attributes"]).reshape(len(cfg["action"]), -1)[videos]
        try:
            metrics["val_attr_cmap"] = float(cmap(attrs, privacy))
        except ValueError:  # every attribute constant over a tiny validation split: undefined, not zero
            metrics["val_attr_cmap"] = None
        metrics["val_score_agreement"] = float(np.mean(agreement)) if agreement else None  # None: nothing pruned
    return metrics


def resolved(cfg: TrainConfig, prepared) -> dict:
    """The loop's config: the job config, the model's kwargs (class counts from the labels; a given number that
    disagrees was refused in prepare_data) and the data the workers read."""
    n_act, n_priv = len(prepared.labelled.classes), len(prepared.labelled.attributes)
    return {**asdict(cfg), "kwargs": cfg.model_kwargs(n_act, n_priv), **prepared.loop_config()}


def run_training(cfg: TrainConfig, log=print):
    from .clips import TrainDataError, steps_per_epoch
    from .common import fit, local_or_uri, prepare_data

    prepared = prepare_data(cfg, log)
    if cfg.init_from:  # read by the workers, whose working directory on a running cluster is not this one
        cfg.init_from = local_or_uri(cfg.init_from)
    loop = resolved(cfg, prepared)
    steps = steps_per_epoch(prepared.train_clips, cfg.batch_size, cfg.num_workers)
    if steps < 1:
        raise TrainDataError(f"the training split has {prepared.train_clips} clips, fewer than one per worker "
                             f"(num_workers={cfg.num_workers}): add videos or lower num_workers")  # fmt: skip
    log(f"training {cfg.kind} ({cfg.objective}) on {prepared.train_clips} clips ({steps} steps per epoch), "
        f"validating on {prepared.val_clips} clips")  # fmt: skip
    if cfg.objective == "mae":
        from .mae_loop import mae_train_func

        return fit(mae_train_func, loop, cfg, select="val_loss", order="min", log=log)
    return fit(train_func, loop, cfg, select="val_top1", log=log)
