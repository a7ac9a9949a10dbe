"""``python -m pgd <command>``: one entry point for every Snakemake rule.

Each command lives in its own module exposing ``add_arguments(parser)`` and ``run(args)``. Only
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
            importlib.import_module(module_name).add_arguments(sp)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith('-')), None)
    args = build_parser(command).parse_args(argv)
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args) or 0)
    except (UserError, FileNotFoundError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
