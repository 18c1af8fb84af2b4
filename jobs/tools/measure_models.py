"""CPU forward time per clip and parameter counts of the video ViT and the tubelet pruner, dense vs pruned.

    .venv/bin/python jobs/tools/measure_models.py                      # tiny, small, base; batch 1 and 8
    .venv/bin/python jobs/tools/measure_models.py --models tiny --batches 1 --repeats 5

fp32, torch.no_grad, eval mode, `--threads` intra-op threads. Time per clip = fastest of `--repeats` batch times /
batch size (the minimum, because other processes on a shared machine only ever add time; variants are timed in
interleaved rounds so a burst of outside load does not land on one of them). GFLOPs per clip are
counted from the sequence length entering each block (multiply-add = 2 FLOPs), independent of machine load.
Rows: the plain encoder (1 CLS), the pruner at keep 1.0 (dense path, 2 CLS), at the default keep (0.9 at each
pruning block) and at keep 0.5 at every pruning block. `tokens` = tubelet tokens left after the last stage.
"""

from __future__ import annotations

import argparse
import time

import torch

from anon_core.models import pruner_base, pruner_small, pruner_tiny, video_vit_base, video_vit_small, video_vit_tiny

BUILDERS = {
    "tiny": (video_vit_tiny, pruner_tiny),
    "small": (video_vit_small, pruner_small),
    "base": (video_vit_base, pruner_base),
}


def gflops(model, seq_lens: list[int]) -> float:
    """Patch embedding + per block: qkv, proj and MLP (24 L D^2 at mlp_ratio 4) plus QK^T and AV (4 L^2 D)."""
    D, pe = model.embed_dim, model.patch_embed
    flops = 2 * pe.num_patches * D * pe.proj.weight[0].numel()
    flops += sum(24 * L * D * D + 4 * L * L * D for L in seq_lens)
    return flops / 1e9


def _time_round_robin(fns: list, repeats: int) -> list[float]:
    """Fastest time of each fn, timed in interleaved rounds so a burst of outside load hits every variant alike."""
    for fn in fns:
        fn()  # warm-up: allocator, oneDNN primitive caches
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="tiny,small,base")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32, no_grad")
    header = f"{'model':<7}{'variant':<16}{'params (M)':>11}{'clip':>12}{'tokens':>8}{'GFLOPs':>8}"
    print(f"{header}{'batch':>6}{'ms / clip':>11}")
    for name in args.models.split(","):
        encoder_builder, pruner_builder = BUILDERS[name]
        encoder, pruner = encoder_builder().eval(), pruner_builder().eval()
        T, H = (g * s for g, s in zip(encoder.grid_size[:2], encoder.patch_embed.tubelet[:2], strict=True))
        clip = f"{T}x{H}x{H}"
        variants = [
            ("encoder", encoder, {}),
            ("pruner keep1.0", pruner, {"keep_ratio": 1.0}),
            ("pruner keep0.9", pruner, {}),
            ("pruner keep0.5", pruner, {"keep_ratio": 0.5}),
        ]
        for batch in (int(b) for b in args.batches.split(",")):
            video = torch.randn(batch, 3, T, H, H)
            rows = []
            with torch.no_grad():
                for variant, model, kwargs in variants:
                    out = model(video, **kwargs)
                    if hasattr(out, "seq_lens"):
                        tokens, seq_lens = out.real_tokens[-1], list(out.seq_lens)
                    else:
                        tokens = encoder.patch_embed.num_patches
                        seq_lens = [tokens + encoder.num_cls_tokens] * len(encoder.blocks)
                    params = sum(p.numel() for p in model.parameters()) / 1e6
                    flops = gflops(model, seq_lens)
                    rows.append(f"{name:<7}{variant:<16}{params:>11.2f}{clip:>12}{tokens:>8}{flops:>8.1f}")
                fns = [lambda m=model, v=video, k=kwargs: m(v, **k) for _, model, kwargs in variants]
                seconds = _time_round_robin(fns, args.repeats)
            for row, sec in zip(rows, seconds, strict=True):
                print(f"{row}{batch:>6}{1000 * sec / batch:>11.1f}", flush=True)

if __name__ == "__main__":
    main()
