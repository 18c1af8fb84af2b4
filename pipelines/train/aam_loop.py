"""Ray Train for the AAM (arXiv 2511.08666) on the frozen encoder's features: identity warm start, then one joint
step on w_lc * L_LC + w_t * L_T - w_b * L_B per batch of videos. The checkpoint is an AAM bundle; the action head
(training only) rides in train_state.pt.

With `pruner` set (an AAM for prune+aam), the features are those of the clips' kept tubelets, as the anonymize job
computes them in prune+aam mode.

Every worker holds the extracted features (small: one row per video) and walks its share of the training videos in
a seeded order per epoch; after each epoch every worker computes the same objective on the held-out videos, and the
epoch with the lowest validation objective (utility, consistency and privacy together, as trained) is exported.

With `erase` (the default), each epoch's checkpoint also carries a linear eraser of the private attributes
(`anon_core.models.erasure`), fitted on that epoch's adapter outputs of the training videos: LEACE in closed form,
then the directions a small MLP attacker reads them from (`erase_mlp_fraction`), then the low-variance tail of what
is left (`erase_keep_variance`); the objective above never sees it, so training is the paper's and the eraser is one
more layer at inference.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from .common import TrainData


@dataclass
class AamTrainConfig(TrainData):
    manifest: str
    encoder: str  # the frozen encoder's bundle
    storage_path: str
    name: str
    # an AAM for prune+aam: this tubelet pruner's bundle runs first and the encoder reads what it keeps, as in the
    # anonymize job, so the adapter and its eraser learn the features they will anonymize (docs/methods.md §2)
    pruner: str | None = None
    epochs: int = 5
    warm_start_epochs: int = 1  # L_LC only: f_A starts as the identity
    batch_size: int = 32  # videos per worker
    lr: float = 1e-4
    w_lc: float = 100.0
    w_t: float = 1.0
    w_b: float = 1.0
    temperature: float = 0.1
    # L_B's two views of a video: "still" (one frame repeated, the paper's), "pan" (the frame under a slow camera
    # pan), "auto": pan when the encoder sees only motion (motion_input), to which a repeated frame is blank
    static_view: Literal["auto", "still", "pan"] = "auto"
    # after training, erase what stays linearly readable of the private attributes (the label schema's attribute
    # columns): "attributes" = them, "pairs" = also their pairwise conjunctions (3x the erased directions: more
    # utility lost, no clear privacy gain in the benchmark), "none" = the paper's adapter alone. Needs attribute
    # labels on the training videos.
    erase: Literal["none", "attributes", "pairs"] = "attributes"
    # then, what a nonlinear attacker still reads: this fraction of the feature's directions, those an MLP trained
    # for the attributes on the erased features depends on most, is projected out too (0: the linear eraser alone;
    # anon_core.models.erasure.fit_gradient_erasure). More removes more privacy and, past a point, the action.
    erase_mlp_fraction: float = 0.125
    # last, only the principal directions of the erased features that hold this share of their variance are kept
    # (1: all): an attacker that whitens the features reads what the erasers leave in the low-variance rest, which
    # holds little else (anon_core.models.erasure.fit_principal_projection; docs/methods.md §2)
    erase_keep_variance: float = 0.99
    depth: int = 3
    num_heads: int = 8
    max_clips: int = 8
    num_actions: int | None = None  # None: from the labels
    seed: int = 0
    num_workers: int = 2
    cpus_per_worker: float = 0.5
    max_failures: int = 0
    use_gpu: bool | None = None  # None: when the cluster has GPUs
    out: str | None = None  # where the best AAM bundle is copied

    def class_errors(self, labelled) -> list[str]:
        from .schema import check_num_classes

        return check_num_classes(self.num_actions, len(labelled.classes), "num_actions")

    def validate(self) -> list[str]:
        errors = self.data_errors()
        if self.epochs < 1 or self.batch_size < 1 or self.num_workers < 1 or self.max_clips < 1:
            errors.append("epochs, batch_size, num_workers and max_clips must be >= 1")
        if self.static_view not in ("auto", "still", "pan"):
            errors.append(f"static_view must be 'auto', 'still' or 'pan', got {self.static_view!r}")
        if self.erase not in ("none", "attributes", "pairs"):
            errors.append(f"erase must be 'none', 'attributes' or 'pairs', got {self.erase!r}")
        if not 0.0 <= self.erase_mlp_fraction < 1.0:
            errors.append(f"erase_mlp_fraction must be in [0, 1), got {self.erase_mlp_fraction}")
        if not 0.0 < self.erase_keep_variance <= 1.0:
            errors.append(f"erase_keep_variance must be in (0, 1] (1: keep every direction), got "
                          f"{self.erase_keep_variance}")  # fmt: skip
        return errors

    def encoder_errors(self) -> list[str]:
        """The bundle must be an encoder that takes the clips this run decodes: a convolutional encoder (torchvision's)
        runs on any clip, and its features would then not be the ones the anonymize job makes; a `pruner` must be a
        tubelet pruner on the same clips. Reads only the bundles' config.json, before anything is decoded."""
        config, error = _bundle_config(self.encoder, "encoder", "an encoder")
        if error:
            return [error]
        frames, size = config.get("input", {}).get("num_frames"), config.get("input", {}).get("size")
        if (frames, size) != (self.clip_frames, self.clip_size):
            return [f"the encoder {self.encoder} takes {frames} frames at {size}px, but this run decodes "
                    f"{self.clip_frames} x {self.clip_size} clips: set clip_frames={frames} clip_size={size} (and "
                    f"run the anonymize job with --clip-frames {frames} --clip-size {size})"]  # fmt: skip
        if self.pruner is None:
            return []
        pruner, error = _bundle_config(self.pruner, "pruner", "a tubelet pruner")
        if error:
            return [error]
        p_input = pruner.get("input", {})
        if (p_input.get("num_frames"), p_input.get("size")) != (frames, size):
            return [f"the pruner {self.pruner} takes {p_input.get('num_frames')} frames at {p_input.get('size')}px "
                    f"and the encoder {frames} at {size}px: prune+aam runs them on the same clips, so train both "
                    "for one clip size"]  # fmt: skip
        return []


def _bundle_config(uri: str, kind: str, noun: str) -> tuple[dict, str | None]:
    """(the bundle's config.json, None), or ({}, the error) when it is unreadable or holds another kind of model."""
    from anon_core.models.bundle import read_bundle_config

    try:
        config = read_bundle_config(uri)
    except (FileNotFoundError, ValueError) as e:
        return {}, f"{kind}: {e}"
    if config["kind"] != kind:
        return {}, f"{kind}: {uri} holds a {config['kind']} ({config['builder']}), not {noun}"
    return config, None


def aam_train_func(cfg: dict) -> None:
    import time

    import numpy as np
    import ray.train
    import ray.train.torch
    import torch

    from anon_core.models.aam import aam_for_dim

    from .aam_data import read_aam_features
    from .common import report_epoch, restore

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg["seed"])
    kwargs = {"dim": cfg["dim"], "depth": cfg["depth"], "num_heads": cfg["num_heads"]}
    if cfg["erase"] != "none":
        kwargs["erase"] = True
    aam, head = aam_for_dim(**kwargs), torch.nn.Linear(cfg["dim"], cfg["num_actions"])
    aam, head = ray.train.torch.prepare_model(aam), ray.train.torch.prepare_model(head)
    core = aam.module if hasattr(aam, "module") else aam
    head_core = head.module if hasattr(head, "module") else head
    opt = torch.optim.AdamW(list(aam.parameters()) + list(head.parameters()), lr=cfg["lr"])
    start = 0
    state = restore(core)
    if state:
        head_core.load_state_dict(state["head"])
        opt.load_state_dict(state["opt"])
        start = state["epoch"] + 1

    feats = read_aam_features(cfg["features"])
    row_of = {int(v): i for i, v in enumerate(feats["video"])}
    train = np.array([row_of[v] for v in cfg["train_videos"] if v in row_of], dtype=np.int64)
    val = np.array([row_of[v] for v in cfg["val_videos"] if v in row_of], dtype=np.int64)
    action = np.array(cfg["action"], dtype=np.int64)[feats["video"]]  # per feature row
    attributes = np.array(cfg["attributes"], dtype=np.float32).reshape(len(cfg["action"]), -1)[feats["video"]]

    def batch(rows: np.ndarray) -> dict:
        cols = {"h": feats["h"], "mask": feats["mask"], "static": feats["static"], "action": action}
        return {k: torch.from_numpy(v[rows]) for k, v in cols.items()}

    def objective(b: dict, warm: bool) -> tuple[dict, torch.Tensor]:
        from anon_core.losses import aam_objective, latent_consistency

        h, mask = b["h"], b["mask"]  # (V, C, D), (V, C)
        h_anon = aam(h, mask, erase=False)
        logits = head(h_anon)  # (V, C, K)
        if warm:
            return {"total": latent_consistency(h, h_anon, mask)}, logits
        labels = b["action"][:, None].expand_as(mask)  # (V, C): every clip carries its video's action
        static = core.forward_static(b["static"].reshape(-1, cfg["dim"]), erase=False).reshape(-1, 2, cfg["dim"])
        return aam_objective(
            h=h, h_anon=h_anon, task_logits={"action": logits}, task_labels={"action": labels}, static_a=static[:, 0],
            static_b=static[:, 1], mask=mask, w_lc=cfg["w_lc"], w_t=cfg["w_t"], w_b=cfg["w_b"],
            temperature=cfg["temperature"],
        ), logits  # fmt: skip

    B = cfg["batch_size"]
    for epoch in range(start, cfg["epochs"]):
        t0 = time.monotonic()
        aam.train()
        head.train()
        perm = np.random.default_rng([cfg["seed"], epoch]).permutation(train)
        n = len(perm) // world  # the same number of steps on every rank (clips.steps_per_epoch's rule)
        mine = perm[rank * n : (rank + 1) * n]
        parts_sum: dict[str, float] = {}
        steps = 0
        for a in range(0, len(mine), B):
            parts, _ = objective(batch(mine[a : a + B]), epoch < cfg["warm_start_epochs"])
            opt.zero_grad(set_to_none=True)
            parts["total"].backward()
            opt.step()
            steps += 1
            for k, v in parts.items():
                parts_sum[k] = parts_sum.get(k, 0.0) + float(v.detach())
        metrics = {"epoch": epoch, **{k: v / max(steps, 1) for k, v in parts_sum.items()}}
        metrics.update(validate_aam(aam, head, objective, batch, val, feats["mask"], action, B))
        if cfg["erase"] != "none":
            # on every labelled video, the held-out ones too: a closed-form fit selects nothing on them
            metrics["erased_dims"] = fit_eraser(core, feats, np.concatenate([train, val]), attributes,
                                                cfg["erase"] == "pairs", B, cfg["erase_mlp_fraction"],
                                                cfg["erase_keep_variance"])  # fmt: skip
        metrics["epoch_s"] = time.monotonic() - t0  # the driver prints the epoch's line from its checkpoint
        meta = {"epoch": epoch, "encoder": cfg["encoder"], "pruner": cfg["pruner"], "run": cfg["name"]}
        report_epoch(core, "aam_for_dim", kwargs, meta,
                     {"head": head_core.state_dict(), "opt": opt.state_dict(), "epoch": epoch}, metrics)  # fmt: skip


