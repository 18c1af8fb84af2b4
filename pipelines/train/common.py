"""What the Ray Train jobs share: the data fields of their configs and the driver's data preparation (labels,
validation split, decode-once clips), where they run (workers, GPUs), where their checkpoints go (local or any
fsspec URI, e.g. s3://), validation metrics gathered over workers, one progress line per epoch, and the export of
the best checkpoint by validation."""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

from anon_core.video.reader import DEFAULT_BACKEND

from .schema import LabelSchema


@dataclass(kw_only=True)
class TrainData:
    """Config fields every training job shares: which labels, which clips, how validation is carved."""

    label_schema: LabelSchema = field(default_factory=LabelSchema)
    val_fraction: float = 0.1  # of the training videos, held out to validate every epoch and pick the export
    val_by: Literal["video", "identity"] = "video"  # identity: no person in both train and validation
    max_failed_fraction: float = 0.05  # more videos than this failing to decode stops the run (exit 1)
    decode_backend: Literal["decord", "pyav", "torchcodec"] = DEFAULT_BACKEND
    max_clips_per_video: int | None = None  # None: every clip; else evenly spread over the video
    shuffle_window: int = 1024  # clips a worker holds and shuffles at once (a window >= the data: a full shuffle)
    clip_frames: int = 16
    clip_stride: int = 2
    clip_size: int = 112

    def data_errors(self) -> list[str]:
        errors = []
        if not 0 <= self.val_fraction < 1:
            errors.append(f"val_fraction must lie in [0, 1), got {self.val_fraction}")
        if not 0 <= self.max_failed_fraction <= 1:
            errors.append(f"max_failed_fraction must lie in [0, 1], got {self.max_failed_fraction}")
        if self.shuffle_window < 1:
            errors.append(f"shuffle_window must be >= 1, got {self.shuffle_window}")
        return errors

    def clip_spec(self):
        from anon_core.video import ClipSpec

        return ClipSpec(self.clip_frames, self.clip_stride, self.clip_size, self.max_clips_per_video)


@dataclass
class Prepared:
    """What the driver hands the workers (and --dry-run prints)."""

    labelled: object  # schema.Labelled, with split "val" carved from train
    cache: str | None  # the decoded clips (None in a dry run)
    train_clips: int | None = None
    val_clips: int | None = None

    def videos(self, split: str) -> list[int]:
        v = self.labelled.videos
        return v.loc[v["split"] == split, "index"].astype(int).tolist()

    def loop_config(self) -> dict:
        v = self.labelled.videos
        return {
            "cache": self.cache, "train_videos": self.videos("train"), "val_videos": self.videos("val"),
            "action": v["action"].astype(int).tolist(), "identity": v["identity"].astype(int).tolist(),
            "attributes": v[self.labelled.attributes].to_numpy(np.float32).tolist(),
            "classes": self.labelled.classes, "attribute_names": self.labelled.attributes,
        }  # fmt: skip


def prepare_data(cfg, log=print, decode: bool = True) -> Prepared:
    """Labels by the config's schema, a seeded validation split carved from train, and (decode=True) the clips of
    train + val decoded once into the cache under storage_path."""
    from .clips import ClipStore, build_clip_cache
    from .schema import LabelError, carve_validation, resolve_labels

    labelled = resolve_labels(cfg.manifest, cfg.label_schema, needed=getattr(cfg, "needs_labels", True))
    errors = cfg.class_errors(labelled)  # before any decoding: a refused config costs nothing
    if errors:
        raise LabelError("; ".join(errors))
    labelled.videos["split"] = carve_validation(labelled.videos, cfg.val_fraction, cfg.val_by, cfg.seed)
    if not decode:
        return Prepared(labelled, None)
    v = labelled.videos
    cache = build_clip_cache(v[v["split"].isin(["train", "val"])], cfg.clip_spec(), local_or_uri(cfg.storage_path),
                             cfg.decode_backend, cfg.max_failed_fraction, log)  # fmt: skip
    store = ClipStore(cache)
    prepared = Prepared(labelled, cache)
    prepared.train_clips = len(store.clips_of(prepared.videos("train")))
    prepared.val_clips = len(store.clips_of(prepared.videos("val")))
    return prepared


