"""`finml` — what the Pulumi CLI does not do: offline preview and policy check, Ansible inventory, GPU probe.

Exit codes (every command): 0 = fine, 1 = mandatory policy violations, 2 = bad input (config, plan, arguments).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from finml import cli_features
from finml.plan import write_text_atomic

ROOT = Path(__file__).resolve().parent.parent
EXIT_OK, EXIT_VIOLATIONS, EXIT_BAD_INPUT = 0, 1, 2


class UsageError(Exception):
    """Bad arguments or input files; printed as one clear message, exit 2."""


def _err(msg: str) -> None:
    print(f"finml: {msg}", file=sys.stderr)


# ------------------------------------------------------------------------------------------------ shared helpers


def _stacks_dir(args: argparse.Namespace) -> Path:
    return Path(args.stacks_dir) if getattr(args, "stacks_dir", None) else ROOT / "stacks"


def _stack_names(args: argparse.Namespace) -> list[str]:
    from finml.config import list_stacks

    available = list_stacks(_stacks_dir(args))
    if getattr(args, "all", False):
        if not available:
            raise UsageError(f"{_stacks_dir(args)}: no Pulumi.<stack>.yaml files found")
        return available
    if args.stack not in available:
        raise UsageError(f"--stack: unknown stack {args.stack!r}; allowed: {', '.join(available) or 'none found'} "
                         f"(files {_stacks_dir(args)}/Pulumi.<stack>.yaml)")
    return [args.stack]


def _load_stack(args: argparse.Namespace, name: str):
    from finml.config import load_stack_file, stack_file

    return load_stack_file(stack_file(name, _stacks_dir(args)))


def pack_config_for(platform_config: dict[str, Any] | Any, pack_dir: Path) -> dict[str, Any]:
    """The pack's `--policy-pack-config` document, derived from a stack's residency rules and sites."""
    if str(pack_dir) not in sys.path:
        sys.path.insert(0, str(pack_dir))
    from finml_rules.config import pack_config  # the pack's own builder: one definition of its config format

    if hasattr(platform_config, "residency"):
        residency = {k: list(v) for k, v in platform_config.residency.items()}
        sites = sorted(platform_config.sites)
    else:
        residency = platform_config.get("residency", {})
        sites = sorted(platform_config.get("sites", {}))
    return pack_config(residency, sites)


# ------------------------------------------------------------------------------------------------ commands


def cmd_preview(args: argparse.Namespace) -> int:
    from finml.config import ConfigError, stack_file
    from finml.plan import load_plan
    from finml.policy_check import PolicyPackError, check_plan
    from finml.report import render, render_text

    names = _stack_names(args)
    out_dir = Path(args.out)
    program = Path(args.program)
    pack_dir = Path(args.pack)
    worst = EXIT_OK
    results = []
    for i, name in enumerate(names, 1):
        prefix = f"[{i}/{len(names)}] {name}"
        started = time.monotonic()
        try:
            stack = _load_stack(args, name)
        except ConfigError as exc:
            _err(f"{prefix}: bad configuration\n{exc}")
            worst = max(worst, EXIT_BAD_INPUT)
            continue
        plan_path = out_dir / name / "plan.json"
        if len(names) > 1 or args.progress:
            print(f"{prefix}: running the program under the mock runtime…", file=sys.stderr, flush=True)
        proc = subprocess.run([sys.executable, "-m", "finml.mockrun", str(stack_file(name, _stacks_dir(args))),
                               str(program), str(plan_path)], cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            _err(f"{prefix}: the program failed (exit {proc.returncode}):\n{proc.stderr.strip()}")
            worst = max(worst, EXIT_BAD_INPUT)
            continue
        plan = load_plan(plan_path)
        if len(names) > 1 or args.progress:
            print(f"{prefix}: {len(plan.resources)} resources → {plan_path}; checking policies over gRPC…",
                  file=sys.stderr, flush=True)
        try:
            result = check_plan(plan, pack_dir, pack_config_for(stack.platform, pack_dir))
        except PolicyPackError as exc:
            _err(f"{prefix}: {exc}")
            return EXIT_BAD_INPUT
        results.append(result)
        for fmt, suffix in (("json", "policy.json"), ("sarif", "policy.sarif"), ("junit", "policy.junit.xml")):
            write_text_atomic(out_dir / name / suffix, render([result], fmt))
        print(render_text(result), end="")
        if len(names) > 1 or args.progress:
            print(f"{prefix}: done in {time.monotonic() - started:.1f}s", file=sys.stderr, flush=True)
        if result.mandatory:
            worst = max(worst, EXIT_VIOLATIONS)
    if len(names) > 1:
        passed = sum(1 for r in results if not r.mandatory)
        print(f"finml preview: {len(results)}/{len(names)} stacks previewed, {passed} passed policy; "
              f"plans and reports under {out_dir}/")
    return worst


def cmd_policy_check(args: argparse.Namespace) -> int:
    from finml.plan import PlanError, load_plan
    from finml.policy_check import PolicyPackError, check_plan
    from finml.report import render

    try:
        plan = load_plan(Path(args.plan))
    except PlanError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    pack_dir = Path(args.pack)
    if args.policy_config:
        try:
            policy_config = json.loads(Path(args.policy_config).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise UsageError(f"{args.policy_config}: cannot read policy config: {exc}") from None
        if not isinstance(policy_config, dict):
            raise UsageError(f"{args.policy_config}: must be a JSON object of policy name → config")
    else:
        platform = plan.config.get("finml:platform")
        if isinstance(platform, str):
            platform = json.loads(platform)
        policy_config = pack_config_for(platform or {}, pack_dir)
    try:
        result = check_plan(plan, pack_dir, policy_config)
    except PolicyPackError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    text = render([result], args.format)
    if args.output:
        write_text_atomic(Path(args.output), text)
        print(f"finml: {args.format} report written to {args.output} "
              f"({len(result.mandatory)} mandatory, {len(result.advisory)} advisory)", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_VIOLATIONS if result.mandatory else EXIT_OK


def cmd_policy_config(args: argparse.Namespace) -> int:
    from finml.config import ConfigError

    try:
        stack = _load_stack(args, _stack_names(args)[0])
    except ConfigError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    text = json.dumps(pack_config_for(stack.platform, Path(args.pack)), indent=2, sort_keys=True) + "\n"
    if args.out:
        write_text_atomic(Path(args.out), text)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_config_check(args: argparse.Namespace) -> int:
    from finml.config import ConfigError

    from finml.config import cross_stack_problems

    worst = EXIT_OK
    loaded = []
    for name in _stack_names(args):
        try:
            stack = _load_stack(args, name)
        except ConfigError as exc:
            _err(str(exc))
            worst = EXIT_BAD_INPUT
            continue
        loaded.append(stack)
        print(f"{stack.source}: ok — {len(stack.platform.sites)} site(s): {', '.join(stack.platform.sites)}")
    # With --all, also what no single stack can see: two stacks managing the same cluster or machines.
    for source, message in cross_stack_problems(loaded) if getattr(args, "all", False) else []:
        _err(f"{source}: {message}")
        worst = EXIT_BAD_INPUT
    return worst


def cmd_inventory(args: argparse.Namespace) -> int:
    from finml.config import ConfigError
    from finml.onprem import inventory_for_stack

    try:
        stack = _load_stack(args, _stack_names(args)[0])
        text = inventory_for_stack(stack)
    except ConfigError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    if args.out:
        write_text_atomic(Path(args.out), text)
        print(f"finml: inventory for {stack.stack} written to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_gpu_probe(args: argparse.Namespace, rest: list[str]) -> int:
    from finml import gpu_probe

    return gpu_probe.run(rest)


# ------------------------------------------------------------------------------------------------ parser


def build_parser() -> argparse.ArgumentParser:
    from finml.report import FORMATS

    parser = argparse.ArgumentParser(prog="finml", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stacks-dir", help="directory of Pulumi.<stack>.yaml files (default: stacks/)")
    sub = parser.add_subparsers(dest="command", required=True)

    def stack_args(p: argparse.ArgumentParser, allow_all: bool) -> None:
        group = p.add_mutually_exclusive_group(required=True)
        group.add_argument("--stack", help="stack name (stacks/Pulumi.<stack>.yaml)")
        if allow_all:
            group.add_argument("--all", action="store_true", help="every stack in stacks/")

    p = sub.add_parser("preview", help="offline preview: run the program under the mock runtime, then the policy pack")
    stack_args(p, allow_all=True)
    p.add_argument("--out", default="build", help="output directory for <stack>/plan.json and reports (build/)")
    p.add_argument("--program", default=str(ROOT / "__main__.py"), help=argparse.SUPPRESS)
    p.add_argument("--pack", default=str(ROOT / "policies"), help="policy pack directory (policies/)")
    p.add_argument("--progress", action="store_true", help="show progress for a single stack too")
    p.set_defaults(func=cmd_preview)

    pol = sub.add_parser("policy", help="policy pack commands").add_subparsers(dest="policy_command", required=True)
    p = pol.add_parser("check", help="check a plan file with the policy pack over the Analyzer gRPC protocol")
    p.add_argument("--plan", required=True, help="a finml-plan/1 file (from `finml preview`)")
    p.add_argument("--format", choices=FORMATS, default="text", help="report format (text)")
    p.add_argument("--output", help="write the report here instead of stdout")
    p.add_argument("--policy-config", help="pack config JSON (default: derived from the plan's stack config)")
    p.add_argument("--pack", default=str(ROOT / "policies"), help="policy pack directory (policies/)")
    p.set_defaults(func=cmd_policy_check)
    p = pol.add_parser("config", help="write the pack config for `pulumi preview --policy-pack-config`")
    stack_args(p, allow_all=False)
    p.add_argument("--out", help="file to write (default: stdout)")
    p.add_argument("--pack", default=str(ROOT / "policies"), help="policy pack directory (policies/)")
    p.set_defaults(func=cmd_policy_config)

    cli_features.register(sub)

    cfg = sub.add_parser("config", help="stack configuration").add_subparsers(dest="config_command", required=True)
    p = cfg.add_parser("check", help="validate stack configuration files")
    stack_args(p, allow_all=True)
    p.set_defaults(func=cmd_config_check)

    p = sub.add_parser("inventory", help="write the Ansible inventory of a stack's on-prem GPU nodes")
    stack_args(p, allow_all=False)
    p.add_argument("--out", help="file to write (default: stdout)")
    p.set_defaults(func=cmd_inventory)

    gpu = sub.add_parser("gpu", help="GPU tools").add_subparsers(dest="gpu_command", required=True)
    p = gpu.add_parser("probe", help="probe this host's GPUs with NVML (pass --help for options)", add_help=False)
    p.set_defaults(func=cmd_gpu_probe, passthrough=True)
    __import__("finml.cli_gpu_plan", fromlist=["register"]).register(gpu)
    __import__("finml.cli_model").cli_model.register(sub)
    from finml import cli_train; cli_train.register(sub)  # noqa: E702 — train render|local, check-manifests
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    try:
        if getattr(args, "passthrough", False):
            return args.func(args, rest)
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        return args.func(args)
    except UsageError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        _err("interrupted")
        return 130


if __name__ == "__main__":
    # Run the importable module's main: command modules raise finml.cli.UsageError, not __main__.UsageError.
    from finml.cli import main as _main
    sys.exit(_main())
