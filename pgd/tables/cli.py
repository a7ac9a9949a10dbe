"""``python -m pgd tables --rows MANIFEST.json ... --out-dir DIR [--tables ID ...]``."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument('--rows', nargs='+', required=True, metavar='MANIFEST',
                   help='row manifests (results/<scale>/manifests/<table>.json)')
    p.add_argument('--out-dir', required=True, help='tables are written here as md/tex/csv')
    p.add_argument('--tables', nargs='*', default=None,
                   help='table ids to build (default: every table the rows mention)')
    p.add_argument('--no-paper', action='store_true', help='omit the published-value columns')


def run(args) -> int:
    from pgd.tables.build import MetricsFileError, build_all
    from pgd.errors import UserError
    try:
        written = build_all(args.rows, args.out_dir, args.tables, paper=not args.no_paper)
    except MetricsFileError as exc:
        raise UserError(str(exc)) from None
    for tid, files in written.items():
        print(tid, *(str(p) for p in files.values()))
    return 0
