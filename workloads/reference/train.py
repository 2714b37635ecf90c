"""Train the reference fraud model under torchrun: `--mode ddp` (data-parallel) or `--mode fsdp2` (fully sharded).

    torchrun --nproc-per-node 2 -m workloads.reference.train --training-set DIR --checkpoint-dir DIR --mode fsdp2

- Backend: NCCL when CUDA is available, gloo on CPU. bf16 where the GPU supports it (FSDP2: a MixedPrecisionPolicy
  with fp32 gradient reduction; DDP: autocast), fp32 on CPU unless asked.
- Deterministic under `--seed`: the model is initialised from the seed, every epoch's shuffle is derived from
  (seed, epoch), there is no dropout, and deterministic kernels are requested. The global batch is fixed and split
  evenly across ranks, so 1 and N processes take the same optimisation steps (up to floating-point summation order).
- Checkpoints: `torch.distributed.checkpoint` after every epoch into `<checkpoint-dir>/epoch-NNNN/`, marked complete
  by rank 0 only once every rank has written its shards. On start the last complete checkpoint is loaded, so a worker
  killed mid-run and restarted by torchrun (`--max-restarts`) continues from there, in the same MLflow run.
- Each torchrun restart gets its own key prefix in the rendezvous store (`TORCHELASTIC_RESTART_COUNT`): restarted
  gloo workers would otherwise read the addresses their dead peers published in the previous round and hang.
- Evaluation on a time-based hold-out (PR-AUC, recall at 1 % FPR) each epoch, and a scikit-learn
  HistGradientBoostingClassifier baseline on the same split at the end.
- MLflow (rank 0 only): params, per-epoch metrics, system metrics, one dataset input per feature view tagged with
  its classification and site, the lineage file, and the model (TorchScript, signature, input example) registered
  under `--model-name`. Tracking is configured by MLflow's own environment (MLFLOW_TRACKING_URI, ..._USERNAME,
  ..._PASSWORD, MLFLOW_TRACKING_SERVER_CERT_PATH); without a tracking URI the run is not tracked (said on stderr).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import resource
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)

from workloads.reference.data import LABEL, TIMESTAMP, ENTITY_KEY, Split, TrainingSet, TrainingSetError, \
    load_training_set, time_split
from workloads.reference.metrics import evaluate
from workloads.reference.model import FraudMLP, FraudScorer

MODES = ("ddp", "fsdp2")
PRECISIONS = ("auto", "fp32", "bf16")
CHECKPOINT_PREFIX = "epoch-"
COMPLETE_MARKER = "COMPLETE"
RUN_STATE = "run.json"
CLASSIFICATION_TAG = "finml.classification"
SITE_TAG = "finml.site"
KEEP_CHECKPOINTS = 2
STORE_TIMEOUT = dt.timedelta(seconds=int(os.environ.get("FINML_STORE_TIMEOUT_S", "300")))


# ------------------------------------------------------------------------------------------------------ arguments

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="workloads.reference.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--training-set", required=True, type=Path,
                   help="directory holding training_set.parquet and training_set.lineage.json")
    p.add_argument("--checkpoint-dir", required=True, type=Path,
                   help="where distributed checkpoints go (the classification's storage on the cluster)")
    p.add_argument("--mode", choices=MODES, default="ddp")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--global-batch-size", type=int, default=512, help="split evenly across ranks")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--hidden", default="128,128,64", help="hidden layer widths, comma-separated")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="auto: bf16 on GPUs that support it, fp32 elsewhere")
    p.add_argument("--holdout-fraction", type=float, default=0.2, help="latest share of event time held out")
    p.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                   help="fit the HistGradientBoostingClassifier baseline on the same split (rank 0)")
    p.add_argument("--model-name", default=None, help="registered model name; default: do not register")
    p.add_argument("--experiment", default="finml-reference-training")
    p.add_argument("--run-name", default=None)
    p.add_argument("--summary-json", type=Path, default=None, help="rank 0 writes the final figures here")
    p.add_argument("--pause-after-epoch-s", type=float, default=0.0,
                   help="sleep after each checkpoint (fault-injection tests kill a worker in this window)")
    args = p.parse_args(argv)
    try:
        args.hidden = tuple(int(h) for h in args.hidden.split(",") if h)
    except ValueError:
        p.error(f"--hidden {args.hidden!r}: allowed: comma-separated positive integers, e.g. 128,64")
    if not args.hidden or min(args.hidden) < 1:
        p.error("--hidden: at least one positive width")
    if args.epochs < 1:
        p.error("--epochs: at least 1")
    return args


# ---------------------------------------------------------------------------------------------------- distributed

@dataclass(frozen=True)
class Dist:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str
    restart_count: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    """Join the process group torchrun set up, under a store prefix of this restart round."""
    use_cuda = torch.cuda.is_available()
    backend = "nccl" if use_cuda else "gloo"
    restart_count = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    if "RANK" in os.environ:
        rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "False") == "True"
        base = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size,
                             is_master=(rank == 0 and not agent_store), timeout=STORE_TIMEOUT,
                             wait_for_workers=False)
        store = dist.PrefixStore(f"finml/restart-{restart_count}", base)
    else:  # plain `python -m workloads.reference.train`: one process, no torchrun
        rank, world_size, local_rank = 0, 1, 0
        store = dist.HashStore()
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=STORE_TIMEOUT,
                            **({"device_id": device} if use_cuda else {}))
    return Dist(rank, world_size, local_rank, device, backend, restart_count)


def use_bf16(precision: str, device: torch.device) -> bool:
    if precision == "bf16":
        return True
    if precision == "fp32":
        return False
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def make_deterministic(seed: int, device: torch.device) -> None:
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(seed)
    np.random.seed(seed % (2 ** 32))


def build_model(args: argparse.Namespace, n_features: int, d: Dist, bf16: bool) -> nn.Module:
    torch.manual_seed(args.seed)  # identical initial weights on every rank, whatever ran before
    model = FraudMLP(n_features, args.hidden).to(d.device)
    if args.mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel
        return DistributedDataParallel(model, device_ids=[d.local_rank] if d.device.type == "cuda" else None)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    mesh = init_device_mesh(d.device.type, (d.world_size,), mesh_dim_names=("dp",))
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else \
        MixedPrecisionPolicy()
    for block in model.blocks:  # one all-gather unit per block, then the root (head) last
        fully_shard(block, mesh=mesh, mp_policy=mp)
    fully_shard(model, mesh=mesh, mp_policy=mp)
    return model


# ---------------------------------------------------------------------------------------------------- checkpoints

def checkpoint_path(root: Path, epoch: int) -> Path:
    return root / f"{CHECKPOINT_PREFIX}{epoch:04d}"


def latest_complete_epoch(root: Path) -> int | None:
    """Epoch number of the newest checkpoint every rank finished writing; partial ones are ignored."""
    done = []
    for path in root.glob(f"{CHECKPOINT_PREFIX}*"):
        try:
            epoch = int(path.name.removeprefix(CHECKPOINT_PREFIX))
        except ValueError:
            continue
        if (path / COMPLETE_MARKER).exists():
            done.append(epoch)
    return max(done) if done else None


def save_checkpoint(root: Path, epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer, d: Dist,
                    progress: dict[str, Any]) -> None:
    path = checkpoint_path(root, epoch)
    if d.is_main and path.exists():
        shutil.rmtree(path)  # an incomplete attempt from before a restart
    dist.barrier()
    model_sd, optim_sd = get_state_dict(model, optimizer)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(path))
    dist.barrier()  # every rank's shards and the metadata are on storage
    if d.is_main:
        (path / "progress.json").write_text(json.dumps(progress, indent=1, sort_keys=True))
        (path / COMPLETE_MARKER).write_text(f"{epoch}\n")
        complete = sorted(p for p in root.glob(f"{CHECKPOINT_PREFIX}*") if (p / COMPLETE_MARKER).exists())
        for old in complete[:-KEEP_CHECKPOINTS]:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()


def load_checkpoint(root: Path, epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    path = checkpoint_path(root, epoch)
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    return json.loads((path / "progress.json").read_text())


def run_fingerprint(args: argparse.Namespace, ts: TrainingSet, world_size: int) -> dict[str, Any]:
    """What a checkpoint must agree with to be resumed: same data, model shape and optimisation."""
    return {"training_set_sha256": ts.lineage.sha256, "mode": args.mode, "hidden": list(args.hidden),
            "seed": args.seed, "global_batch_size": args.global_batch_size, "lr": args.lr,
            "epochs": args.epochs, "world_size": world_size}


# -------------------------------------------------------------------------------------------------------- MLflow

class Tracker:
    """MLflow calls of rank 0; a no-op elsewhere and when no tracking URI is configured."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.run_id: str | None = None
        if enabled:
            os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
            import mlflow
            self.mlflow = mlflow

    def start(self, args: argparse.Namespace, run_id: str | None) -> str | None:
        if not self.enabled:
            return None
        mlflow = self.mlflow
        mlflow.set_system_metrics_sampling_interval(float(os.environ.get("FINML_SYSTEM_METRICS_INTERVAL_S", "2")))
        mlflow.set_system_metrics_samples_before_logging(1)
        if run_id is None:
            mlflow.set_experiment(args.experiment)
            run = mlflow.start_run(run_name=args.run_name, log_system_metrics=True)
        else:
            run = mlflow.start_run(run_id=run_id, log_system_metrics=True)
        self.run_id = run.info.run_id
        return self.run_id

    def log_start(self, args: argparse.Namespace, ts: TrainingSet, split: Split, d: Dist, bf16: bool) -> None:
        if not self.enabled:
            return
        mlflow = self.mlflow
        lineage = ts.lineage
        mlflow.log_params({
            "mode": args.mode, "world_size": d.world_size, "backend": d.backend, "device": d.device.type,
            "precision": "bf16" if bf16 else "fp32", "epochs": args.epochs,
            "global_batch_size": args.global_batch_size, "lr": args.lr, "weight_decay": args.weight_decay,
            "hidden": ",".join(map(str, args.hidden)), "seed": args.seed,
            "holdout_fraction": args.holdout_fraction, "holdout_cutoff": split.cutoff.isoformat(),
            "train_rows": len(split.y_train), "holdout_rows": len(split.y_holdout),
            "n_features": len(split.features), "training_set_sha256": lineage.sha256,
            "torch_version": torch.__version__,
        })
        mlflow.set_tags({CLASSIFICATION_TAG: lineage.classification, SITE_TAG: lineage.site,
                         "finml.training_set_format": lineage.raw["format"]})
        frame = ts.frame
        for view in lineage.feature_views:
            columns = [ENTITY_KEY, TIMESTAMP, *view.features, LABEL]
            dataset = mlflow.data.from_pandas(frame[columns], source=str(ts.parquet_path.resolve()),
                                              name=view.name, targets=LABEL)
            mlflow.log_input(dataset, context="training", tags={
                CLASSIFICATION_TAG: view.classification, SITE_TAG: lineage.site,
                "finml.training_set_sha256": lineage.sha256})
        mlflow.log_dict(lineage.raw, "lineage/training_set.lineage.json")

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self.enabled:
            self.mlflow.log_metrics(metrics, step=step)

    def log_model(self, scorer: nn.Module, ts: TrainingSet, split: Split, model_name: str | None) -> dict[str, Any]:
        if not self.enabled:
            return {}
        from mlflow.models import infer_signature
        mlflow = self.mlflow
        scripted = torch.jit.script(scorer.cpu().eval())
        # Raw feature columns with the training set's own dtypes: what a client sends (integers stay integers).
        example = ts.frame[split.features].tail(5).reset_index(drop=True)
        with torch.no_grad():
            prediction = scripted(torch.from_numpy(example.to_numpy(dtype=np.float32))).numpy()
        signature = infer_signature(example, prediction)
        info = mlflow.pytorch.log_model(scripted, name="model", signature=signature, input_example=example,
                                        registered_model_name=model_name, serialization_format="pickle",
                                        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])
        out = {"model_uri": info.model_uri}
        if model_name is not None and info.registered_model_version is not None:
            out["registered_model"] = model_name
            out["model_version"] = str(info.registered_model_version)
        return out

    def end(self, status: str = "FINISHED") -> None:
        if self.enabled:
            self.mlflow.end_run(status=status)


