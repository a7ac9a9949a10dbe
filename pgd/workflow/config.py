"""The workflow configuration: YAML loading, overlays, the schema and its validation.

The schema file ``workflow/schemas/config.schema.yaml`` carries no list of method or
detector names: :func:`load_schema` fills the enums of ``$defs.detector``, ``$defs.method``
and ``$defs.distill_method`` in from :mod:`pgd.catalog` (the one home of names), and
:func:`validate_config` validates against that filled-in schema -- the only schema
validation of the workflow (the Snakefile calls it; Snakemake's own ``validate`` would read
the file without the enums). Cross-field rules (a table's dataset must exist, LD only where
the catalog allows it, ...) are checked by :class:`pgd.workflow.plan.Plan`.
"""
from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from pgd import catalog
from pgd.paths import REPO_ROOT

SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"

#: ``$defs`` entry -> the catalog's names it enumerates.
CATALOG_ENUMS = {
    "detector": catalog.detector_names,
    "method": catalog.method_names,
    "distill_method": catalog.distill_method_names,
}


class ConfigError(ValueError):
    """A bad configuration value; the message is one line and starts with the key."""


def load_yaml(path) -> dict:
    """A config file's mapping. A key given twice in one mapping is a ConfigError: YAML
    loaders (Snakemake's too) silently keep the last copy, so an edit that pasted a second
    ``method_defaults:`` block would change the runs without a word."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        pass

    def mapping(loader, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=True)
            if key in seen:
                raise ConfigError(f"{Path(path).name}: key {key!r} given twice (line "
                                  f"{key_node.start_mark.line + 1}); keep one")
            seen.add(key)
        return loader.construct_mapping(node, deep)

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    with open(path, "r", encoding="utf-8") as fh:
        return yaml.load(fh, Loader=StrictLoader) or {}


def deep_update(dst: dict, src: Mapping) -> dict:
    """Merge ``src`` into ``dst`` as Snakemake merges several configfiles (mappings recurse,
    everything else is replaced)."""
    for k, v in src.items():
        if isinstance(v, Mapping) and isinstance(dst.get(k), dict):
            deep_update(dst[k], v)
        else:
            dst[k] = copy.deepcopy(v)
    return dst


def load_config(config_path, overlays: Sequence = (), **overrides) -> dict:
    """A config file deep-merged with ``overlays`` (files or dicts) and ``overrides``."""
    config = load_yaml(config_path)
    for ov in overlays:
        deep_update(config, ov if isinstance(ov, Mapping) else load_yaml(ov))
    deep_update(config, overrides)
    return config


@functools.lru_cache(maxsize=None)
def _schema_text(path: str) -> str:
    return json.dumps(load_yaml(path))


def load_schema(schema_path=SCHEMA_PATH) -> dict:
    """The workflow schema with the catalog's detector / method enums filled in (read from
    the catalog at each call, so a method added to it is known at once)."""
    path = str(schema_path)
    schema = json.loads(_schema_text(path))
    defs = schema.setdefault("$defs", {})
    for name, names in CATALOG_ENUMS.items():
        entry = defs.setdefault(name, {"type": "string"})
        if "enum" in entry:
            raise ConfigError(f"{path}: $defs.{name} must not list names itself (they come "
                              f"from pgd.catalog)")
        entry["enum"] = list(names())
    return schema


def write_schema(path, schema_path=SCHEMA_PATH) -> Path:
    """Write the filled-in schema as a file (for tools that take a schema path, e.g.
    ``snakemake.utils.validate``)."""
    out = Path(path)
    out.write_text(json.dumps(load_schema(schema_path), indent=1), encoding="utf-8")
    return out


def _key_path(parts: Iterable) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<config>"


def validate_config(config: dict, schema_path=SCHEMA_PATH) -> dict:
    """Validate ``config`` in place against the (filled-in) schema, filling in defaults.

    Does what ``snakemake.utils.validate(config, schema, set_default=True)`` does, with the
    catalog's names, and raises :class:`ConfigError` with a single line
    ``"<key.path>: <problem>"``.
    """
    from jsonschema import Draft202012Validator, validators
    from jsonschema.exceptions import best_match

    schema = load_schema(schema_path)
    base = Draft202012Validator
    validate_properties = base.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema_):
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if isinstance(sub, dict) and "default" in sub:
                    instance.setdefault(prop, copy.deepcopy(sub["default"]))
        yield from validate_properties(validator, properties, instance, schema_)

    validator_cls = validators.extend(base, {"properties": set_defaults})
    if not isinstance(config, dict):
        raise ConfigError("<config>: the configuration must be a mapping")
    errors = list(validator_cls(schema).iter_errors(config))
    if errors:
        err = best_match(errors)
        msg = " ".join(str(err.message).split())
        if len(msg) > 300:
            msg = msg[:297] + "..."
        raise ConfigError(f"{_key_path(err.absolute_path)}: {msg}")
    return config


def check_method_option_keys(config: Mapping) -> None:
    """Every loss option of the config must be one its method reads, with a value the
    schema allows (:func:`pgd.method_options.check_method_options`, the rules ``pgd distill``
    applies): a misspelt key (``kk: 9``) would otherwise become a run of its own that trains
    exactly the default. Checked at plan time, before any job starts; one-line
    :class:`ConfigError` naming the key path and the method's known options."""
    from pgd.errors import UserError
    from pgd.method_options import check_method_options

    def check(method: str, options: Mapping, key: str) -> None:
        for opt, value in (options or {}).items():
            try:
                check_method_options(method, {opt: value})
            except UserError as exc:
                raise ConfigError(f"{key}.{opt}: {exc}") from None

    for method, opts in (config.get("method_defaults") or {}).items():
        check(method, opts, f"method_defaults.{method}")
    for det, per_method in (config.get("detector_method_defaults") or {}).items():
        for method, opts in (per_method or {}).items():
            check(method, opts, f"detector_method_defaults.{det}.{method}")
    for tid, table in (config.get("tables") or {}).items():
        ablation = (table or {}).get("ablation")
        if not ablation:
            continue
        method = ablation.get("method", "pgd")
        key = f"tables.{tid}.ablation"
        for label, opts in (ablation.get("variants") or {}).items():
            check(method, opts, f"{key}.variants.{label}")
        for opt, values in (ablation.get("sweep") or {}).items():
            for v in values:
                check(method, {opt: v}, f"{key}.sweep")