def fit_eraser(core, feats: dict, rows, attributes, pairs: bool, batch_size: int, mlp_fraction: float,
               keep_variance: float = 1.0) -> float:  # fmt: skip
    """Fit the adapter's eraser on its (un-erased) outputs of the training videos' real clips and their attribute
    labels, in place: LEACE, then (mlp_fraction > 0) that fraction of the directions an MLP attacker reads the
    attributes from on what LEACE leaves, then (keep_variance < 1) the low-variance tail of the result. Returns the
    number of directions erased (0 when there are no attributes)."""
    import numpy as np
    import torch

    from anon_core.models.erasure import concept_columns, fit_gradient_erasure, fit_leace, fit_principal_projection

    if attributes.shape[1] == 0 or len(rows) < 2:
        return 0.0
    was_training = core.training
    core.eval()
    outs, labels = [], []
    with torch.no_grad():
        for a in range(0, len(rows), batch_size):
            r = rows[a : a + batch_size]
            mask = torch.from_numpy(feats["mask"][r])  # (V, C)
            out = core(torch.from_numpy(feats["h"][r]), mask, erase=False)  # (V, C, D)
            outs.append(out[mask].numpy())  # (real clips, D)
            labels.append(np.repeat(attributes[r], mask.sum(1).numpy(), axis=0))  # each clip its video's labels
    core.train(was_training)
    x, z = np.concatenate(outs), np.concatenate(labels)
    mean, proj = fit_leace(x, concept_columns(z, pairs))
    dims = int(round(mlp_fraction * x.shape[1]))
    if dims > 0:  # on LEACE's output, whose mean is LEACE's: the two maps compose into one
        proj = fit_gradient_erasure((x - mean) @ proj.T + mean, z, dims) @ proj
    if keep_variance < 1.0:  # every map so far keeps the mean, so the projection composes about the same mean
        proj = fit_principal_projection((x - mean) @ proj.T + mean, keep_variance) @ proj
    core.eraser.set(mean, proj)
    return float(np.linalg.matrix_rank(np.eye(len(mean)) - proj, tol=1e-4))


