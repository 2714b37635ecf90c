"""`finml train render|local` and `finml check-manifests`: submit training runs the way the platform runs them.

    finml train render --stack hybrid-prod --site onprem:fra-dc1 --job aml-detector-train --run-id r42 > run.yaml
    finml check-manifests --stack hybrid-prod --site onprem:fra-dc1 run.yaml && kubectl apply -f run.yaml
    finml train local --nproc 2 --training-set DIR         # the same train.py under torchrun, gloo on CPU
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from finml.cli import EXIT_BAD_INPUT, EXIT_OK, EXIT_VIOLATIONS, ROOT, UsageError, _err, _load_stack, _stack_names, \
    _stacks_dir, pack_config_for

EXIT_ENVIRONMENT = 3


def _stack(args: argparse.Namespace):
    from finml.config import ConfigError

    name = _stack_names(args)[0]
    try:
        return _load_stack(args, name)
    except ConfigError as exc:
        raise UsageError(f"bad configuration\n{exc}") from None


def _lineage_classification(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"--lineage {path}: cannot read a training-set lineage file ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != "finml-training-set/1":
        raise UsageError(f"--lineage {path}: format: expected 'finml-training-set/1'")
    return data.get("classification")


def cmd_train_render(args: argparse.Namespace) -> int:
    import yaml

    from gpu_profiles import load_profiles
    from workloads.training_job import RenderError, TrainingRun, render_training_run

    stack = _stack(args)
    classification = _lineage_classification(args.lineage)
    if args.classification is not None:
        from finml.config import classification_rank
        classification = max(filter(None, (classification, args.classification)), key=classification_rank)
    run = TrainingRun(stack=stack, site=args.site, job=args.job,
                      run_id=args.run_id or time.strftime("r%Y%m%d%H%M%S", time.gmtime()),
                      image=args.image, classification=classification,
                      training_set_path=args.training_set_path, registry_url=args.registry_url)
    try:
        manifests = render_training_run(run, load_profiles())
    except RenderError as exc:
        raise UsageError(str(exc)) from None
    text = yaml.safe_dump_all(manifests, sort_keys=False, default_flow_style=False)
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_check_manifests(args: argparse.Namespace) -> int:
    from finml.config import stack_file
    from finml.manifest_check import ManifestError, attach_manifests, load_manifests, stack_plan
    from finml.policy_check import PolicyPackError, check_plan
    from finml.report import render, render_text

    stack = _stack(args)
    if args.site not in stack.platform.sites:
        raise UsageError(f"--site {args.site!r}; allowed: {', '.join(sorted(stack.platform.sites))}")
    try:
        manifests = load_manifests(args.files)
        with tempfile.TemporaryDirectory(prefix="finml-manifests-") as tmp:
            base = stack_plan(stack_file(stack.stack, _stacks_dir(args)), Path(args.program), Path(tmp) / "plan.json",
                              ROOT)
        plan, urns = attach_manifests(base, args.site, manifests)
    except ManifestError as exc:
        raise UsageError(str(exc)) from None
    pack_dir = Path(args.pack)
    try:
        result = check_plan(plan, pack_dir, pack_config_for(stack.platform, pack_dir))
    except PolicyPackError as exc:
        _err(str(exc))
        return EXIT_ENVIRONMENT
    added = set(urns)
    mine = [v for v in result.violations if v.urn in added or not v.urn]
    result.violations[:] = mine
    if args.format == "text":
        print(f"{len(manifests)} object(s) checked as part of stack {stack.stack}, site {args.site}")
        print(render_text(result), end="")
    else:
        print(render([result], args.format), end="")
    return EXIT_VIOLATIONS if result.mandatory else EXIT_OK


def _torchrun() -> str:
    candidate = Path(sys.executable).with_name("torchrun")
    return str(candidate) if candidate.exists() else (shutil.which("torchrun") or "torchrun")


def cmd_train_local(args: argparse.Namespace) -> int:
    """torchrun with N CPU processes (gloo) on loopback, against the local training set and registry."""
    if args.nproc < 1:
        raise UsageError(f"--nproc {args.nproc}; allowed: 1 or more")
    work = Path(args.work_dir)
    training_set = Path(args.training_set) if args.training_set else None
    if training_set is None and args.rows:
        from workloads.reference.local_data import build_feature_store_training_set
        print(f"building a training set of {args.rows} synthetic transactions through the local feature store "
              f"(Feast, point-in-time join) under {work / 'feature-store'}…", file=sys.stderr, flush=True)
        training_set = build_feature_store_training_set(work / "feature-store", args.rows, seed=args.data_seed)
    if training_set is None:
        raise UsageError("--training-set: required unless --rows is given (a directory with training_set.parquet "
                         "and training_set.lineage.json, e.g. from the feature store's training-set builder)")
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", PYTHONPATH=str(ROOT))
    if args.tracking_uri:
        env["MLFLOW_TRACKING_URI"] = args.tracking_uri
    checkpoint_dir = work / "checkpoints" / args.run_name
    command = [_torchrun(), "--standalone", f"--nproc-per-node={args.nproc}", f"--max-restarts={args.max_restarts}",
               "-m", "workloads.reference.train", f"--training-set={training_set}",
               f"--checkpoint-dir={checkpoint_dir}", f"--mode={args.mode}", f"--epochs={args.epochs}",
               f"--run-name={args.run_name}", f"--summary-json={work / 'summary' / (args.run_name + '.json')}",
               *([f"--model-name={args.model_name}"] if args.model_name else []), *args.train_args]
    print("+ " + " ".join(command), file=sys.stderr, flush=True)
    proc = subprocess.run(command, cwd=ROOT, env=env)
    return EXIT_OK if proc.returncode == 0 else (EXIT_BAD_INPUT if proc.returncode == 2 else EXIT_ENVIRONMENT)


def register(sub: argparse._SubParsersAction) -> None:
    from finml.report import FORMATS

    def stack_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--stack", required=True, help="stack name (stacks/Pulumi.<stack>.yaml)")
        p.add_argument("--site", required=True, help="site whose cluster runs it, e.g. onprem:fra-dc1")

    train = sub.add_parser("train", help="training runs: render Kubernetes manifests, run locally")
    tsub = train.add_subparsers(dest="train_command", required=True)

    p = tsub.add_parser("render", help="print one run's Indexed Job and rendezvous Service for kubectl apply")
    stack_arg(p)
    p.add_argument("--job", required=True, help="training workload name (workloads.training[].name)")
    p.add_argument("--run-id", help="short run id, [a-z0-9-] (default: r<UTC timestamp>)")
    p.add_argument("--image", help="training image (default: the reference image from the site's registry)")
    p.add_argument("--lineage", help="training_set.lineage.json of the run's data: its classification labels the run "
                                     "when higher than the model's configured one")
    p.add_argument("--classification", choices=("public", "internal", "confidential", "restricted"),
                   help="raise the run's classification label (never lowers the model's)")
    p.add_argument("--training-set-path", default="training-sets/latest",
                   help="training-set directory inside the classification's storage")
    p.add_argument("--registry-url", help="MLflow tracking URL (default: the site registry's credentials Secret)")
    p.add_argument("--out", help="write here instead of stdout")
    p.set_defaults(func=cmd_train_render)

    p = tsub.add_parser("local", help="run workloads/reference/train.py under torchrun on this machine (CPU, gloo)")
    p.add_argument("--nproc", type=int, default=2, help="processes (2)")
    p.add_argument("--mode", choices=("ddp", "fsdp2"), default="ddp")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--training-set", help="directory with training_set.parquet + training_set.lineage.json")
    p.add_argument("--rows", type=int, default=0,
                   help="without --training-set: build one from this many synthetic transactions through the local "
                        "feature store (Feast) first")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic transactions (--rows)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI; none: untracked)")
    p.add_argument("--model-name", help="register the model under this name")
    p.add_argument("--run-name", default="local", help="names the checkpoint directory and MLflow run")
    p.add_argument("--work-dir", default=str(ROOT / "build" / "train-local"), help="checkpoints and summaries")
    p.add_argument("--max-restarts", type=int, default=1)
    p.add_argument("train_args", nargs="*", help="further train.py arguments (after --)")
    p.set_defaults(func=cmd_train_local)

    p = sub.add_parser("check-manifests", help="check Kubernetes manifests with the policy pack, as objects of a "
                                               "site's cluster in a stack")
    stack_arg(p)
    p.add_argument("files", nargs="+", help="YAML/JSON manifest files ('-': stdin)")
    p.add_argument("--format", choices=FORMATS, default="text", help="report format (text)")
    p.add_argument("--pack", default=str(ROOT / "policies"), help="policy pack directory (policies/)")
    p.add_argument("--program", default=str(ROOT / "__main__.py"), help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_check_manifests)
