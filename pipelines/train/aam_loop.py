"""Ray Train for the AAM (arXiv 2511.08666) on the frozen encoder's features: identity warm start, then one joint
step on w_lc * L_LC + w_t * L_T - w_b * L_B per batch of videos. The checkpoint is an AAM bundle; the action head
(training only) rides in train_state.pt.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class AamTrainConfig:
    manifest: str
    encoder: str  # the frozen encoder's bundle
    storage_path: str
    name: str
    epochs: int = 5
    warm_start_epochs: int = 1  # L_LC only: f_A starts as the identity
    batch_size: int = 32  # videos per worker
    lr: float = 1e-4
    w_lc: float = 100.0
    w_t: float = 1.0
    w_b: float = 1.0
    temperature: float = 0.1
    depth: int = 3
    num_heads: int = 8
    max_clips: int = 8
    num_actions: int = 8
    seed: int = 0
    num_workers: int = 2
    cpus_per_worker: float = 0.5
    max_failures: int = 0
    use_gpu: bool | None = None  # None: when the cluster has GPUs
    out: str | None = None  # where the final AAM bundle is copied
    clip_frames: int = 16
    clip_stride: int = 2
    clip_size: int = 112


def aam_train_func(cfg: dict) -> None:
    import ray.train
    import ray.train.torch
    import torch

    from anon_core.losses import aam_objective, latent_consistency
    from anon_core.models.aam import aam_for_dim

    from .common import report_epoch, restore

    torch.manual_seed(cfg["seed"])
    kwargs = {"dim": cfg["dim"], "depth": cfg["depth"], "num_heads": cfg["num_heads"]}
    aam, head = aam_for_dim(**kwargs), torch.nn.Linear(cfg["dim"], cfg["num_actions"])
    aam, head = ray.train.torch.prepare_model(aam), ray.train.torch.prepare_model(head)
    core = aam.module if hasattr(aam, "module") else aam
    head_core = head.module if hasattr(head, "module") else head
    params = list(aam.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=cfg["lr"])
    start = 0
    state = restore(core)
    if state:
        head_core.load_state_dict(state["head"])
        opt.load_state_dict(state["opt"])
        start = state["epoch"] + 1
    shard = ray.train.get_dataset_shard("train")
    for epoch in range(start, cfg["epochs"]):
        parts_sum: dict[str, float] = {}
        n = 0
        for b in shard.iter_torch_batches(batch_size=cfg["batch_size"]):
            h, mask = b["h"], b["mask"].bool()  # (V, C, D), (V, C)
            h_anon = aam(h, mask)
            if epoch < cfg["warm_start_epochs"]:
                parts = {"total": latent_consistency(h, h_anon, mask)}
            else:
                labels = b["action"][:, None].expand_as(mask)  # (V, C): every clip carries its video's action
                static = core.forward_static(b["static"].reshape(-1, cfg["dim"])).reshape(-1, 2, cfg["dim"])
                parts = aam_objective(
                    h=h, h_anon=h_anon, task_logits={"action": head(h_anon)}, task_labels={"action": labels},
                    static_a=static[:, 0], static_b=static[:, 1], mask=mask, w_lc=cfg["w_lc"], w_t=cfg["w_t"],
                    w_b=cfg["w_b"], temperature=cfg["temperature"],
                )  # fmt: skip
            opt.zero_grad(set_to_none=True)
            parts["total"].backward()
            opt.step()
            n += 1
            for k, v in parts.items():
                parts_sum[k] = parts_sum.get(k, 0.0) + float(v)
        metrics = {"epoch": epoch, **{k: v / max(n, 1) for k, v in parts_sum.items()}}
        report_epoch(core, "aam_for_dim", kwargs, {"epoch": epoch, "encoder": cfg["encoder"], "run": cfg["name"]},
                     {"head": head_core.state_dict(), "opt": opt.state_dict(), "epoch": epoch}, metrics)  # fmt: skip


def run_aam_training(cfg: AamTrainConfig):
    from anon_core.models.bundle import read_bundle_config
    from anon_core.video import ClipSpec

    from .aam_data import cached_aam_features
    from .common import fit, ordered_data

    with ordered_data():
        dim = int(read_bundle_config(cfg.encoder)["embed_dim"])
        spec = ClipSpec(cfg.clip_frames, cfg.clip_stride, cfg.clip_size)
        feats = cached_aam_features(cfg.manifest, cfg.encoder, spec, cfg.storage_path, "train", cfg.max_clips,
                                    cfg.seed).materialize()  # fmt: skip
        return fit(aam_train_func, {**asdict(cfg), "dim": dim}, cfg, feats)
