"""`finml audit` (live, read-only compliance audit of a stack's AWS account, with drift against its plan) and
`finml bootstrap` (the stack's Pulumi state bucket and secrets key). Exit codes: 0 compliant / done, 1 findings or a
refusal, 2 bad input, 3 environment (no credentials, wrong account, AWS unreachable)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXIT_OK, EXIT_FINDINGS, EXIT_BAD_INPUT, EXIT_ENVIRONMENT = 0, 1, 2, 3


def _err(msg: str) -> None:
    print(f"finml: {msg}", file=sys.stderr)


def _usage_errors_exit_2(command):
    """`python -m finml.cli` runs the CLI as __main__, so finml.cli's UsageError raised here is another class than
    the one main() catches: turn it into the one-line message and exit 2 here."""
    def run(args: argparse.Namespace) -> int:
        from finml.cli import UsageError

        try:
            return command(args)
        except UsageError as exc:
            _err(str(exc))
            return EXIT_BAD_INPUT
    run.__doc__ = command.__doc__
    return run


def _context(args: argparse.Namespace):
    from finml.audit.aws import AwsContext

    if args.max_attempts < 1:
        from finml.cli import UsageError
        raise UsageError(f"--max-attempts: {args.max_attempts} is not allowed; use 1 or more")
    return AwsContext(endpoint_url=args.endpoint_url, max_attempts=args.max_attempts, profile=args.profile)


def _load(args: argparse.Namespace):
    from finml.cli import _load_stack, _stack_names

    return _load_stack(args, _stack_names(args)[0])


def _drift_plan(args: argparse.Namespace, stack_name: str):
    from finml.cli import UsageError, _project, _resolve
    from finml.plan import PlanError, load_plan

    if args.no_drift:
        return None, None
    path = _resolve(args, args.plan) if args.plan else _project(args).build_dir / stack_name / "plan.json"
    if not path.exists():
        if args.plan:
            raise UsageError(f"--plan: {path} does not exist")
        _err(f"drift not checked: no plan at {path} (run `finml preview --stack {stack_name}` or pass --plan)")
        return None, None
    try:
        plan = load_plan(path)
    except PlanError as exc:
        raise UsageError(str(exc)) from None
    if plan.stack != stack_name:
        raise UsageError(f"--plan: {path} is the plan of stack {plan.stack!r}, not {stack_name!r}")
    return plan, str(path)


@_usage_errors_exit_2
def cmd_audit(args: argparse.Namespace) -> int:
    from finml.audit import catalogue
    from finml.cli import _pack_dir

    # The rules are the project's pack's (ids, controls, shared checks): point the audit at it before it loads them.
    catalogue.PACK_DIR = _pack_dir(args)
    from finml.audit.aws import EnvironmentProblem
    from finml.audit.run import audit_stack
    from finml.config import ConfigError
    from finml.plan import write_text_atomic
    from finml.report import render

    try:
        stack = _load(args)
    except ConfigError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    plan, plan_source = _drift_plan(args, stack.stack)
    ctx = _context(args)
    progress = (lambda msg: print(f"finml audit {stack.stack}: {msg}", file=sys.stderr, flush=True)) \
        if args.progress else None
    try:
        result = audit_stack(ctx, stack, plan, plan_source, workers=args.workers, progress=progress)
    except EnvironmentProblem as exc:
        _err(str(exc))
        return EXIT_ENVIRONMENT
    except ValueError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    if args.out:  # like `finml preview`: every machine format beside each other, the text report on stdout
        out = Path(args.out)
        for fmt, name in (("json", "audit.json"), ("sarif", "audit.sarif"), ("junit", "audit.junit.xml")):
            write_text_atomic(out / name, render([result], fmt))
    text = render([result], args.format)
    if args.output:
        write_text_atomic(Path(args.output), text)
        print(f"finml: {args.format} audit report written to {args.output} ({len(result.mandatory)} mandatory, "
              f"{len(result.advisory)} advisory)", file=sys.stderr)
    else:
        sys.stdout.write(text)
    if args.progress:
        rate = result.resources_checked / result.seconds if result.seconds else 0.0
        progress(f"{result.resources_checked} resources in {result.seconds:.1f}s ({rate:.0f}/s)")
    return EXIT_FINDINGS if result.mandatory else EXIT_OK


@_usage_errors_exit_2
def cmd_bootstrap(args: argparse.Namespace) -> int:
    from finml.audit.aws import EnvironmentProblem, describe_error
    from finml.audit.bootstrap import BootstrapRefused, bootstrap, plan_for
    from finml.config import ConfigError
    import botocore.exceptions

    try:
        stack = _load(args)
    except ConfigError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    ctx = _context(args)
    try:
        plan_for(stack, "000000000000", args.region)  # names and sites first: bad input before any AWS call
        regions = [s.split(":", 1)[1] for s in stack.aws_sites]
        account = ctx.account_id(args.region or regions[0])
        if stack.platform.aws_account_id and account != stack.platform.aws_account_id:
            raise EnvironmentProblem(f"the credentials are for account {account}, but stack {stack.stack} runs in "
                                     f"account {stack.platform.aws_account_id} (awsAccountId in {stack.source})")
        plan = plan_for(stack, account, args.region)
        changes = bootstrap(ctx, plan)
    except ValueError as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    except EnvironmentProblem as exc:
        _err(str(exc))
        return EXIT_ENVIRONMENT
    except BootstrapRefused as exc:
        _err(f"bootstrap refused: {exc}")
        return EXIT_FINDINGS
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
        _err(f"bootstrap failed: {describe_error(exc)} (permissions: iam/finml-bootstrap-policy.json)")
        return EXIT_ENVIRONMENT
    changed = [c for c in changes if c.action != "unchanged"]
    if args.json:
        print(json.dumps({"stack": plan.stack, "account": plan.account, "region": plan.region,
                          "bucket": plan.bucket, "keyAlias": plan.alias, "classification": plan.classification,
                          "changes": [c.__dict__ for c in changes], "changed": len(changed),
                          "login": f"pulumi login '{plan.login_url}'",
                          "secretsProvider": plan.secrets_provider, "iamActionsUsed": ctx.iam_actions()},
                         indent=2, sort_keys=True))
        return EXIT_OK
    for c in changes:
        print(f"  {c.action:<9} {c.what}" + (f" — {c.detail}" if c.detail else ""))
    print(f"bootstrap {plan.stack}: {len(changed)} change(s)" if changed else f"bootstrap {plan.stack}: no change")
    print(f"  pulumi login '{plan.login_url}'")
    print(f"  pulumi stack init {plan.stack} --secrets-provider '{plan.secrets_provider}'"
          f"   # or: pulumi stack change-secrets-provider '{plan.secrets_provider}'")
    return EXIT_OK


def register(sub) -> None:
    from finml.report import FORMATS

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--stack", required=True, help="stack name (stacks/Pulumi.<stack>.yaml)")
        p.add_argument("--endpoint-url", help="send every AWS call here (tests: a moto server); "
                                              "AWS_ENDPOINT_URL_<SERVICE> still wins for its service")
        p.add_argument("--profile", help="AWS profile (default: the usual credential chain)")
        p.add_argument("--max-attempts", type=int, default=8,
                       help="attempts per call; throttling and 5xx are retried with exponential backoff (8)")

    p = sub.add_parser("audit", help="live read-only compliance audit of a stack's AWS account, with drift")
    common(p)
    p.add_argument("--format", choices=FORMATS, default="text", help="report format (text)")
    p.add_argument("--output", help="write the report here instead of stdout")
    p.add_argument("--out", help="also write DIR/audit.json, audit.sarif and audit.junit.xml")
    p.add_argument("--plan", help="finml-plan/1 file for drift (default: build/<stack>/plan.json if present)")
    p.add_argument("--no-drift", action="store_true", help="skip the drift check")
    p.add_argument("--workers", type=int, default=16, help="parallel API readers (16)")
    p.add_argument("--progress", action="store_true", help="progress and timing on stderr")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("bootstrap", help="create (idempotently) the stack's Pulumi state bucket and secrets key")
    common(p)
    p.add_argument("--region", help="home region (default: the stack's first AWS site)")
    p.add_argument("--json", action="store_true", help="machine-readable result")
    p.set_defaults(func=cmd_bootstrap)
