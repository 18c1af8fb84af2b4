"""Ray Train loop for `anonvid train encoder objective=mae`: VideoMAE masked-tube pre-training (arXiv 2203.12602,
anon_core/models/mae.py) on the same decode-once clip cache, seeded order, augmentation, checkpoints and resume as
the supervised loop (loop.py), with no label read. Validation is the reconstruction loss on the held-out clips
under a fixed mask, and the checkpoint with the lowest one is exported.

The checkpoint's bundle is the encoder alone (a head-less VideoViT, what the anonymize job and the AAM load, and
what `--init-from` starts a supervised encoder or a pruner from); the decoder travels in train_state.pt so a
resumed run continues exactly.
"""

from __future__ import annotations


def mae_train_func(cfg: dict) -> None:
    import time

    import numpy as np
    import ray.train
    import ray.train.torch
    import torch

    from anon_core.models.mae import VideoMAE

    from .clips import ClipStore, epoch_batches
    from .common import autocast, report_epoch, restore
    from .loop import build_video_model, clip_inputs, optimizer_step, warmup_cosine

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(cfg["seed"])
    core = VideoMAE(build_video_model(cfg), mask_ratio=cfg["mask_ratio"], decoder_depth=cfg["decoder_depth"])
    # the encoder's head-side layers (fc_norm) take no part in reconstruction: DDP must allow unused parameters
    model = ray.train.torch.prepare_model(core, parallel_strategy_kwargs={"find_unused_parameters": True})
    core = model.module if hasattr(model, "module") else model
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"], betas=(0.9, 0.95))

    store = ClipStore(cfg["cache"])
    train_pos, val_pos = store.clips_of(cfg["train_videos"]), store.clips_of(cfg["val_videos"])
    sched, _ = warmup_cosine(opt, cfg, len(train_pos), world)
    start, step = 0, 0
    state = restore(core.encoder)
    if state:
        core.load_state_dict({**core.state_dict(), **state["decoder"]})
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        start, step = state["epoch"] + 1, state["step"]
    inputs = clip_inputs(cfg, device)

    for epoch in range(start, cfg["epochs"]):
        t0 = time.monotonic()
        seed = cfg["seed"] * 100_003 + epoch * world + rank  # data order, masks, augmentation: the same after resume
        torch.manual_seed(seed)
        masks = torch.Generator().manual_seed(seed)
        gen = torch.Generator().manual_seed(seed) if cfg["augment"] else None
        model.train()
        losses, compute_s = [], 0.0
        for _, clips in epoch_batches(store, train_pos, cfg["batch_size"], cfg["shuffle_window"], cfg["seed"], epoch,
                                      rank, world):  # fmt: skip
            x = inputs(clips, gen)
            mask = core.tube_mask(len(x), masks, device)  # (B, N) True = hidden
            tc = time.perf_counter()
            with autocast(torch, device):
                loss = model(x, mask)
            optimizer_step(model, opt, sched, loss, cfg["grad_clip"])
            step += 1
            losses.append(loss.item())
            compute_s += time.perf_counter() - tc
        metrics = {"epoch": epoch, "step": step, "loss": float(np.mean(losses)) if losses else float("nan"),
                   "lr": float(sched.get_last_lr()[0]), "train_s": time.monotonic() - t0, "compute_s": compute_s,
                   **validate_mae(model, core, store, val_pos, inputs, cfg, rank, world)}  # fmt: skip
        metrics["epoch_s"] = time.monotonic() - t0  # the driver prints the epoch's line from its checkpoint
        decoder = {k: v for k, v in core.state_dict().items() if not k.startswith("encoder.")}
        extra = {"epoch": epoch, "step": step, "run": cfg["name"], "objective": "mae", "mask_ratio": cfg["mask_ratio"]}
        report_epoch(core.encoder, cfg["builder"], cfg["kwargs"], extra,
                     {"decoder": decoder, "opt": opt.state_dict(), "sched": sched.state_dict(), "epoch": epoch,
                      "step": step}, metrics)  # fmt: skip


def validate_mae(model, core, store, val_pos, inputs, cfg: dict, rank: int, world: int) -> dict:
    """The reconstruction loss over every worker's share of the held-out clips, each batch under a mask drawn from
    a fixed seed (the same masks every epoch, so epochs compare). Empty without a validation split."""
    import numpy as np
    import torch

    from .clips import ordered_batches
    from .common import gather

    if len(val_pos) == 0:
        return {}
    model.eval()
    masks = torch.Generator().manual_seed(cfg["seed"] * 7919 + rank)
    sums = []  # (loss * clips, clips) per batch
    with torch.no_grad():
        for _, clips in ordered_batches(store, val_pos, cfg["batch_size"], rank, world):
            x = inputs(clips, None)
            loss = model(x, core.tube_mask(len(x), masks, x.device))
            sums.append((float(loss) * len(x), len(x)))
    total = np.array(gather(sums), dtype=np.float64).reshape(-1, 2)
    return {"val_loss": float(total[:, 0].sum() / total[:, 1].sum())}