def dry_run(cfg, kind: str, log=print) -> dict:
    """What a run would train on, without training: the resolved schema, videos per class and split, the clip count
    (from the cache when it exists, else from each video's header) and the plan."""
    from concurrent.futures import ThreadPoolExecutor

    from anon_core.video.segments import probe_clip_count

    from .clips import ClipStore, cache_uri, steps_per_epoch

    prepared = prepare_data(cfg, decode=False)
    v = prepared.labelled.videos
    used = v[v["split"].isin(["train", "val"])]
    spec = cfg.clip_spec()
    cache = cache_uri(local_or_uri(cfg.storage_path), used, spec, cfg.decode_backend)
    try:
        store = ClipStore(cache)
        clips = {s: len(store.clips_of(prepared.videos(s))) for s in ("train", "val")}
        source, failed = f"the decoded cache {cache}", None
    except (FileNotFoundError, OSError):

        def count(uri: str) -> int:
            try:
                return probe_clip_count(uri, spec)
            except Exception:  # the real run records it as an error row
                return -1

        with ThreadPoolExecutor(4) as pool:
            n = dict(zip(used["index"], pool.map(count, used["uri"]), strict=True))
        clips = {s: sum(max(0, n[i]) for i in prepared.videos(s)) for s in ("train", "val")}
        failed = sum(c <= 0 for c in n.values())
        source = f"video headers (not decoded yet; the run decodes them once into {cache})"
    plan = {
        "kind": kind, "epochs": cfg.epochs, "workers": cfg.num_workers, "batch_per_worker": cfg.batch_size,
        "steps_per_epoch": steps_per_epoch(clips["train"], cfg.batch_size, cfg.num_workers) if kind != "aam"
        else steps_per_epoch(len(prepared.videos("train")), cfg.batch_size, cfg.num_workers),
        "clip": {"frames": spec.num_frames, "stride": spec.stride, "size": spec.size, "max_per_video": spec.max_clips},
        "validation": {"fraction": cfg.val_fraction, "by": cfg.val_by}, "storage": local_or_uri(cfg.storage_path),
        "out": cfg.out,
    }  # fmt: skip
    report = {
        "schema": asdict(cfg.label_schema), "classes": prepared.labelled.classes,
        "attributes": prepared.labelled.attributes, "videos_per_class": prepared.labelled.class_counts(),
        "clips": clips, "clips_from": source, "videos_without_clips": failed, "plan": plan,
    }  # fmt: skip
    ls = cfg.label_schema
    log(f"schema: action={ls.action!r} ({len(report['classes'])} classes: {', '.join(report['classes'])}), "
        f"attributes={report['attributes']}, identity={ls.identity!r}, split={ls.split!r}")
    for split, counts in report["videos_per_class"].items():
        log(f"  {split:>6}: {sum(counts.values())} videos  " + "  ".join(f"{k}={n}" for k, n in counts.items()))
    log(f"clips: {clips['train']} train, {clips['val']} validation (from {source})"
        + (f"; {failed} videos show no clip in their header" if failed else ""))
    log(f"plan: {plan['epochs']} epochs x {plan['steps_per_epoch']} steps on {plan['workers']} workers, batch "
        f"{plan['batch_per_worker']} per worker; checkpoints under {plan['storage']}, best exported to {plan['out']}")
    return report


def local_or_uri(path: str) -> str:
    """Relative local paths are resolved against the working directory (Ray Train needs absolute ones)."""
    if "://" in path:
        return path
    return os.path.abspath(os.path.expanduser(path))


def use_gpu(requested: bool | None) -> bool:
    """None: use GPUs when the cluster has any (the driver itself may have none: a CPU head with GPU workers)."""
    if requested is not None:
        return requested
    import ray

    if not ray.is_initialized():  # a run whose clips were cached has not touched Ray yet (RAY_ADDRESS applies)
        ray.init()
    return ray.cluster_resources().get("GPU", 0) > 0


