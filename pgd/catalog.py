"""The catalog: every distillation method and every detector the pipeline knows, in one place.

Everything that needs a method or detector *name, label or order* reads it from here: the
workflow config schema (its ``method`` / ``distill_method`` / ``detector`` enums are filled in
from this module when the config is validated), the planner, the tables, figures and claim
check, the CLI's option validation and the tests. Adding a method is

1. a loss file under ``pgd/distill/losses/`` (a registered ``nn.Module``),
2. its config ``config/distill/<name>.py`` (defaults, each with its source),
3. one :class:`Method` entry in :data:`METHODS` below

(``workflow/ADDING_A_METHOD.md`` walks through it).

Pure data, no imports from the rest of ``pgd`` (everything may import it without a cycle).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple


@dataclass(frozen=True)
class Detector:
    """A dense detector of the paper's tables.

    Attributes:
        name: the token used in configs, run paths and table rows (``atss``).
        label: as printed in the tables (``ATSS``).
        mmdet_type: the ``model.type`` of its MMDetection config (``ATSS``).
    """

    name: str
    label: str
    mmdet_type: str


@dataclass(frozen=True)
class Method:
    """A distillation method (or the teacher-init control).

    Attributes:
        name: token of configs, run paths and table rows; its config is
            ``config/distill/<name>.py``.
        label: as printed in the tables and figures.
        teacher_free: trains without a separate teacher network (LGD builds its own
            label-guided teacher); planned as a ``teacher_free`` run, not a ``distill`` one.
        detectors: the detectors the method is defined for; ``None`` means all of them (LD's
            distribution KL needs GFL's general distribution head).
        control: not a method of the paper but a control (``inherit``: teacher-initialised
            student, no distillation loss; ``zero``: PGD's distiller with every loss weight 0
            and no teacher-init, which must train the plain student bit for bit).
        engine: how ``python -m pgd distill`` builds the run: ``feature`` (FeatureDistiller
            with the losses of the method config), ``ld`` (MMDetection's KD detector with an LD
            head) or ``lgd`` (LabelGuidedSelfDistiller).
    """

    name: str
    label: str
    teacher_free: bool = False
    detectors: Optional[Tuple[str, ...]] = None
    control: bool = False
    engine: str = 'feature'

    def supports(self, detector: str) -> bool:
        return self.detectors is None or detector in self.detectors


#: Detectors in the paper's table order (Table 1).
DETECTORS: Tuple[Detector, ...] = (
    Detector('atss', 'ATSS', 'ATSS'),
    Detector('fcos', 'FCOS', 'FCOS'),
    Detector('gfl', 'GFL', 'GFL'),
    Detector('ddod', 'DDOD', 'DDOD'),
    Detector('autoassign', 'AutoAssign', 'AutoAssign'),
)

#: Methods in display order (tables without a paper row order, figures, claims): the control
#: first, then the competitors as the paper's Table 1 lists them, PGD last.
METHODS: Tuple[Method, ...] = (
    Method('inherit', 'Teacher-init student (control)', control=True),
    Method('defeat', 'DeFeat'),
    Method('frs', 'FRS'),
    Method('fgfi', 'FGFI'),
    Method('fkd', 'FKD'),
    Method('fgd', 'FGD'),
    Method('ld', 'LD', detectors=('gfl',), engine='ld'),
    Method('lgd', 'LGD', teacher_free=True, engine='lgd'),
    Method('pgd', 'Ours (PGD)'),
    Method('zero', 'Distiller, all loss weights 0 (sanity)', control=True),
)

#: Table labels of the settings that are not methods: the two roles and the ablation rows
#: (Table 5 foreground strategies, Table 7 branches).
ROLE_LABELS: Dict[str, str] = {'teacher': 'Teacher', 'student': 'Student'}
ABLATION_LABELS: Dict[str, str] = {
    'box': 'Box', 'boxgauss': 'BoxGauss', 'centre': 'Centre', 'quality': 'Quality',
    'topkeq': 'TopkEq', 'kde': 'KDE', 'pgw': 'Ours',
    'neck': 'neck', 'cls': 'cls', 'reg': 'reg', 'cls+reg': 'cls + reg',
}


# ----------------------------------------------------------------------------- lookups

def control_names() -> Tuple[str, ...]:
    """The control settings (not competitors: claims never compare PGD against them)."""
    return tuple(m.name for m in METHODS if m.control)


def detector_names() -> Tuple[str, ...]:
    return tuple(d.name for d in DETECTORS)


def method_names() -> Tuple[str, ...]:
    """Every method, in display order."""
    return tuple(m.name for m in METHODS)


def distill_method_names() -> Tuple[str, ...]:
    """Methods planned as teacher -> student ``distill`` runs."""
    return tuple(m.name for m in METHODS if not m.teacher_free)


def feature_method_names() -> Tuple[str, ...]:
    """The competitors and PGD that imitate features in the teacher -> student distiller (the
    methods whose step cost the benchmarks compare), in display order."""
    return tuple(m.name for m in METHODS if m.engine == 'feature' and not m.control)


def teacher_free_method_names() -> Tuple[str, ...]:
    return tuple(m.name for m in METHODS if m.teacher_free)


def method(name: str) -> Method:
    for m in METHODS:
        if m.name == name:
            return m
    raise KeyError(f"unknown method {name!r} (known: {', '.join(method_names())})")


def detector(name: str) -> Detector:
    for d in DETECTORS:
        if d.name == name:
            return d
    raise KeyError(f"unknown detector {name!r} (known: {', '.join(detector_names())})")


def detector_by_mmdet_type(mmdet_type: str) -> Optional[Detector]:
    return next((d for d in DETECTORS if d.mmdet_type == mmdet_type), None)


def detector_label(name: str) -> str:
    return next((d.label for d in DETECTORS if d.name == name), name)


def setting_label(setting: str) -> str:
    """Table label of a row setting: a role, a method or an ablation row; else itself."""
    if setting in ROLE_LABELS:
        return ROLE_LABELS[setting]
    m = next((m for m in METHODS if m.name == setting), None)
    if m is not None:
        return m.label
    return ABLATION_LABELS.get(setting, setting)


def setting_labels() -> Dict[str, str]:
    """Every known setting -> label (roles, methods, ablation rows)."""
    return {**ROLE_LABELS, **{m.name: m.label for m in METHODS}, **ABLATION_LABELS}