def validate_aam(aam, head, objective, batch, val, masks, action, batch_size: int) -> dict:
    """The joint objective and the action head's video top-1 on the held-out videos. Every worker computes it on
    all of them (one feature row per video: cheap), so no gathering is needed and every rank agrees."""
    import torch

    if len(val) == 0:
        return {}
    aam.eval()
    head.eval()
    sums: dict[str, float] = {}
    correct = 0
    with torch.no_grad():
        for a in range(0, len(val), batch_size):
            rows = val[a : a + batch_size]
            parts, logits = objective(batch(rows), warm=False)
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v) * len(rows)
            m = torch.from_numpy(masks[rows]).unsqueeze(-1)  # (V, C, 1): real clips only
            probs = (logits.softmax(-1) * m).sum(1)  # (V, K): summed clip probabilities, one vote per video
            correct += int((probs.argmax(-1).numpy() == action[rows]).sum())
    out = {f"val_{k}": v / len(val) for k, v in sums.items() if "/" not in k}
    out["val_top1"] = correct / len(val)
    return out


def run_aam_training(cfg: AamTrainConfig, log=print):
    from anon_core.models.bundle import read_bundle_config

    from .aam_data import cached_aam_features
    from .common import fit, local_or_uri, prepare_data

    errors = cfg.encoder_errors()
    if errors:
        raise ValueError("; ".join(errors))
    cfg.encoder = local_or_uri(cfg.encoder)  # the extraction's workers on a running cluster have their own cwd
    cfg.pruner = local_or_uri(cfg.pruner) if cfg.pruner else None
    prepared = prepare_data(cfg, log)
    loop = prepared.loop_config()
    features = cached_aam_features(prepared.cache, loop["train_videos"] + loop["val_videos"], cfg.encoder,
                                   local_or_uri(cfg.storage_path), cfg.max_clips, cfg.seed, log,
                                   cfg.static_view, cfg.pruner)  # fmt: skip
    dim = int(read_bundle_config(cfg.encoder)["embed_dim"])
    log(f"training the AAM on {len(loop['train_videos'])} videos, validating on {len(loop['val_videos'])}")
    config = {**asdict(cfg), **loop, "dim": dim, "features": features, "num_actions": len(prepared.labelled.classes)}
    return fit(aam_train_func, config, cfg, select="val_total", order="min", log=log)