def run_config(name: str, storage_path: str, max_failures: int):
    """RunConfig with a fixed name: re-running the same job resumes from its latest checkpoint. Remote storage goes
    through fsspec (pyarrow's own S3 client would ignore s3fs settings such as AWS_ENDPOINT_URL / profiles)."""
    from ray.train import FailureConfig, RunConfig

    kwargs = {}
    storage_path = local_or_uri(storage_path)
    if "://" in storage_path and not storage_path.startswith("file://"):
        import fsspec
        import pyarrow.fs

        fs, path = fsspec.core.url_to_fs(storage_path)
        kwargs["storage_filesystem"] = pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs))
        storage_path = path
    return RunConfig(name=name, storage_path=storage_path, failure_config=FailureConfig(max_failures=max_failures),
                     **kwargs)  # fmt: skip


def scaling_config(num_workers: int, cpus_per_worker: float, gpu: bool | None):
    from ray.train import ScalingConfig

    gpu = use_gpu(gpu)
    return ScalingConfig(num_workers=num_workers, use_gpu=gpu, resources_per_worker={"CPU": cpus_per_worker,
                         **({"GPU": 1} if gpu else {})})  # fmt: skip


def autocast(torch, device):
    """bf16 autocast on CUDA workers (fp32 weights and optimizer state); nothing on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def fit(train_func, loop_config: dict, cfg, select: str, order: str = "max", log=print):
    """One TorchTrainer run of `train_func` with the job config's workers, name, storage and failure budget (the
    workers read their data from the clip cache named in `loop_config`). The checkpoint that is best by the
    validation metric `select` (`order` max or min) is exported to `cfg.out` when given, and the choice is logged."""
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        train_func,
        train_loop_config=loop_config,
        scaling_config=scaling_config(cfg.num_workers, cfg.cpus_per_worker, cfg.use_gpu),
        run_config=run_config(cfg.name, cfg.storage_path, cfg.max_failures),
    )
    label = "aam" if not hasattr(cfg, "kind") else cfg.kind + (" mae" if getattr(cfg, "objective", "") == "mae" else "")
    with EpochLines(f"{local_or_uri(cfg.storage_path).rstrip('/')}/{cfg.name}", label, cfg.epochs, log):
        result = trainer.fit()
    if result.error is None and result.checkpoint is not None:
        best, why = best_checkpoint(result, select, order)
        log(why)
        if cfg.out:
            export_bundle(best, cfg.out)
            log(f"exported to {cfg.out}")
    return result


def best_checkpoint(result, select: str, order: str):
    """(checkpoint, a sentence saying which and why): the best by `select` among the run's checkpoints; the last
    one when no checkpoint reports it (val_fraction=0)."""
    scored = [(c, m) for c, m in (result.best_checkpoints or []) if m.get(select) is not None]
    last = result.metrics or {}
    if not scored:
        return result.checkpoint, f"exporting the last epoch ({last.get('epoch')}): no checkpoint reports {select}"
    pick = max(scored, key=lambda cm: (cm[1][select] if order == "max" else -cm[1][select], cm[1]["epoch"]))
    c, m = pick
    return c, (f"exporting epoch {m['epoch']}: best {select} {m[select]:.4g} ({order}) of {len(scored)} epochs; the "
               f"last epoch ({last.get('epoch')}) had {last.get(select, float('nan')):.4g}")  # fmt: skip


def gather(values: list) -> list:
    """Every worker's list, concatenated in rank order (validation predictions); a single process passes through."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(values)
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, list(values))
    return [v for part in out for v in part]


def epoch_line(label: str, epochs: int, metrics: dict) -> str:
    """`[train encoder] epoch 3/30 loss 1.42 lr 0.0008 ... val_top1 0.61 (19.8 s)`: an epoch's metrics, one line."""
    shown = " ".join(f"{k} {v:.4g}" for k, v in metrics.items()
                     if k not in ("epoch", "step", "epoch_s") and isinstance(v, float))  # fmt: skip
    seconds = metrics.get("epoch_s", metrics.get("train_s"))
    return f"[train {label}] epoch {metrics['epoch'] + 1}/{epochs} {shown}" + (f" ({seconds:.1f} s)" if seconds else "")


