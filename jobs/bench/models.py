"""Model stages against the device's own matrix-multiply rate: clips/s, achieved FLOP/s and the fraction of peak.

    .venv/bin/python -m jobs.bench.models                   # tiny models, 16-clip batches, every core
    .venv/bin/python -m jobs.bench.models --tiny --profile  # seconds; top ops of one batch
    .venv/bin/python -m jobs.bench.models --device cuda --size base

Models run as the pipeline's stages run them (`pipelines.stages.workers.ModelRunner`): eval, inference_mode, fp32 on
CPU with torch's threads = the cores used, bf16 autocast on CUDA; the forward call each stage makes, on a batch of
the pipeline's default size, inputs already normalised on the device (decoding, normalising and copies are not
timed). Rows: the encoder (forward_features + pooled head), the pruner at keep 1.0 (dense: the same model, nothing
pruned), at its default keep and at keep 0.5 at every pruning block, and the AAM over a gathered group of videos of
mixed lengths, packed as ApplyAam packs them.

FLOPs are counted by `torch.utils.flop_counter.FlopCounterMode` on one batch (multiply-add = 2), with the CPU fused
attention kernel added (FlopCounterMode counts the CUDA attention kernels, not the CPU one); they follow the tokens
the pruner keeps. The peak is the best of a few square matrix products (fp32 on CPU, bf16 on CUDA) timed in the same
rounds as the models, so a burst of outside load lands on both; model-shaped products (the blocks' linear layers and
attention at the encoder's token count) show how much of the gap is small matrices rather than everything else.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from .stats import interleaved, rate

BATCH = 16  # clips per forward: ModelResources().batch_size, the pipeline's default
AAM_LENGTHS = (4, 8, 16, 32)  # clips per video in the AAM's gathered group, cycled: packing pads to the longest
PRUNER_KEEPS = {"dense": 1.0, "default": None, "keep 0.5": 0.5}  # None: the model's own keep ratios


def default_threads() -> int:
    """The cores this process may use (affinity-aware where the OS reports it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _builders(size: str):
    from anon_core.models import (
        pruner_base,
        pruner_small,
        pruner_tiny,
        video_vit_base,
        video_vit_small,
        video_vit_tiny,
    )

    builders = {"tiny": (video_vit_tiny, pruner_tiny), "small": (video_vit_small, pruner_small),
                "base": (video_vit_base, pruner_base)}  # fmt: skip
    if size not in builders:
        raise ValueError(f"size must be one of {sorted(builders)}, got {size!r}")
    return builders[size]


# ---------------------------------------------------------------------------------------------------------------
# FLOPs


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """QK^T and AV of (B, H, Lq, hd) x (B, H, Lk, hd): 2 B H Lq Lk (hd + hd_v)."""
    b, h, lq, d = query_shape
    return 2 * b * h * lq * key_shape[2] * (d + value_shape[3])


def _flop_mapping() -> dict:
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    return {op: _sdpa_flops} if op is not None else {}


def count_flops(fn: Callable[[], object]) -> tuple[int, object]:
    """(FLOPs of one call of fn, its output)."""
    with FlopCounterMode(display=False, custom_mapping=_flop_mapping()) as counter:
        out = fn()
    return counter.get_total_flops(), out


def analytic_vit_gflops(model, seq_lens: list[int]) -> float:
    """jobs/tools/measure_models.py's count: patch embedding + per block 24 L D^2 + 4 L^2 D (mlp_ratio 4)."""
    dim, pe = model.embed_dim, model.patch_embed
    flops = 2 * pe.num_patches * dim * pe.proj.weight[0].numel()
    return (flops + sum(24 * n * dim * dim + 4 * n * n * dim for n in seq_lens)) / 1e9


def analytic_aam_gflops(aam, videos: int, max_clips: int) -> float:
    """Per layer on the padded (V, C, D) batch: qkv + proj 8 V C D^2, attention 4 V C^2 D."""
    d = aam.dim
    return len(aam.blocks) * (8 * videos * max_clips * d * d + 4 * videos * max_clips**2 * d) / 1e9


# ---------------------------------------------------------------------------------------------------------------
# Timed calls


class Device:
    """The pipeline's ModelRunner (device, autocast, threads) plus a synchronising call for timing."""

    def __init__(self, device: str, threads: int) -> None:
        from pipelines.stages.workers import ModelResources, ModelRunner

        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        if device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' asked for, but torch sees no CUDA device here; use --device cpu")
        res = ModelResources(cpus_per_actor=threads, gpus_per_actor=1.0 if device == "cuda" else 0.0)
        self.runner = ModelRunner(res)
        self.device = self.runner.device
        torch.set_num_threads(threads)  # ModelRunner sets it on CPU only; the host side of CUDA runs use it too
        self.dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def model_call(self, fn: Callable[[], object]) -> Callable[[], object]:
        """fn as a stage runs it: inference_mode + the runner's autocast; returns when the device is done."""

        def call():
            with torch.inference_mode(), self.runner.autocast():
                out = fn()
            self.sync()
            return out

        return call

    def repeated(self, fn: Callable[[], object], target_s: float) -> tuple[Callable[[], object], int]:
        """fn called k times per timed call, k chosen so a call lasts about target_s: a 2 ms kernel timed alone
        is mostly timer and launch noise."""
        call = self.model_call(fn)
        call()
        t0 = time.perf_counter()
        call()
        k = max(1, round(target_s / max(time.perf_counter() - t0, 1e-6)))

        def many():
            with torch.inference_mode(), self.runner.autocast():
                for _ in range(k):
                    fn()
            self.sync()

        return many, k


def _matmul_sizes(device: torch.device, tiny: bool) -> tuple[int, ...]:
    if device.type == "cuda":
        return (2048, 4096) if tiny else (4096, 8192)
    return (512, 1024) if tiny else (512, 1024, 2048)


def _shape_ops(encoder, dev: Device, batch: int) -> dict[str, tuple[Callable[[], object], int]]:
    """The encoder's own products at its token count: (fn, FLOPs per fn call). fp32 tensors, run under the stage's
    autocast, as the model's linear layers are."""
    d, heads = encoder.embed_dim, encoder.blocks[0].attn.num_heads
    tokens = encoder.patch_embed.num_patches + encoder.num_cls_tokens
    rows = batch * tokens
    x = torch.randn(rows, d, device=dev.device)
    hidden = torch.randn(rows, 4 * d, device=dev.device)
    ops = {}
    for name, (a, n_out) in {"qkv": (x, 3 * d), "proj": (x, d), "fc1": (x, 4 * d), "fc2": (hidden, d)}.items():
        w, b = torch.randn(n_out, a.shape[1], device=dev.device), torch.zeros(n_out, device=dev.device)
        ops[f"linear {name} ({rows}x{a.shape[1]} @ {a.shape[1]}x{n_out})"] = (
            lambda a=a, w=w, b=b: torch.nn.functional.linear(a, w, b),
            2 * rows * a.shape[1] * n_out,
        )
    q = torch.randn(batch, heads, tokens, d // heads, device=dev.device)
    ops[f"attention ({batch}x{heads}x{tokens}x{d // heads})"] = (
        lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q),
        4 * batch * heads * tokens**2 * (d // heads),
    )
    return ops


# ---------------------------------------------------------------------------------------------------------------
# The run


def _aam_input(dim: int, videos: int, device: torch.device):
    from anon_core.models.aam import pack_clips

    lengths = [AAM_LENGTHS[i % len(AAM_LENGTHS)] for i in range(videos)]
    owner = [v for v, n in enumerate(lengths) for _ in range(n)]
    h = torch.randn(len(owner), dim, generator=torch.Generator().manual_seed(1)).to(device)
    x, mask, _ = pack_clips(h, owner)  # (V, C, D), (V, C): as ApplyAam packs a gathered group
    return x, mask, len(owner)


def profile_ops(fn: Callable[[], object], device: torch.device, top: int = 8) -> list[dict]:
    """Top ops of one call by self time (device time on CUDA), with their share of the total."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
    with profile(activities=activities) as prof:
        fn()
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, key) > 0]
    total = sum(getattr(e, key) for e in events) or 1.0
    events.sort(key=lambda e: getattr(e, key), reverse=True)
    return [{"op": e.key, "self_ms": getattr(e, key) / 1e3, "share": getattr(e, key) / total, "calls": e.count}
            for e in events[:top]]  # fmt: skip


def run_models(
    *,
    device: str = "cpu",
    tiny: bool,
    repeats: int,
    threads: int | None = None,
    size: str = "tiny",
    profile: bool = False,
) -> dict:
    """Clips/s, FLOPs and fraction of the measured matmul peak of the encoder, pruner variants and AAM.

    tiny: 2-clip batches, a 16-video AAM group and short matmul calls (seconds, for tests); otherwise the
    pipeline's 16-clip batches and a 64-video group. `size` picks the builders (small/base: 224 px, slow on CPU).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    threads = threads or default_threads()
    old_threads = torch.get_num_threads()
    try:
        return _run(device, tiny, repeats, threads, size, profile)
    finally:
        torch.set_num_threads(old_threads)


def _run(device: str, tiny: bool, repeats: int, threads: int, size: str, profile: bool) -> dict:
    from anon_core.models import aam_for_dim

    dev = Device(device, threads)
    encoder_builder, pruner_builder = _builders(size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        encoder, pruner = encoder_builder().eval().to(dev.device), pruner_builder().eval().to(dev.device)
        aam = aam_for_dim(encoder.embed_dim).eval().to(dev.device)
    batch = 2 if tiny else BATCH
    frames, side = (g * s for g, s in zip(encoder.grid_size[:2], encoder.patch_embed.tubelet[:2], strict=True))
    clips = torch.randn(batch, 3, frames, side, side, generator=torch.Generator().manual_seed(0)).to(dev.device)
    aam_x, aam_mask, aam_clips = _aam_input(aam.dim, 16 if tiny else 64, dev.device)

    models = {("encoder", ""): (lambda: encoder.forward_head(encoder.forward_features(clips), pre_logits=True), batch)}
    for variant, keep in PRUNER_KEEPS.items():
        models[("pruner", variant)] = (lambda keep=keep: pruner(clips, keep), batch)
    models[("aam", "")] = (lambda: aam(aam_x, aam_mask), aam_clips)

    rows = []
    for (model, variant), (fn, n_clips) in models.items():
        flops, out = count_flops(dev.model_call(fn))
        row = {"model": model, "variant": variant, "clips_per_call": n_clips, "gflops_per_clip": flops / n_clips / 1e9}
        if model == "encoder":
            n = encoder.patch_embed.num_patches
            row["tokens"] = n
            row["analytic_gflops_per_clip"] = analytic_vit_gflops(
                encoder, [n + encoder.num_cls_tokens] * len(encoder.blocks)
            )
        elif model == "pruner":
            row["keep_ratios"] = list(pruner.keep_ratios if PRUNER_KEEPS[variant] is None else
                                      pruner._keep_ratios(PRUNER_KEEPS[variant]))  # fmt: skip
            row["tokens"] = out.real_tokens[-1]
            row["analytic_gflops_per_clip"] = analytic_vit_gflops(pruner, list(out.seq_lens))
        else:
            row["tokens"] = aam_x.shape[1]  # the padded sequence length of the group
            row["analytic_gflops_per_clip"] = analytic_aam_gflops(aam, *aam_x.shape[:2]) / n_clips
        rows.append(row)

    target_s = 0.01 if tiny else 0.05
    peak_calls = {n: _square_matmul(dev, n, target_s) for n in _matmul_sizes(dev.device, tiny)}
    shape_calls = {name: (*dev.repeated(fn, target_s), flops) for name, (fn, flops) in
                   _shape_ops(encoder, dev, batch).items()}  # fmt: skip
    variants = {f"matmul {n}": call for n, (call, _) in peak_calls.items()}
    variants |= {f"shape {name}": call for name, (call, _, _) in shape_calls.items()}
    variants |= {_name(m, v): dev.model_call(fn) for (m, v), (fn, _) in models.items()}
    seconds = interleaved(variants, repeats)

    sizes = {n: rate(gflop, seconds[f"matmul {n}"]) for n, (_, gflop) in peak_calls.items()}
    best = max(sizes, key=lambda n: sizes[n]["median"])
    peak = {"dtype": str(dev.dtype).removeprefix("torch."), "size": best, "gflops": sizes[best],
            "by_size": {str(n): s["median"] for n, s in sizes.items()}}  # fmt: skip
    peak_gflops = sizes[best]["median"]
    for row in rows:
        sec = seconds[_name(row["model"], row["variant"])]
        row["seconds_per_call"] = sec
        row["clips_per_s"] = rate(row["clips_per_call"], sec)
        row["achieved_gflops"] = rate(row["clips_per_call"] * row["gflops_per_clip"], sec)
        row["fraction_of_peak"] = row["achieved_gflops"]["median"] / peak_gflops
    shapes = []
    for name, (_, k, flops) in shape_calls.items():
        r = rate(k * flops / 1e9, seconds[f"shape {name}"])
        shapes.append({"op": name, "gflop": flops / 1e9, "gflops": r, "fraction_of_peak": r["median"] / peak_gflops})
    dense = seconds["pruner dense"]["median"]
    speedup = {v: dense / seconds[f"pruner {v}"]["median"] for v in PRUNER_KEEPS if v != "dense"}

    result = {"device": dev.device.type, "device_name": _device_name(dev.device), "threads": threads,
              "torch": torch.__version__, "size": size, "batch_clips": batch, "aam_clips": aam_clips,
              "repeats": repeats, "peak": peak, "shapes": shapes, "rows": rows, "pruning_speedup": speedup,
              "encoder_matmul_bound": _matmul_bound(encoder, shapes, rows[0])}  # fmt: skip
    if profile:
        result["profile"] = {"encoder": profile_ops(variants["encoder"], dev.device),
                             "pruner default": profile_ops(variants["pruner default"], dev.device)}  # fmt: skip
    return result


def _name(model: str, variant: str) -> str:
    return f"{model} {variant}" if variant else model


def _square_matmul(dev: Device, n: int, target_s: float) -> tuple[Callable[[], object], float]:
    a = torch.randn(n, n, device=dev.device, dtype=dev.dtype)
    b = torch.randn(n, n, device=dev.device, dtype=dev.dtype)
    call, k = dev.repeated(lambda: a @ b, target_s)
    return call, k * 2 * n**3 / 1e9


def _matmul_bound(encoder, shapes: list[dict], encoder_row: dict) -> dict:
    """Seconds the encoder's blocks would take if each product ran at its measured shape rate and nothing else
    (LayerNorm, GELU, residual adds, reshapes, the patch embedding) cost anything: how much of the gap to the peak
    is small-matrix shape, and how much is everything else."""
    bound = len(encoder.blocks) * sum(s["gflop"] / s["gflops"]["median"] for s in shapes)
    measured = encoder_row["seconds_per_call"]["median"]
    return {"seconds": bound, "measured_seconds": measured, "share": bound / measured}


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return "cpu"


# ---------------------------------------------------------------------------------------------------------------
# Report


def _spread(r: dict) -> str:
    return f"±{100 * r['spread'] / 2:.0f}%"


def models_table(result: dict) -> str:
    """Markdown: the model rows, the pruning speed-up, the model-shaped products against the peak."""
    peak = result["peak"]
    p = peak["gflops"]
    lines = [
        f"Model stages on {result['device']} ({result['device_name']}), {result['threads']} threads, "
        f"{result['batch_clips']}-clip batches, AAM over {result['aam_clips']} clips; matmul peak "
        f"{p['median']:.1f} GFLOP/s ({peak['dtype']} {peak['size']}², {_spread(p)}), median of {result['repeats']}.",
        "",
        "| model | variant | tokens | GFLOP/clip | clips/s | spread | GFLOP/s | of peak |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        c, a = r["clips_per_s"], r["achieved_gflops"]
        lines.append(
            f"| {r['model']} | {r['variant']} | {r['tokens']} | {r['gflops_per_clip']:.3g} | "
            f"{c['median']:.1f} | {_spread(c)} | {a['median']:.1f} | {100 * r['fraction_of_peak']:.0f}% |"
        )
    speedup = ", ".join(f"{v} {s:.2f}x" for v, s in result["pruning_speedup"].items())
    lines += ["", f"Pruning speed-up over dense (same rounds): {speedup}.", "",
              "| model-shaped product | GFLOP/s | spread | of peak |", "|---|---:|---:|---:|"]  # fmt: skip
    for s in result["shapes"]:
        g = s["gflops"]
        lines.append(f"| {s['op']} | {g['median']:.1f} | {_spread(g)} | {100 * s['fraction_of_peak']:.0f}% |")
    b = result["encoder_matmul_bound"]
    lines += ["", f"Encoder blocks at their products' shape rates: {1e3 * b['seconds']:.0f} ms of the measured "
              f"{1e3 * b['measured_seconds']:.0f} ms per batch ({100 * b['share']:.0f}%); the rest is everything "
              "else (norms, GELU, adds, reshapes, patch embedding)."]  # fmt: skip
    off = [r for r in result["rows"] if abs(r["gflops_per_clip"] / r["analytic_gflops_per_clip"] - 1) > 0.1]
    for r in off:
        lines.append(
            f"FLOPs of {r['model']} {r['variant']}: counted {r['gflops_per_clip']:.3g}, analytic "
            f"{r['analytic_gflops_per_clip']:.3g} GFLOP/clip (the analytic count charges a pruning block's "
            "MLP at the length before pruning)."
        )
    for name, ops in result.get("profile", {}).items():
        lines += ["", f"Top ops of one {name} batch (self time):", "", "| op | ms | share | calls |",
                  "|---|---:|---:|---:|"]  # fmt: skip
        lines += [f"| {o['op']} | {o['self_ms']:.1f} | {100 * o['share']:.0f}% | {o['calls']} |" for o in ops]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--tiny", action="store_true", help="small batches and short calls: seconds")
    ap.add_argument("--repeats", type=int, default=None, help="timed rounds (default 3 with --tiny, else 10)")
    ap.add_argument("--threads", type=int, help=f"torch threads (default: every core, {default_threads()})")
    ap.add_argument("--size", choices=("tiny", "small", "base"), default="tiny", help="model builders")
    ap.add_argument("--profile", action="store_true", help="add the top ops of one encoder and pruner batch")
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args()
    repeats = args.repeats or (3 if args.tiny else 10)
    result = run_models(device=args.device, tiny=args.tiny, repeats=repeats, threads=args.threads, size=args.size,
                        profile=args.profile)  # fmt: skip
    print(models_table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
