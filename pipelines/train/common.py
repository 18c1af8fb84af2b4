"""What the Ray Train jobs share: where they run (workers, GPUs) and where their checkpoints go (local or any fsspec
URI, e.g. s3://), and bf16 autocast on CUDA workers."""

from __future__ import annotations

import contextlib


def use_gpu(requested: bool | None) -> bool:
    """None: use GPUs when the cluster has any (the driver itself may have none: a CPU head with GPU workers)."""
    if requested is not None:
        return requested
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0


def run_config(name: str, storage_path: str, max_failures: int):
    """RunConfig with a fixed name: re-running the same job resumes from its latest checkpoint. Remote storage goes
    through fsspec (pyarrow's own S3 client would ignore s3fs settings such as AWS_ENDPOINT_URL / profiles)."""
    from ray.train import FailureConfig, RunConfig

    kwargs = {}
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


@contextlib.contextmanager
def ordered_data():
    """Ray Data keeps row order while the job's datasets are built and trained on (the same data order on a re-run,
    so a resumed run matches an uninterrupted one); the caller's setting is restored afterwards."""
    import ray.data

    options = ray.data.DataContext.get_current().execution_options
    was_ordered, options.preserve_order = options.preserve_order, True
    try:
        yield
    finally:
        options.preserve_order = was_ordered


def fit(train_func, loop_config: dict, cfg, dataset):
    """One TorchTrainer run of `train_func` on `dataset` with the job config's workers, name, storage and failure
    budget; the final bundle is exported to `cfg.out` when given."""
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        train_func,
        train_loop_config=loop_config,
        scaling_config=scaling_config(cfg.num_workers, cfg.cpus_per_worker, cfg.use_gpu),
        run_config=run_config(cfg.name, cfg.storage_path, cfg.max_failures),
        datasets={"train": dataset},
    )
    result = trainer.fit()
    if cfg.out and result.checkpoint is not None:
        export_bundle(result.checkpoint, cfg.out)
    return result


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
