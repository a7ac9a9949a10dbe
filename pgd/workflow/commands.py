"""The workflow's ``python -m pgd`` subcommands (registered in :data:`pgd.cli.COMMANDS` as
``pgd.workflow.commands:<name>``; each object has ``add_arguments(parser)`` and ``run(args)``).

* ``guard-workdir WORKDIR FINGERPRINT`` -- before (re)training: set aside the checkpoints of a
  run with other parameters (:func:`pgd.workflow.rules.guard_workdir`).
* ``check-external-data --root R --require ... --out STAMP`` -- an external dataset (COCO,
  CrowdHuman) is present and clean; writes the stamp the training jobs depend on.
* ``summary --out report.md ...`` -- ``results/<scale>/report.md``.
* ``describe-plan CONFIG [OVERLAY...]`` -- the job counts of a config.
* ``manifest CONFIG [OVERLAY...] --table T [--out F]`` -- a table's row manifest as the
  workflow writes it (printed, or written to ``F``).
"""
from __future__ import annotations

import sys
from types import SimpleNamespace


def _guard_args(p):
    p.add_argument("workdir")
    p.add_argument("fingerprint")


def _guard_run(args) -> int:
    from pgd.workflow.rules import guard_workdir
    guard_workdir(args.workdir, args.fingerprint)
    return 0


def _check_args(p):
    p.add_argument("--root", required=True)
    p.add_argument("--require", nargs="*", default=[])
    p.add_argument("--out", required=True)


def _check_run(args) -> int:
    from pgd.workflow.rules import check_data
    check_data(args.root, args.require, args.out)
    return 0


def _summary_args(p):
    p.add_argument("--out", required=True)
    p.add_argument("--scale", required=True)
    p.add_argument("--synthetic", action="store_true")
    p.add_argument("--tables", nargs="*", default=[])
    p.add_argument("--claims", default=None)
    p.add_argument("--regime", default=None, help="regime.md (pgd regime --md): printed first")
    p.add_argument("--figures", nargs="*", default=[])


def _summary_run(args) -> int:
    from pgd.workflow.rules import write_summary
    write_summary(args.out, args.tables, args.claims, args.figures, args.scale, args.synthetic,
                  regime=args.regime)
    return 0


def _plan_args(p):
    p.add_argument("configfiles", nargs="+", metavar="CONFIG",
                   help="a config file, then overlays deep-merged over it (as --configfile)")


def _load(args):
    from pgd.errors import UserError
    from pgd.workflow.config import ConfigError
    from pgd.workflow.plan import load_plan
    try:
        return load_plan(args.configfiles[0], args.configfiles[1:])
    except ConfigError as exc:
        raise UserError(f"config error: {exc}") from None


def _describe_run(args) -> int:
    print(_load(args).describe())
    return 0


def _manifest_args(p):
    _plan_args(p)
    p.add_argument("--table", required=True)
    p.add_argument("--out", default=None, help="write here (default: print)")


def _manifest_run(args) -> int:
    from pgd.errors import UserError
    from pgd.workflow import manifest as mf
    plan = _load(args)
    if args.table not in plan.tables:
        raise UserError(f"no table {args.table!r} in the {plan.scale!r} plan (tables: "
                        f"{', '.join(plan.tables)})")
    if args.out:
        mf.write_manifest(args.out, mf.manifest(plan, args.table))
    else:
        import json
        json.dump(mf.manifest(plan, args.table), sys.stdout, indent=2)
        print()
    return 0


guard_workdir = SimpleNamespace(add_arguments=_guard_args, run=_guard_run)
check_external_data = SimpleNamespace(add_arguments=_check_args, run=_check_run)
summary = SimpleNamespace(add_arguments=_summary_args, run=_summary_run)
describe_plan = SimpleNamespace(add_arguments=_plan_args, run=_describe_run)
manifest = SimpleNamespace(add_arguments=_manifest_args, run=_manifest_run)
