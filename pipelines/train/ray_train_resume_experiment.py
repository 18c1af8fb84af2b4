import os, sys, json, tempfile, time
import numpy as np, torch, ray, ray.train
from ray.train.torch import TorchTrainer
from ray.train import ScalingConfig, RunConfig, FailureConfig, Checkpoint

def train_func(cfg):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    model = ray.train.torch.prepare_model(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    start = 0
    ck = ray.train.get_checkpoint()
    if ck:
        with ck.as_directory() as d:
            st = torch.load(os.path.join(d, "state.pt"))
            model.module.load_state_dict(st["model"]); opt.load_state_dict(st["opt"]); start = st["epoch"] + 1
    shard = ray.train.get_dataset_shard("train")
    for epoch in range(start, cfg["epochs"]):
        seen = []
        for b in shard.iter_torch_batches(batch_size=8):
            x = b["x"].float(); y = b["y"].float()
            seen += b["id"].tolist()
            loss = ((model(x).squeeze(-1) - y) ** 2).mean()
            opt.zero_grad(); loss.backward(); opt.step()
        if cfg.get("crash_at") == epoch and not os.path.exists(cfg["flag"]):
            open(cfg["flag"], "w").close(); os._exit(1)
        with tempfile.TemporaryDirectory() as d:
            if ray.train.get_context().get_world_rank() == 0:
                torch.save({"model": model.module.state_dict(), "opt": opt.state_dict(), "epoch": epoch}, os.path.join(d, "state.pt"))
            ray.train.report({"epoch": epoch, "loss": loss.item(), "first_ids": seen[:4]}, checkpoint=Checkpoint.from_directory(d))

def main():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ctx = ray.data.DataContext.get_current(); ctx.execution_options.preserve_order = True
    rng = np.random.default_rng(0)
    items = [{"id": i, "x": rng.standard_normal(4).astype(np.float32), "y": float(i % 3)} for i in range(64)]
    ds = ray.data.from_items(items)
    name = sys.argv[1]; crash = int(sys.argv[2]) if len(sys.argv) > 2 else -1
    t = TorchTrainer(train_func, train_loop_config={"epochs": 4, "crash_at": crash, "flag": f"/tmp/rt/{name}.flag"},
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
        run_config=RunConfig(name=name, storage_path="/tmp/rt/store", failure_config=FailureConfig(max_failures=0)),
        datasets={"train": ds})
    try:
        r = t.fit()
        print("RESULT", r.metrics)
        with r.checkpoint.as_directory() as d:
            print("W", torch.load(os.path.join(d, "state.pt"))["model"]["weight"].tolist())
    except Exception as e:
        print("FAILED", type(e).__name__, str(e)[:200])
main()
