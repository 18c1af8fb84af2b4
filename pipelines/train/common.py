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