# ------------------------------------------------------------------------------------------------------ training

def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def cosine_lr(base: float, epoch: int, epochs: int) -> float:
    return base * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs)) if epochs > 1 else base


def scores_of(model: nn.Module, x: torch.Tensor, mode: str, bf16: bool, device: torch.device,
              chunk: int = 8192) -> np.ndarray:
    """Hold-out scores. Every rank runs the forward pass: FSDP2 needs all ranks to all-gather the parameters."""
    net = model.module if mode == "ddp" else model
    net.eval()
    out = []
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16 and mode == "ddp"):
        for start in range(0, len(x), chunk):
            out.append(torch.sigmoid(net(x[start:start + chunk]).float()).squeeze(-1).cpu())
    net.train()
    return torch.cat(out).numpy()


def gbt_baseline(split: Split, seed: int) -> dict[str, float]:
    from sklearn.ensemble import HistGradientBoostingClassifier
    # Regularised (small leaves overfit the rare class and let the boosting diverge: train PR-AUC 0.40 with the
    # defaults and no early stopping on the test set) and without early stopping, so it is deterministic.
    clf = HistGradientBoostingClassifier(max_iter=100, learning_rate=0.05, max_leaf_nodes=15, min_samples_leaf=50,
                                         l2_regularization=1.0, early_stopping=False, random_state=seed)
    started = time.perf_counter()
    clf.fit(split.raw_train, split.y_train.astype(int))
    result = evaluate(split.y_holdout, clf.predict_proba(split.raw_holdout)[:, 1])
    return {f"baseline_gbt_{k}": v for k, v in result.items()} | \
        {"baseline_gbt_fit_seconds": time.perf_counter() - started}