class EpochLines:
    """On the driver, while a run trains: one line per epoch, read from the checkpoints the run writes (each
    bundle's config.json carries its epoch's metrics). So the driver shows progress without forwarding every
    worker's log (Ray's own lines stay in its log folder unless --verbose), and a resumed run says where it
    resumed. Polls the run folder (local or any fsspec URI) every `every_s` seconds from a thread."""

    def __init__(self, run_dir: str, label: str, epochs: int, log=print, every_s: float = 2.0) -> None:
        import threading

        self.run_dir, self.label, self.epochs, self.log, self.every_s = run_dir.rstrip("/"), label, epochs, log, every_s
        self.seen: set[str] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="epoch-lines", daemon=True)

    def _configs(self) -> list[str]:
        import fsspec

        fs, path = fsspec.core.url_to_fs(self.run_dir)
        return [fs.unstrip_protocol(p) if "://" in self.run_dir else p
                for p in fs.glob(f"{path}/checkpoint_*/config.json")]  # fmt: skip

    def poll(self) -> None:
        import json

        import fsspec

        new = []
        for uri in self._configs():
            if uri in self.seen:
                continue
            try:
                with fsspec.open(uri) as f:
                    metrics = json.load(f)["metrics"]
            except (OSError, ValueError, KeyError):  # still being written: the next poll reads it
                continue
            self.seen.add(uri)
            new.append(metrics)
        for metrics in sorted(new, key=lambda m: m["epoch"]):
            self.log(epoch_line(self.label, self.epochs, metrics))

    def _run(self) -> None:
        while not self.stop.wait(self.every_s):
            self.poll()

    def __enter__(self) -> EpochLines:
        done = self._configs()
        self.seen.update(done)  # an earlier run's epochs: the run resumes after them
        if done:
            self.log(f"[train {self.label}] resuming: {len(done)} checkpoints in {self.run_dir}")
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self.poll()  # the last epoch's checkpoint


def restore(core) -> dict | None:
    """Inside a train function: load the latest checkpoint's weights into `core` and return its train_state.pt
    (None on a fresh start)."""
    import os

    import ray.train
    import torch
    from safetensors.torch import load_file

    ckpt = ray.train.get_checkpoint()
    if not ckpt:
        return None
    with ckpt.as_directory() as d:
        core.load_state_dict(load_file(os.path.join(d, "model.safetensors")))
        return torch.load(os.path.join(d, "train_state.pt"), weights_only=True)


def report_epoch(core, builder: str, kwargs: dict, extra: dict, state: dict, metrics: dict) -> None:
    """Report an epoch's metrics; rank 0 adds a checkpoint: a model bundle (what anonymize loads, with the metrics
    in its config) plus train_state.pt (what `restore` gives back)."""
    import os
    import tempfile

    import ray.train
    import torch

    from anon_core.models.bundle import save_bundle

    with tempfile.TemporaryDirectory() as d:
        checkpoint = None
        if ray.train.get_context().get_world_rank() == 0:
            save_bundle(core, d, builder, kwargs, trained=True, extra={**extra, "metrics": metrics})
            torch.save(state, os.path.join(d, "train_state.pt"))
            checkpoint = ray.train.Checkpoint.from_directory(d)
        ray.train.report(metrics, checkpoint=checkpoint)


def export_bundle(checkpoint, out: str) -> str:
    """The bundle files of a Ray Train checkpoint (not its training state) to `out`: what anonymize loads."""
    import os

    import fsspec

    fs, path = fsspec.core.url_to_fs(out)
    fs.makedirs(path, exist_ok=True)
    with checkpoint.as_directory() as d:
        for name in ("model.safetensors", "config.json"):  # config last: a folder with a config is a whole bundle
            fs.put_file(os.path.join(d, name), f"{path.rstrip('/')}/{name}")
    return out
