"""The workflow planner: pure Python (no Snakemake import), unit-tested.

The Snakefile turns the validated config into a :class:`~pgd.workflow.plan.Plan` once, and
every rule's input, params and run-info come from it. Modules, in dependency order (no
cycles; outside this package only :mod:`pgd.catalog`, :mod:`pgd.paths`,
:mod:`pgd.engine.config_utils` and, lazily, :mod:`pgd.method_options`, :mod:`pgd.io`,
:mod:`pgd.engine.workdir`, :mod:`pgd.data.check`, mmengine and jsonschema):

* :mod:`.config` -- load YAML, deep-merge overlays, the JSON schema (its method / detector
  enums filled in from :mod:`pgd.catalog`), validation with one-line errors naming the key,
  the loss-option key check.
* :mod:`.values` -- option values as row labels, run names and ``--loss-options``.
* :mod:`.methods` -- the method defaults of ``config/distill/<method>.py`` per detector (the
  one home of every method hyper-parameter) and their digest.
* :mod:`.fingerprint` -- run fingerprints (detector-config and method-config digests).
* :mod:`.runs` -- :class:`Run`, :class:`Row`, :class:`Analysis` and the naming constants.
* :mod:`.plan` -- :class:`Plan`, :func:`load_plan` (its read-only queries: :mod:`.plan_queries`).
* :mod:`.manifest` -- the per-table row manifests ``results/<scale>/manifests/<table>.json``.
* :mod:`.rules` -- rule helpers: ``guard_workdir``, ``check_data``, ``write_summary``,
  ``launcher``.
* :mod:`.commands` -- their ``python -m pgd`` subcommands (``guard-workdir``,
  ``check-external-data``, ``summary``, ``manifest``, ``describe-plan``).

The names below are re-exported for convenience (``from pgd import workflow as wf``).
"""
from pgd.paths import REPO_ROOT  # noqa: F401
from pgd.workflow.config import (SCHEMA_PATH, ConfigError, deep_update, load_config,  # noqa: F401
                                 load_schema, load_yaml, validate_config, write_schema)
from pgd.workflow.fingerprint import config_digest, fingerprint, method_digest  # noqa: F401
from pgd.workflow.plan import Plan, load_plan  # noqa: F401
from pgd.workflow.rules import (FINGERPRINT_FILE, check_data, guard_workdir,  # noqa: F401
                                launcher, write_summary)
from pgd.workflow.runs import (BASELINE_FALLBACK, DETECTORS, DISTILL_METHODS,  # noqa: F401
                               FIGURES, PAPER_TABLES, RUN_KINDS, TEACHER_FREE_METHODS,
                               Analysis, Row, Run)
from pgd.workflow.values import (LABEL_RE, backbone_label, cli_value,  # noqa: F401
                                 format_value, same)
