"""Option values as row labels, run directory names and ``--loss-options`` items."""
from __future__ import annotations

import math
import re

#: a row label / variant name: also a path component.
LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=+-]*$")


def format_value(value) -> str:
    """Option value as used in row labels, run directories and ``--loss-options``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # 0.07 -> "0.07", 1.0 stays "1.0" (paper_values uses repr)
    if isinstance(value, (list, tuple)):
        return "+".join(format_value(v) for v in value)
    return str(value)


def cli_value(value) -> str:
    """Value for ``--loss-options key=value`` (lists as ``[a,b]``, mmengine DictAction)."""
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(cli_value(v) for v in value) + "]"
    return format_value(value)


def json_value(value):
    """A structured option value as JSON holds it (tuples -> lists)."""
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    return value


def same(a, b) -> bool:
    """Option values equal as the trained model sees them (9 == 9.0, [a, b] == (a, b))."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)
    return a == b


def backbone_label(model: str) -> str:
    """``r18_student`` -> ``r18``; ``mbv2_student`` -> ``mbv2``; ``r50_student_crowdhuman``
    -> ``r50``."""
    return model.split("_", 1)[0]
