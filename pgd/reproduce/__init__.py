"""Reproduction bookkeeping: the committed reference results and how a run compares to them.

* :mod:`pgd.reproduce.publish` -- ``python -m pgd publish-reference``: copy a finished run's
  small result files (metrics, tables, figures, claims, training logs, benchmarks) from
  ``results/<scale>/`` into the committed reference tree ``results/reference/<scale>/``.
* :mod:`pgd.reproduce.check` -- ``python -m pgd check-reproduction``: every table cell the
  reference also has, reference vs reproduced, with a seed-noise criterion
  (``results/<scale>/reproduction.{md,json}``, the last step of the DAG).
* :mod:`pgd.reproduce.estimate` -- ``python -m pgd estimate``: jobs, CPU/GPU hours and wall
  time of a config before running it, from the reference's per-job benchmarks or from the
  config's ``estimate:`` block.

The workflow never writes into ``results/reference/``; a run writes only ``results/<scale>/``.
"""
REFERENCE_ROOT = 'results/reference'
