"""Run the real Pulumi program under Pulumi's mock runtime and record every registration as a plan.

This is the documented unit-test path of the Pulumi SDK (`pulumi.runtime.set_mocks`), run as `pulumi preview` would:
dry-run mode, so outputs the engine would only learn at `up` (ids, ARNs) stay unknown. A recording monitor keeps
what the engine would see for each resource: type, name, parent, provider, dependencies, property dependencies and
inputs. One stack per process: the Pulumi runtime keeps global state.

    python -m finml.mockrun STACK_FILE PROGRAM OUT_PLAN
"""

from __future__ import annotations

import datetime
import json
import os
import runpy
import sys
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from finml.config import ConfigError, StackConfig, load_stack_file
from finml.plan import Plan, PlanResource, normalise, wire_to_plan_value, write_plan

PROJECT = "finml"
EXIT_BAD_INPUT = 2


def _provider_urn(ref: str) -> str | None:
    # Provider references are "<urn>::<id>"; the id is unknown at preview.
    return ref.rsplit("::", 1)[0] if ref else None


def make_monitor():
    import pulumi

    from pulumi.runtime.mocks import MockMonitor

    class PreviewMocks(pulumi.runtime.Mocks):
        """Outputs are the inputs, as in a preview; ids and computed attributes stay unknown."""

        def new_resource(self, args: pulumi.runtime.MockResourceArgs):
            return "", dict(args.inputs)

        def call(self, args: pulumi.runtime.MockCallArgs):
            raise RuntimeError(
                f"the program called {args.token} at preview; finml programs make no provider calls so the offline "
                f"preview needs no cloud credentials"
            )

    class RecordingMonitor(MockMonitor):
        def __init__(self, mocks):
            super().__init__(mocks)
            self.records: dict[str, PlanResource] = {}

        def RegisterResource(self, request):  # noqa: N802 — gRPC method name
            response = super().RegisterResource(request)
            props = wire_to_plan_value(json_format.MessageToDict(request.object)) if request.object else {}
            self.records[response.urn] = PlanResource(
                urn=response.urn,
                type=request.type,
                name=request.name,
                custom=bool(request.custom),
                parent=request.parent or None,
                provider=_provider_urn(request.provider),
                dependencies=list(request.dependencies),
                property_dependencies={k: list(v.urns) for k, v in request.propertyDependencies.items() if v.urns},
                props=normalise(props),
            )
            return response

        def RegisterResourceOutputs(self, request):  # noqa: N802 — gRPC method name
            record = self.records.get(request.urn)
            if record is not None and not record.custom and request.urn.split("::")[2] != "pulumi:pulumi:Stack":
                outputs = wire_to_plan_value(json_format.MessageToDict(request.outputs)) if request.outputs else {}
                record.outputs = normalise(outputs)
            return super().RegisterResourceOutputs(request)

    mocks = PreviewMocks()
    return mocks, RecordingMonitor(mocks)


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    raise TypeError(f"config value of type {type(value).__name__} is not JSON serialisable")


def run_program(stack: StackConfig, program: Path) -> Plan:
    """Run `program` (a Pulumi program file) for `stack` under the mock runtime; return its plan."""
    import pulumi
    from pulumi.runtime.mocks import _sync_await
    from pulumi.runtime.stack import run_pulumi_func

    mocks, monitor = make_monitor()
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack.stack, preview=True, monitor=monitor)
    config: dict[str, str] = {}
    for key, value in stack.raw_config.items():
        if key in stack.secret_keys:
            # Never decrypted offline: the program gets a placeholder and the engine sees a secret.
            config[key] = f"<secret {key}: not decrypted by the offline preview>"
        else:
            # YAML dates (e.g. a waiver's `expires`) reach a Pulumi program as the strings the CLI passes on.
            config[key] = value if isinstance(value, str) else json.dumps(value, default=_yaml_scalar)
    pulumi.runtime.set_all_config(config, list(stack.secret_keys))
    program = program.resolve()
    program_dir = str(program.parent)
    if program_dir not in sys.path:
        sys.path.insert(0, program_dir)
    cwd = os.getcwd()
    os.chdir(program_dir)
    try:
        _sync_await(run_pulumi_func(lambda: runpy.run_path(str(program), run_name="__main__")))
    finally:
        os.chdir(cwd)
    # As the Pulumi CLI passes it: JSON values (YAML dates become ISO strings).
    plain_config = json.loads(json.dumps(stack.non_secret_config(), default=_yaml_scalar))
    return Plan(project=PROJECT, stack=stack.stack, config=plain_config,
                resources=list(monitor.records.values()))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3:
        print("usage: python -m finml.mockrun STACK_FILE PROGRAM OUT_PLAN", file=sys.stderr)
        return EXIT_BAD_INPUT
    stack_file, program, out = (Path(a) for a in args)
    try:
        stack = load_stack_file(stack_file)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_BAD_INPUT
    import pulumi

    try:
        plan = run_program(stack, program)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_BAD_INPUT
    except pulumi.RunError as exc:
        print(f"{stack_file}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    write_plan(plan, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
