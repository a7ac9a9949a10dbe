"""``python -m pgd <command>``: one entry point for every Snakemake rule.

Each command lives in its own module exposing ``add_arguments(parser)`` and ``run(args)`` (or,
written ``module:name``, in an object ``name`` of that module with the two). Only
the chosen command's module is imported, so ``python -m pgd make-data`` does not pay for
importing torch/mmdet. Errors a user can fix (bad paths, bad names, no GPU) are printed as one
line with exit code 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from pgd.errors import UserError

COMMANDS = {
    'make-data': ('pgd.data.make_data', 'write a SYNTHETIC COCO-format dataset'),
    'split-holdout': ('pgd.data.holdout', 'hold out part of a dataset\'s TRAIN images for tuning'),
    'convert-crowdhuman': ('pgd.data.crowdhuman', 'convert CrowdHuman .odgt to COCO json'),
    'check-data': ('pgd.data.check', 'check a COCO split (boxes, ids, image files); refuse or '
                   '--repair'),
    'train': ('pgd.engine.train', 'train a detector or a distillation run (MMEngine Runner)'),
    'distill': ('pgd.engine.distill', 'train a student with a distillation method'),
    'test': ('pgd.engine.test', 'evaluate a checkpoint, write metrics JSON with provenance'),
    'tables': ('pgd.tables.cli', 'build paper-style tables (md/tex/csv) from metrics files'),
    'tuning-summary': ('pgd.tables.tuning', 'per-method loss-scale search -> one CSV'),
    'figures': ('pgd.analysis.figures', 'K/alpha curves, mask-out curves, Table 1 gain bars'),
    'claims': ('pgd.analysis.claims', "check the paper's quantitative claims on the runs"),
    'mask-out': ('pgd.analysis.mask_out', 'Fig. 3: AP after masking the top-X%% quality predictions'),
    'analyse-quality': ('pgd.analysis.quality_maps', 'Fig. 2: teacher quality heat-maps'),
    'geometry': ('pgd.analysis.geometry', 'locations covered per GT box (PGW top-K premise)'),
    'regime': ('pgd.analysis.regime', "premise gates: can this scale test the paper's claims"),
    'sanity-check': ('pgd.analysis.sanity', 'zero-weight distiller vs plain student, bit for bit'),
    'pretrain-backbone': ('pgd.pretrain.cli', 'synthetic pretraining: the ImageNet stand-in'),
    'training-log': ('pgd.engine.training_log', "a run's training scalars as compact JSON"),
    'check-reproduction': ('pgd.reproduce.check', 'compare a run with the committed reference'),
    'publish-reference': ('pgd.reproduce.publish', 'copy a finished run into results/reference/'),
    'estimate': ('pgd.reproduce.estimate', 'jobs, CPU/GPU hours and wall time before running'),
    # the workflow's own helpers (pgd/workflow/commands.py)
    'guard-workdir': ('pgd.workflow.commands:guard_workdir',
                      'before (re)training: set aside checkpoints of a run with other parameters'),
    'check-external-data': ('pgd.workflow.commands:check_external_data',
                            'check an external dataset root (COCO, CrowdHuman), write a stamp'),
    'summary': ('pgd.workflow.commands:summary', 'write results/<scale>/report.md'),
    'manifest': ('pgd.workflow.commands:manifest', "a table's row manifest (which run is "
                 'which row), as the workflow writes it'),
    'describe-plan': ('pgd.workflow.commands:describe_plan', 'job counts of a workflow config'),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The CLI parser; arguments are added only for ``command`` (all names are listed)."""
    parser = argparse.ArgumentParser(prog='python -m pgd',
                                     description='Prediction-Guided Distillation pipeline')
    sub = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')
    for name, (module_name, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        sp.set_defaults(_module=module_name)
        if name == command:
            load_command(module_name).add_arguments(sp)
    return parser


def load_command(spec: str):
    """The object with ``add_arguments`` / ``run`` of ``module`` or ``module:name``."""
    module_name, _, attr = spec.partition(':')
    module = importlib.import_module(module_name)
    return getattr(module, attr) if attr else module


_KEY_VALUE_OPTIONS = ('--cfg-options', '--loss-options', '--run-info')


def _is_bad_key_value(item: str, argv: list) -> bool:
    """``item`` follows a KEY=VALUE option (before the next ``--flag``) and has no '='."""
    i = argv.index(item)
    for prev in reversed(argv[:i]):
        if prev.startswith('--'):
            return prev in _KEY_VALUE_OPTIONS and '=' not in item
    return False


def check_common_arguments(args) -> None:
    """Values argparse lets through but that fail deep inside a run: a seed must be a valid
    numpy/torch seed (0 <= seed < 2**32); otherwise training dies after building the model."""
    seed = getattr(args, 'seed', None)
    if seed is not None and not 0 <= seed < 2 ** 32:
        raise UserError(f'--seed must be an integer in [0, 2**32 - 1], got {seed}')


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith('-')), None)
    try:
        args = build_parser(command).parse_args(argv)
        check_common_arguments(args)
    except UserError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    except ValueError:  # mmengine's DictAction on an item without '='
        bad = next((a for a in argv if _is_bad_key_value(a, argv)), None)
        print(f'error: --cfg-options / --loss-options / --run-info take KEY=VALUE items, got '
              f'{bad!r}', file=sys.stderr)
        return 2
    module = load_command(args._module)
    try:
        return int(module.run(args) or 0)
    except (UserError, FileNotFoundError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
