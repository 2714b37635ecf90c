"""`finml` — what the Pulumi CLI does not do: offline preview and policy check, Ansible inventory, GPU probe.

The project is found like the Pulumi CLI finds it: the nearest Pulumi.yaml from the working directory (or --cwd DIR)
upward; stacks, program, policy pack, GPU profiles and the default build/ directory come from that project.

exit codes (every command but `gpu probe`, which documents its own):
  0    pass: everything checked, no mandatory policy violation
  1    mandatory policy violations (or a refusal)
  2    usage or input error: bad arguments, configuration, plan, policy pack or output location
  3    environment: something the machine lacks (a tool, a library) or an internal error
  130  interrupted by SIGINT        143  interrupted by SIGTERM
"""

from __future__ import annotations

if __name__ == "__main__":  # before the heavier imports: a signal during start-up is handled too
    from finml import procs as _procs

    _procs.install_handlers()

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from finml.plan import write_text_atomic

# Where finml itself is installed. Nothing project-related is resolved from here (see finml.project).
ROOT = Path(__file__).resolve().parent.parent
EXIT_OK, EXIT_VIOLATIONS, EXIT_BAD_INPUT, EXIT_ENVIRONMENT = 0, 1, 2, 3


class UsageError(Exception):
    """Bad arguments or input files; printed as one clear message, exit 2."""


class EnvironmentProblem(Exception):
    """The machine lacks something finml needs; printed as one clear message, exit 3."""


def _printable(text: str) -> str:
    return "".join(ch if ch.isprintable() or ch == "\n" else repr(ch)[1:-1] for ch in str(text))