def train(args: argparse.Namespace) -> dict[str, Any]:
    ts = load_training_set(args.training_set)  # bad input fails before any process group is formed
    d = init_distributed()
    try:
        return _train(args, d, ts)
    finally:
        dist.destroy_process_group()


def _train(args: argparse.Namespace, d: Dist, ts: TrainingSet) -> dict[str, Any]:
    if args.global_batch_size % d.world_size:
        raise SystemExit(f"--global-batch-size {args.global_batch_size} must be a multiple of the world size "
                         f"{d.world_size}")
    make_deterministic(args.seed, d.device)
    bf16 = use_bf16(args.precision, d.device)
    split = time_split(ts, args.holdout_fraction)
    x_train = torch.from_numpy(split.x_train).to(d.device)
    y_train = torch.from_numpy(split.y_train).to(d.device)
    x_hold = torch.from_numpy(split.x_holdout).to(d.device)

    model = build_model(args, len(split.features), d, bf16)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    positives = float(split.y_train.sum())
    pos_weight = torch.tensor(min((len(split.y_train) - positives) / positives, 100.0) ** 0.5, device=d.device)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)

    root = args.checkpoint_dir
    fingerprint = run_fingerprint(args, ts, d.world_size)
    if d.is_main:
        root.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    state_file = root / RUN_STATE
    run_state = json.loads(state_file.read_text()) if state_file.exists() else None
    if run_state is not None and run_state["fingerprint"] != fingerprint:
        raise SystemExit(f"{state_file}: the checkpoints there belong to another run configuration "
                         f"({run_state['fingerprint']}); use a fresh --checkpoint-dir")
    resume_epoch = latest_complete_epoch(root)
    history: list[dict[str, float]] = []
    start_epoch = 0
    if resume_epoch is not None:
        progress = load_checkpoint(root, resume_epoch, model, optimizer)
        history = progress["history"]
        start_epoch = resume_epoch + 1
        if d.is_main:
            print(f"[finml-train] resumed from {checkpoint_path(root, resume_epoch)} (restart "
                  f"{d.restart_count})", file=sys.stderr, flush=True)

    tracker = Tracker(enabled=d.is_main and bool(os.environ.get("MLFLOW_TRACKING_URI")))
    if d.is_main and not tracker.enabled:
        print("[finml-train] MLFLOW_TRACKING_URI is not set: this run is not tracked", file=sys.stderr)
    status = "FAILED"
    try:
        run_id = tracker.start(args, run_state["mlflow_run_id"] if run_state else None)
        if d.is_main and run_state is None:
            tracker.log_start(args, ts, split, d, bf16)
            tmp = state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({"fingerprint": fingerprint, "mlflow_run_id": run_id}, indent=1))
            os.replace(tmp, state_file)
        dist.barrier()

        per_rank = args.global_batch_size // d.world_size
        n = len(split.y_train)
        steps = n // args.global_batch_size  # the remainder is dropped: every step sees a full global batch
        if steps == 0:
            raise SystemExit(f"{args.training_set}: {n} training rows, fewer than one global batch "
                             f"({args.global_batch_size})")
        model.train()
        for epoch in range(start_epoch, args.epochs):
            lr = cosine_lr(args.lr, epoch, args.epochs)
            for group in optimizer.param_groups:
                group["lr"] = lr
            order = torch.from_numpy(epoch_permutation(args.seed, epoch, n)).to(d.device)
            started = time.perf_counter()
            loss_sum = torch.zeros((), device=d.device, dtype=torch.float64)
            for step in range(steps):
                lo = step * args.global_batch_size + d.rank * per_rank
                idx = order[lo:lo + per_rank]
                with torch.autocast(d.device.type, dtype=torch.bfloat16, enabled=bf16 and args.mode == "ddp"):
                    logits = model(x_train[idx]).squeeze(-1)
                loss = loss_fn(logits.float(), y_train[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += loss.detach().double()
            if d.device.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - started
            dist.all_reduce(loss_sum)
            train_loss = float(loss_sum) / (steps * d.world_size)
            hold = evaluate(split.y_holdout, scores_of(model, x_hold, args.mode, bf16, d.device))
            metrics = {"train_loss": train_loss, "holdout_pr_auc": hold["pr_auc"],
                       "holdout_recall_at_1pct_fpr": hold["recall_at_1pct_fpr"], "lr": lr,
                       "epoch_seconds": seconds, "samples_per_second": steps * args.global_batch_size / seconds}
            history.append({"epoch": epoch, **metrics})
            save_checkpoint(root, epoch, model, optimizer, d, {"epoch": epoch, "history": history})
            tracker.log_metrics(metrics, step=epoch)
            if d.is_main:
                print(f"[finml-train] epoch {epoch + 1}/{args.epochs} loss {train_loss:.4f} "
                      f"pr_auc {hold['pr_auc']:.4f} recall@1%fpr {hold['recall_at_1pct_fpr']:.4f} "
                      f"{metrics['samples_per_second']:.0f} samples/s", file=sys.stderr, flush=True)
                (root / "progress.json").write_text(json.dumps({"epoch": epoch, "restart": d.restart_count}))
            if args.pause_after_epoch_s:
                time.sleep(args.pause_after_epoch_s)

        # A full (unsharded) copy of the weights for the model artifact: a collective under FSDP2.
        full_state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        summary: dict[str, Any] = {}
        if d.is_main:
            final = history[-1]
            summary = {
                "mode": args.mode, "world_size": d.world_size, "backend": d.backend, "precision":
                    "bf16" if bf16 else "fp32", "epochs_completed": len(history),
                "resumed_from_epoch": resume_epoch, "restart_count": d.restart_count,
                "holdout_pr_auc": final["holdout_pr_auc"],
                "holdout_recall_at_1pct_fpr": final["holdout_recall_at_1pct_fpr"],
                "samples_per_second": float(np.mean([h["samples_per_second"] for h in history])),
                "history": history, "mlflow_run_id": run_id,
                "peak_memory_bytes": torch.cuda.max_memory_allocated(d.device) if d.device.type == "cuda" else None,
                "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            }
            if args.baseline:
                baseline = gbt_baseline(split, args.seed)
                summary |= baseline
                tracker.log_metrics(baseline, step=args.epochs - 1)
            tracker.log_metrics({"final_holdout_pr_auc": summary["holdout_pr_auc"],
                                 "final_holdout_recall_at_1pct_fpr": summary["holdout_recall_at_1pct_fpr"]},
                                step=args.epochs - 1)
            mlp = FraudMLP(len(split.features), args.hidden)
            mlp.load_state_dict(full_state)
            summary |= tracker.log_model(FraudScorer(mlp, split.mean, split.std), ts, split, args.model_name)
            if args.summary_json is not None:
                args.summary_json.parent.mkdir(parents=True, exist_ok=True)
                args.summary_json.write_text(json.dumps(summary, indent=1, sort_keys=True, default=str))
        status = "FINISHED"
        dist.barrier()
        return summary
    finally:
        # A worker that dies leaves its run RUNNING; the restarted rank 0 reopens it by id. A clean failure ends it.
        tracker.end(status)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        train(args)
    except TrainingSetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
