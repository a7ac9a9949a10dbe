"""``python -m pgd <command>``: one entry point for every Snakemake rule.

Each command lives in its own module exposing ``add_arguments(parser)`` and ``run(args)``;
modules are imported lazily so ``python -m pgd make-data`` does not pay for importing torch.
Errors a user can fix (bad paths, bad names, no GPU) are printed as one line, exit code 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from pgd.errors import UserError

COMMANDS = {
    'make-data': ('pgd.data.make_data', 'write a SYNTHETIC COCO-format dataset'),
    'convert-crowdhuman': ('pgd.data.crowdhuman', 'convert CrowdHuman .odgt to COCO json'),
    'train': ('pgd.engine.train', 'train a detector or a distillation run (MMEngine Runner)'),
    'test': ('pgd.engine.test', 'evaluate a checkpoint, write metrics JSON with provenance'),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='python -m pgd', description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')
    for name, (module_name, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        sp.set_defaults(_module=module_name)
        # Argument definitions are cheap to import only if the module keeps heavy imports
        # inside run(); every command module follows that rule.
        importlib.import_module(module_name).add_arguments(sp)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args) or 0)
    except (UserError, FileNotFoundError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