def _err(msg: str) -> None:
    print(f"finml: {_printable(msg)}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ shared helpers


def _project(args: argparse.Namespace):
    """The project this command works on (finml.project.Project), found once per command."""
    from finml.project import ProjectError, load_project

    cached = getattr(args, "_project_cache", None)
    if cached is None:
        try:
            cached = load_project(Path(args.cwd) if getattr(args, "cwd", None) else None)
        except ProjectError as exc:
            raise UsageError(str(exc)) from None
        args._project_cache = cached
    return cached


def _resolve(args: argparse.Namespace, value: str | None) -> Path | None:
    """A path the user typed: relative to --cwd when given, else to the working directory."""
    if value is None:
        return None
    path = Path(value)
    if not path.is_absolute() and getattr(args, "cwd", None):
        path = Path(args.cwd) / path
    return path


def _stacks_dir(args: argparse.Namespace) -> Path:
    if getattr(args, "stacks_dir", None):
        path = _resolve(args, args.stacks_dir)
        if not path.is_dir():
            raise UsageError(f"--stacks-dir {args.stacks_dir}: not a directory")
        return path
    return _project(args).stacks_dir


def _profiles(args: argparse.Namespace) -> dict[str, Any]:
    from finml.config import load_profiles_for

    cached = getattr(args, "_profiles_cache", None)
    if cached is None:
        from gpu_profiles import PROFILES_DIR

        try:
            directory = _project(args).gpu_profiles_dir
        except UsageError:
            if not getattr(args, "stacks_dir", None):
                raise
            directory = PROFILES_DIR  # --stacks-dir outside any project: the profiles shipped with finml
        cached = load_profiles_for(directory)
        args._profiles_cache = cached
    return cached


def _stack_names(args: argparse.Namespace) -> list[str]:
    from finml.config import list_stacks

    stacks_dir = _stacks_dir(args)
    available = list_stacks(stacks_dir)
    origin = "--stacks-dir" if getattr(args, "stacks_dir", None) else f"stackConfigDir of {_project(args).file}"
    if getattr(args, "all", False):
        if not available:
            raise UsageError(f"{stacks_dir}: no Pulumi.<stack>.yaml files found ({origin})")
        return available
    if args.stack not in available:
        raise UsageError(f"--stack: unknown stack {args.stack!r}; allowed: {', '.join(available) or 'none found'} "
                         f"(files {stacks_dir}/Pulumi.<stack>.yaml, the {origin})")
    return [args.stack]


def _load_stack(args: argparse.Namespace, name: str):
    """Validate one stack: the single validation path `config check`, `preview` and every other command share."""
    from finml.cli_policies import waiver_problems
    from finml.config import ConfigError, load_stack_file, stack_file

    stack = load_stack_file(stack_file(name, _stacks_dir(args)), _profiles(args))
    # Waivers are judged by the pack's own code, so this needs the pack. A waiver that has expired is well-formed
    # config: the gates (pack, audit) report it as a violation of policy-waivers-valid, exit 1, on the day it lapses.
    problems = (waiver_problems(stack, _pack_dir(args), include_expired=False) if stack.platform.waivers else [])
    if problems:
        raise ConfigError(stack.source, [("", f"finml:platform.{problem}") for problem in problems])
    return stack


def _pack_dir(args: argparse.Namespace) -> Path:
    """The policy pack to use, checked to be one before anything is started."""
    from finml.safeload import InputError, load_yaml

    pack = _resolve(args, args.pack) if getattr(args, "pack", None) else _project(args).pack_dir
    shown = args.pack if getattr(args, "pack", None) else str(pack)
    if not pack.is_dir():
        raise UsageError(f"--pack {shown}: not a directory; allowed: a policy pack directory holding PulumiPolicy.yaml")
    meta_file = pack / "PulumiPolicy.yaml"
    if not meta_file.is_file():
        raise UsageError(f"--pack {shown}: not a policy pack (no PulumiPolicy.yaml)")
    try:
        meta, _ = load_yaml(meta_file, "a policy pack file (PulumiPolicy.yaml)", dict, 256 * 1024)
    except InputError as exc:
        raise UsageError(str(exc)) from None
    runtime = meta.get("runtime")
    runtime = runtime.get("name") if isinstance(runtime, dict) else runtime
    if runtime != "python":
        raise UsageError(f"{meta_file}: runtime: {runtime!r}; allowed: python (finml drives Python policy packs)")
    if not (pack / "__main__.py").is_file():
        raise UsageError(f"--pack {shown}: not a Python policy pack (no __main__.py)")
    return pack


def pack_config_for(platform_config: dict[str, Any] | Any, pack_dir: Path, today: str | None = None) -> dict[str, Any]:
    """The pack's `--policy-pack-config` document, derived from a stack's residency rules, sites and waivers
    (`today`: the day waiver expiry is judged on, YYYY-MM-DD; default: the pack's today)."""
    if str(pack_dir) not in sys.path:
        sys.path.insert(0, str(pack_dir))
    from finml_rules.config import pack_config  # the pack's own builder: one definition of its config format

    from finml.config import Platform, site_image_registries

    registries = None
    if hasattr(platform_config, "residency"):
        residency = {k: list(v) for k, v in platform_config.residency.items()}
        sites = sorted(platform_config.sites)
        waivers = [w.to_pack() for w in getattr(platform_config, "waivers", [])]
        accounts = [platform_config.aws_account_id] if getattr(platform_config, "aws_account_id", None) else []
        if isinstance(platform_config, Platform):
            registries = {s: r.to_pack() for s, r in site_image_registries(platform_config).items()}
    else:
        residency = platform_config.get("residency", {})
        sites = sorted(platform_config.get("sites", {}))
        waivers = list(platform_config.get("waivers") or [])
        accounts = [platform_config["awsAccountId"]] if platform_config.get("awsAccountId") else []
        try:  # registries only from a config that validates; otherwise k8s-image-pinned fails closed
            registries = {s: r.to_pack()
                          for s, r in site_image_registries(Platform.model_validate(platform_config)).items()}
        except Exception:  # noqa: BLE001 - any invalid platform config simply yields no registries
            registries = None
    return pack_config(residency, sites, waivers=waivers, waiver_date=today, account_ids=accounts,
                       image_registries=registries)


def _trusted_pack_config(stack, pack_dir: Path) -> dict[str, Any]:
    try:
        return pack_config_for(stack.platform, pack_dir)
    except ValueError as exc:
        raise UsageError(f"{stack.source}: the policy pack rejects this stack's residency: {exc}") from None
    except ImportError as exc:
        raise UsageError(f"{pack_dir}: the policy pack has no usable finml_rules.config ({exc})") from None


def _first_difference(a: Any, b: Any, path: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in a or key not in b:
                return where
            found = _first_difference(a[key], b[key], where)
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return path or "(top level)"
        for i, (x, y) in enumerate(zip(a, b)):
            found = _first_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if a == b else (path or "(top level)")


def _embedded_config(config: dict[str, Any]) -> dict[str, Any]:
    """A plan's config as values (the engine's wire form carries structured values as JSON strings)."""
    out = {}
    for key, value in config.items():
        if isinstance(value, str) and value[:1] in "[{":
            try:
                value = json.loads(value)
            except ValueError:
                pass
        out[key] = value
    return out


# ------------------------------------------------------------------------------------------------ commands


def _run_mock_program(stack_path: Path, program: Path, plan_path: Path, project_root: Path,
                      profiles_dir: Path) -> tuple[int, str]:
    from finml import procs

    proc = procs.popen([sys.executable, "-m", "finml.mockrun", str(stack_path), str(program), str(plan_path),
                        "--profiles", str(profiles_dir)], cwd=project_root, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, stderr = proc.communicate()
    finally:
        procs.stop(proc) if proc.poll() is None else procs.forget(proc)
    return proc.returncode, stderr


def _program_error(stderr: str, debug: bool) -> str:
    """What the program printed; a Python traceback is cut to its last line unless --debug."""
    text = stderr.strip()
    if debug or "Traceback (most recent call last)" not in text:
        return text
    last = [line for line in text.splitlines() if line.strip()][-1]
    return f"{last.strip()} (run with --debug for the program's traceback)"


def cmd_preview(args: argparse.Namespace) -> int:
    from finml.config import ConfigError
    from finml.plan import PlanError, load_plan
    from finml.policy_check import PolicyPackError, check_plan
    from finml.report import render, render_text
    from finml.rundir import OutputError, StagedDir, prepare_out_dir

    project = _project(args)
    names = _stack_names(args)
    out_dir = _resolve(args, args.out) if args.out else project.build_dir
    program = _resolve(args, args.program) if args.program else project.program
    if not program.is_file():
        raise UsageError(f"{program}: the project's program is missing (Pulumi.yaml main, default __main__.py)")
    pack_dir = _pack_dir(args)
    profiles = _profiles(args)
    try:
        prepare_out_dir(out_dir)
    except OutputError as exc:
        raise UsageError(str(exc)) from None
    show = len(names) > 1 or args.progress
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
        try:
            staged = StagedDir(out_dir / name)
        except OutputError as exc:
            raise UsageError(str(exc)) from None
        try:
            plan_path = staged.path("plan.json")
            if show:
                print(f"{prefix}: running the program under the mock runtime…", file=sys.stderr, flush=True)
            code, stderr = _run_mock_program(Path(stack.source), program, plan_path, project.root,
                                             project.gpu_profiles_dir)
            if code != 0:
                _err(f"{prefix}: the program failed (exit {code}):\n{_program_error(stderr, args.debug)}")
                worst = max(worst, EXIT_BAD_INPUT)
                continue
            try:
                plan = load_plan(plan_path)
            except PlanError as exc:
                _err(f"{prefix}: the program wrote an unusable plan: {exc}")
                worst = max(worst, EXIT_BAD_INPUT)
                continue
            if plan.stack != name:
                _err(f"{prefix}: the plan is for stack {plan.stack!r}, not {name!r}")
                worst = max(worst, EXIT_BAD_INPUT)
                continue
            if show:
                print(f"{prefix}: {len(plan.resources)} resources; checking policies over gRPC…",
                      file=sys.stderr, flush=True)
            try:
                result = check_plan(plan, pack_dir, _trusted_pack_config(stack, pack_dir),
                                    stack_config=stack.non_secret_config())
            except PolicyPackError as exc:
                _err(f"{prefix}: {exc}")
                return EXIT_BAD_INPUT
            for fmt, suffix in (("json", "policy.json"), ("sarif", "policy.sarif"), ("junit", "policy.junit.xml"),
                                ("html", "policy.html")):
                write_text_atomic(staged.path(suffix), render([result], fmt))
            staged.commit()
        finally:
            staged.discard()
        results.append(result)
        print(render_text(result), end="", flush=True)
        if show:
            print(f"{prefix}: plan and reports → {out_dir / name}/; done in {time.monotonic() - started:.1f}s",
                  file=sys.stderr, flush=True)
        if result.mandatory:
            worst = max(worst, EXIT_VIOLATIONS)
    if len(names) > 1:
        passed = sum(1 for r in results if not r.mandatory)
        print(f"finml preview: {len(results)}/{len(names)} stacks previewed, {passed} passed policy; "
              f"plans and reports under {out_dir}/")
    return worst


def cmd_policy_check(args: argparse.Namespace) -> int:
    from finml.config import ConfigError, list_stacks
    from finml.plan import PlanError, load_plan
    from finml.policy_check import BadPolicyConfig, PolicyPackError, check_plan
    from finml.report import render
    from finml.safeload import InputError, load_json

    try:
        plan = load_plan(_resolve(args, args.plan))
    except PlanError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    pack_dir = _pack_dir(args)
    stack_config = None
    if args.policy_config:
        try:
            policy_config = load_json(_resolve(args, args.policy_config), "a policy pack config (JSON object of "
                                      "policy name → config)", dict, 4 * 1024 * 1024)
        except InputError as exc:
            raise UsageError(str(exc)) from None
    else:
        # Trusted configuration: the project's stack file, never the plan under test.
        name = args.stack or plan.stack
        if name not in list_stacks(_stacks_dir(args)):
            raise UsageError(f"{args.plan}: the plan is for stack {name!r}, which has no stack file in "
                             f"{_stacks_dir(args)}; pass --stack NAME or an explicit --policy-config FILE")
        try:
            stack = _load_stack(args, name)
        except ConfigError as exc:
            _err(str(exc))
            return EXIT_BAD_INPUT
        stack_config = stack.non_secret_config()
        differs = _first_difference(_embedded_config(plan.config), stack_config)
        if differs is not None:
            _err(f"{args.plan}: config.{differs}: the plan's embedded config differs from {stack.source}; the gate "
                 f"takes policy configuration from the stack file, so this plan was not made from it (re-run "
                 f"`finml preview`, or pass --policy-config FILE to check it against an explicit configuration)")
            return EXIT_BAD_INPUT
        policy_config = _trusted_pack_config(stack, pack_dir)
    output = _resolve(args, args.output)
    if output is not None and output.is_dir():
        raise UsageError(f"--output {args.output}: is a directory; allowed: a file path")
    try:
        result = check_plan(plan, pack_dir, policy_config, stack_config=stack_config)
    except BadPolicyConfig as exc:
        _err(f"{args.policy_config or stack.source}: {exc}")
        return EXIT_BAD_INPUT
    except PolicyPackError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    text = render([result], args.format)
    if output is not None:
        _write_output("--output", output, text)
        print(f"finml: {args.format} report written to {args.output} "
              f"({len(result.mandatory)} mandatory, {len(result.advisory)} advisory)", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_VIOLATIONS if result.mandatory else EXIT_OK


def _write_output(flag: str, path: Path, text: str) -> None:
    try:
        write_text_atomic(path, text)
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot write: {exc.strerror or exc}") from None


def cmd_policy_config(args: argparse.Namespace) -> int:
    from finml.config import ConfigError

    try:
        stack = _load_stack(args, _stack_names(args)[0])
    except ConfigError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    text = json.dumps(_trusted_pack_config(stack, _pack_dir(args)), indent=2, sort_keys=True) + "\n"
    if args.out:
        _write_output("--out", _resolve(args, args.out), text)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_config_check(args: argparse.Namespace) -> int:
    from finml.config import ConfigError, cross_stack_problems

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
    from finml.inventory import InventoryError
    from finml.onprem import inventory_for_stack

    try:
        stack = _load_stack(args, _stack_names(args)[0])
        text = inventory_for_stack(stack, _profiles(args))
    except ConfigError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    except InventoryError as exc:
        _err(f"{_stacks_dir(args) / ('Pulumi.' + args.stack + '.yaml')}: {exc}")
        return EXIT_BAD_INPUT
    if args.out:
        _write_output("--out", _resolve(args, args.out), text)
        print(f"finml: inventory for {stack.stack} written to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_gpu_probe(args: argparse.Namespace, rest: list[str]) -> int:
    from finml import gpu_probe

    return gpu_probe.run(rest)


# ------------------------------------------------------------------------------------------------ parser


def build_parser() -> argparse.ArgumentParser:
    # Command modules import finml.cli's helpers, so they are imported here, once finml.cli is complete.
    from finml import cli_audit, cli_features, cli_gpu_plan, cli_model, cli_policies, cli_train
    from finml.report import FORMATS

    parser = argparse.ArgumentParser(prog="finml", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cwd", metavar="DIR", help="run as if started in DIR (the project is found from there)")
    parser.add_argument("--stacks-dir", help="directory of Pulumi.<stack>.yaml files (default: the project's "
                                             "stackConfigDir)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    sub = parser.add_subparsers(dest="command", required=True)

    def stack_args(p: argparse.ArgumentParser, allow_all: bool) -> None:
        group = p.add_mutually_exclusive_group(required=True)
        group.add_argument("--stack", help="stack name (Pulumi.<stack>.yaml in the project's stackConfigDir)")
        if allow_all:
            group.add_argument("--all", action="store_true", help="every stack of the project")

    p = sub.add_parser("preview", help="offline preview: run the program under the mock runtime, then the policy pack")
    stack_args(p, allow_all=True)
    p.add_argument("--out", help="output directory for <stack>/plan.json and reports (default: the project's "
                                 "build/)")
    p.add_argument("--program", help=argparse.SUPPRESS)
    p.add_argument("--pack", help="policy pack directory (default: the project's policies/)")
    p.add_argument("--progress", action="store_true", help="show progress for a single stack too")
    p.set_defaults(func=cmd_preview)

    pol = sub.add_parser("policy", help="policy pack commands").add_subparsers(dest="policy_command", required=True)
    p = pol.add_parser("check", help="check a plan file with the policy pack over the Analyzer gRPC protocol")
    p.add_argument("--plan", required=True, help="a finml-plan/1 file (from `finml preview`)")
    p.add_argument("--format", choices=FORMATS, default="text", help="report format (text)")
    p.add_argument("--output", help="write the report here instead of stdout")
    p.add_argument("--stack", help="stack whose file configures the pack (default: the plan's stack)")
    p.add_argument("--policy-config", help="explicit pack config JSON (default: derived from the project's stack "
                                           "file; a plan whose embedded config differs from it is refused)")
    p.add_argument("--pack", help="policy pack directory (default: the project's policies/)")
    p.set_defaults(func=cmd_policy_check)
    p = pol.add_parser("config", help="write the pack config for `pulumi preview --policy-pack-config`")
    stack_args(p, allow_all=False)
    p.add_argument("--out", help="file to write (default: stdout)")
    p.add_argument("--pack", help="policy pack directory (default: the project's policies/)")
    p.set_defaults(func=cmd_policy_config)

    cli_features.register(sub)

    cfg = sub.add_parser("config", help="stack configuration").add_subparsers(dest="config_command", required=True)
    p = cfg.add_parser("check", help="validate stack configuration files (exactly the checks preview runs first)")
    stack_args(p, allow_all=True)
    p.set_defaults(func=cmd_config_check)

    p = sub.add_parser("inventory", help="write the Ansible inventory of a stack's on-prem GPU nodes")
    stack_args(p, allow_all=False)
    p.add_argument("--out", help="file to write (default: stdout)")
    p.set_defaults(func=cmd_inventory)

    gpu = sub.add_parser("gpu", help="GPU tools").add_subparsers(dest="gpu_command", required=True)
    p = gpu.add_parser("probe", help="probe this host's GPUs with NVML (pass --help for options)", add_help=False)
    p.set_defaults(func=cmd_gpu_probe, passthrough=True)
    cli_gpu_plan.register(gpu)  # gpu plan
    cli_policies.register(sub)
    cli_audit.register(sub)  # audit, bootstrap
    cli_model.register(sub)  # model lineage|promote|copy|audit-log
    cli_train.register(sub)  # train render|local, check-manifests
    return parser


def _known_error_types() -> tuple[type[BaseException], ...]:
    from finml.config import ConfigError
    from finml.plan import PlanError
    from finml.project import ProjectError
    from finml.rundir import OutputError
    from finml.safeload import InputError

    return (UsageError, ConfigError, PlanError, ProjectError, OutputError, InputError)


def main(argv: list[str] | None = None) -> int:
    from finml import procs

    argv = sys.argv[1:] if argv is None else argv
    procs.install_handlers()
    debug = "--debug" in argv
    try:
        parser = build_parser()
        args, rest = parser.parse_known_args(argv)
        if getattr(args, "passthrough", False):
            return args.func(args, rest)
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        if args.cwd and not Path(args.cwd).is_dir():
            raise UsageError(f"--cwd {args.cwd}: not a directory")
        return args.func(args)
    except procs.Interrupted as exc:
        procs.stop_all()
        _err(f"interrupted ({exc}); stopped every process of this run, previous outputs left as they were")
        sys.stdout.flush()
        # Exit now: an RPC cut short by the signal leaves a gRPC channel whose finaliser would wait for it forever.
        # Every `finally` on the way here has run (staged outputs discarded, child groups stopped).
        os._exit(exc.exit_code)
    except KeyboardInterrupt:  # before the handlers were installed
        _err("interrupted")
        return 130
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 — no traceback reaches a user unless --debug
        if isinstance(exc, _known_error_types()):
            if debug:
                traceback.print_exc()
            _err(str(exc))
            return EXIT_BAD_INPUT
        if isinstance(exc, EnvironmentProblem):
            _err(str(exc))
            return EXIT_ENVIRONMENT
        if debug:
            traceback.print_exc()
        _err(f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)")
        return EXIT_ENVIRONMENT
    finally:
        procs.stop_all()


def run() -> None:
    """The `finml` command: main(), then exit without interpreter teardown. Teardown restores Python's default
    signal handlers, so a SIGTERM in that window would kill finml (-15) instead of ending it with 143; and there is
    nothing left to tear down: children are stopped, outputs committed or discarded."""
    from finml import procs

    try:
        code = main()
    except procs.Interrupted as exc:  # a signal after main's own handling, e.g. during its final clean-up
        procs.stop_all()
        code = exc.exit_code
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    # Run the importable module's entry: command modules raise finml.cli.UsageError, not __main__.UsageError.
    from finml.cli import run as _run

    _run()
