"""Pool the rounds of several ``bench_step_time.py --json`` runs and print each method's ratio
``t(method) / (t(student) + t(teacher))`` with its 95 % bootstrap interval over all of them.

One run on a shared machine measures the ratio to a few per cent (its interval is printed); the
rounds of runs made with the same code, arguments and machine can be pooled (the pairing within
a round is kept: rounds are resampled as wholes), which narrows the interval as more rounds come
in. Runs whose arguments (other than ``--repeats`` / ``--json``), torch or thread count differ
are refused rather than mixed; so are runs of different commits unless ``--mixed-commits``
says that the code they measured is the same (the commits are then printed).

    python benchmarks/pool_step_runs.py run1.json run2.json [...] [--mixed-commits]
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_step_time import TARGET_RATIO, ratio_interval, ratio_of_medians, verdict  # noqa: E402

#: arguments that may differ between pooled runs
_FREE_ARGS = ('repeats', 'json')


def _signature(run: dict, with_commit: bool) -> tuple:
    args = {k: v for k, v in run['args'].items() if k not in _FREE_ARGS}
    setup = (run['torch'], run['threads'], json.dumps(args, sort_keys=True))
    return (run['git_commit'], ) + setup if with_commit else setup


def pool(runs: list, mixed_commits: bool = False) -> dict:
    """detector -> function -> wall seconds of every round of every run."""
    if len({_signature(r, not mixed_commits) for r in runs}) > 1:
        what = 'torch, threads or arguments' if mixed_commits else \
            'commit, torch, threads or arguments'
        raise SystemExit(f'pool_step_runs: the runs differ in {what}; pool only runs of the '
                         'same code and set-up (--mixed-commits if only the commit differs '
                         'and the measured code does not)')
    pooled = {}
    for run in runs:
        for det, data in run['detectors'].items():
            per_fn = pooled.setdefault(det, {})
            for name, values in data['wall_s'].items():
                per_fn.setdefault(name, []).extend(values)
    return pooled


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('runs', nargs='+', help='JSON files of bench_step_time.py --json')
    ap.add_argument('--mixed-commits', action='store_true',
                    help='pool runs of different commits whose measured code is the same')
    args = ap.parse_args(argv)
    runs = [json.loads(open(path).read()) for path in args.runs]
    pooled = pool(runs, args.mixed_commits)
    methods = runs[0]['args']['methods'].split(',')
    commits = sorted({r['git_commit'] for r in runs})
    print(f'{len(runs)} runs pooled (commits {", ".join(c[:12] for c in commits)}); ratio of '
          f'medians [95 % bootstrap interval]; PGD target <= {TARGET_RATIO:.2f}')
    for det, per_fn in pooled.items():
        for method in methods:
            ratio = ratio_of_medians(per_fn, method)
            interval = ratio_interval(per_fn, method)
            judged = f'  {verdict(interval)}' if method == 'pgd' else ''
            print(f'  {det:10s} {method:7s} {len(per_fn[method]):3d} rounds  {ratio:.3f} '
                  f'[{interval[0]:.3f}, {interval[1]:.3f}]{judged}')


if __name__ == '__main__':
    main()
