"""``python -m pgd regime``: the premise gates -- is this scale able to test the paper at all?

The paper's comparisons rest on premises that a small scale can break. Each gate measures one,
from files the workflow already produces, and says pass or fail against a stated threshold:

* ``fig3_top1pct_drop`` (per Table 1 teacher, from ``pgd mask-out``): masking the teacher's
  top-1 % predictions by quality inside the GT boxes must cut its AP by at least
  :data:`FIG3_MIN_DROP` (the paper's Fig. 3: "roughly halves"; 40 % leaves room for noise).
* ``student_teacher_ratio`` and ``teacher_student_gap`` (per Table 1 detector, from the teacher
  and student metrics): the mean student AP over seeds divided by the teacher's must lie in
  :data:`RATIO_RANGE` (the paper's students reach 87 % of their teachers, 39.6 / 45.5 AP on
  ATSS), and the gap must be at least :data:`MIN_GAP` AP (something to distil).
* ``geometry_median`` and ``geometry_frac_4k`` (per geometry summary, from ``pgd geometry``):
  the median GT must cover at least :data:`GEOMETRY_MIN_MEDIAN` locations (2K for K = 30) and
  at least :data:`GEOMETRY_MIN_FRAC_4K` of the GTs 4K or more, else PGW's top-K is "every
  location inside the box".
* ``zero_weight_sanity`` (per ``pgd sanity-check`` result, ``--sanity``): the distiller with
  every loss weight 0 and no teacher-init ends with the plain student's weights bit for bit
  (same seed), so what a method's row adds is its loss and its initialisation, nothing else.
* ``student_plateau`` (:func:`gate_plateau`, per learning curve, from a run's
  ``training_log.json`` given with ``--training-log``): the last 20 % of a schedule adds less
  than :data:`PLATEAU_MAX_LATE_GAIN` of the final AP. The curve is the run's val AP at every
  validation, so the schedule must validate at least twice (the mini student schedule
  validates every ``val_interval`` epochs with a point at 80 % of the schedule).

A gate whose input is missing is reported as such and does not pass. The JSON written by
``--out`` is ``{"gates": [{"gate", "subject", "measured", "threshold", "pass"}, ...],
"all_pass": bool}``; ``--md`` writes the same as a table (printed first by the claim check).
"""
from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

#: Fig. 3 premise: relative AP drop when the top-1 % predictions are masked.
FIG3_MIN_DROP = 0.40
FIG3_RATIO = 0.01
#: Trained-student premise: student / teacher AP, and the minimum gap in AP points.
RATIO_RANGE = (0.70, 0.92)
MIN_GAP = 3.0
#: Geometry premise for K = 30: median covered locations, and the share covering >= 4K.
GEOMETRY_MIN_MEDIAN = 60.0
GEOMETRY_MIN_FRAC_4K = 0.25
#: Plateau premise: share of the final AP added by the last 20 % of the schedule.
PLATEAU_MAX_LATE_GAIN = 0.10


def _gate(gate: str, subject: str, measured, threshold: str, passed: Optional[bool]) -> dict:
    return {'gate': gate, 'subject': subject, 'measured': measured, 'threshold': threshold,
            'pass': passed}


def gate_fig3(label: str, mask_out: dict) -> dict:
    """Relative AP drop at the 1 % ratio of a ``pgd mask-out`` result."""
    ratios, aps = mask_out.get('ratios', []), mask_out.get('AP', [])
    threshold = f'>= {FIG3_MIN_DROP:.0%} drop at top-{FIG3_RATIO:.0%}'
    if 0.0 not in ratios or FIG3_RATIO not in ratios or not aps:
        return _gate('fig3_top1pct_drop', label, None, threshold, None)
    base, masked = aps[ratios.index(0.0)], aps[ratios.index(FIG3_RATIO)]
    if base is None or masked is None or base <= 0:
        return _gate('fig3_top1pct_drop', label, None, threshold, None)
    drop = round((base - masked) / base, 4)
    return _gate('fig3_top1pct_drop', label, drop, threshold, drop >= FIG3_MIN_DROP)


def gate_student_teacher(detector: str, teacher_ap: Optional[float],
                         student_aps: Sequence[float]) -> List[dict]:
    """Ratio of the mean student AP to the teacher's, and their gap."""
    lo, hi = RATIO_RANGE
    r_thr, g_thr = f'in [{lo:.2f}, {hi:.2f}]', f'>= {MIN_GAP:.1f} AP'
    if teacher_ap is None or not student_aps or teacher_ap <= 0:
        return [_gate('student_teacher_ratio', detector, None, r_thr, None),
                _gate('teacher_student_gap', detector, None, g_thr, None)]
    student = statistics.fmean(student_aps)
    ratio, gap = round(student / teacher_ap, 4), round(teacher_ap - student, 2)
    return [_gate('student_teacher_ratio', detector, ratio, r_thr, lo <= ratio <= hi),
            _gate('teacher_student_gap', detector, gap, g_thr, gap >= MIN_GAP)]


def gate_geometry(subject: str, summary: dict) -> List[dict]:
    """The two geometry gates of a ``pgd geometry --json`` summary."""
    median, frac = summary.get('median'), summary.get('frac_at_least_4k')
    return [_gate('geometry_median', subject, median, f'>= {GEOMETRY_MIN_MEDIAN:.0f} locations',
                  None if median is None else median >= GEOMETRY_MIN_MEDIAN),
            _gate('geometry_frac_4k', subject, frac, f'>= {GEOMETRY_MIN_FRAC_4K:.0%} of GTs',
                  None if frac is None else frac >= GEOMETRY_MIN_FRAC_4K)]


def gate_sanity(subject: str, doc: dict) -> dict:
    """Tensors of the zero-weight distillation that differ from the plain student's."""
    n = doc.get('tensors_differing')
    return _gate('zero_weight_sanity', subject, n, '0 tensors differ (bit-identical)',
                 None if n is None else n == 0 and bool(doc.get('pass')))


def gate_plateau(subject: str, curve: Sequence[Tuple[float, float]]) -> dict:
    """``curve``: (iteration or epoch, AP) points of one run, in order of training."""
    threshold = f'last 20 % adds < {PLATEAU_MAX_LATE_GAIN:.0%} of the final AP'
    if len(curve) < 2 or curve[-1][1] is None or curve[-1][1] <= 0:
        return _gate('student_plateau', subject, None, threshold, None)
    end = curve[-1][0]
    start = curve[0][0]
    cut = start + 0.8 * (end - start)
    before = [ap for t, ap in curve if t <= cut and ap is not None]
    if not before:
        return _gate('student_plateau', subject, None, threshold, None)
    late = round((curve[-1][1] - before[-1]) / curve[-1][1], 4)
    return _gate('student_plateau', subject, late, threshold, late < PLATEAU_MAX_LATE_GAIN)


def table1_baselines(manifests: Sequence[str]) -> Dict[str, Tuple[Optional[float], List[float]]]:
    """detector -> (teacher AP, student APs over seeds) of the Table 1 rows of the given row
    manifests (read by the tables' loader; a diverged run has no AP and is left out)."""
    from pgd.tables.loading import load_runs
    teacher: Dict[str, float] = {}
    students: Dict[str, List[float]] = defaultdict(list)
    if not manifests:
        return {}
    df = load_runs(manifests)
    if df.empty:
        return {}
    sub = df[(df['table'] == 'table1') & (df['metric'] == 'AP')]
    for r in sub.itertuples():
        if r.value is None or r.value != r.value:  # undefined / NaN
            continue
        if r.setting == 'teacher':
            teacher[r.detector] = float(r.value)
        elif r.setting == 'student':
            students[r.detector].append(float(r.value))
    return {d: (teacher.get(d), students.get(d, [])) for d in sorted(set(teacher) | set(students))}


#: The val metric of a ``training_log.json`` entry that is the COCO AP (a 0-1 fraction).
VAL_AP_KEYS = ('coco/bbox_mAP', 'bbox_mAP')


def curve_from_training_log(doc: dict) -> List[Tuple[float, Optional[float]]]:
    """``(step, AP in points)`` for every validation of a ``pgd training-log`` document."""
    curve = []
    for entry in doc.get('val') or []:
        key = next((k for k in VAL_AP_KEYS if k in entry), None)
        if key is not None and entry.get('step') is not None:
            ap = entry[key]
            curve.append((float(entry['step']), None if ap is None else 100.0 * float(ap)))
    return curve


def compute(mask_outs: Dict[str, dict],
            baselines: Dict[str, Tuple[Optional[float], List[float]]],
            geometries: Dict[str, dict],
            curves: Optional[Dict[str, Sequence[Tuple[float, float]]]] = None,
            sanity: Optional[Dict[str, dict]] = None) -> dict:
    gates = [gate_fig3(label, m) for label, m in sorted(mask_outs.items())]
    for det, (t_ap, s_aps) in baselines.items():
        gates += gate_student_teacher(det, t_ap, s_aps)
    for subject, summary in sorted(geometries.items()):
        gates += gate_geometry(subject, summary)
    for subject, curve in sorted((curves or {}).items()):
        gates.append(gate_plateau(subject, curve))
    for subject, doc in sorted((sanity or {}).items()):
        gates.append(gate_sanity(subject, doc))
    return {'gates': gates, 'all_pass': bool(gates) and all(g['pass'] for g in gates)}


def to_markdown(result: dict) -> str:
    def fmt(v):
        return 'missing' if v is None else (f'{v:.3g}' if isinstance(v, float) else str(v))
    lines = ['## Premise gates', '',
             'Whether this scale can test the paper at all (`pgd regime`); a claim whose table '
             'fails a gate is reported as *regime invalid*.', '',
             '| gate | subject | measured | threshold | verdict |', '|---|---|---|---|---|']
    for g in result['gates']:
        verdict = {True: 'pass', False: '**FAIL**', None: 'missing'}[g['pass']]
        lines.append(f"| {g['gate']} | {g['subject']} | {fmt(g['measured'])} | "
                     f"{g['threshold']} | {verdict} |")
    lines += ['', f"All gates pass: **{'yes' if result['all_pass'] else 'no'}**", '']
    return '\n'.join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument('--mask-out', nargs='*', default=[], help='pgd mask-out JSON files')
    p.add_argument('--rows', nargs='*', default=[],
                   help='row manifests (results/<scale>/manifests/<table>.json); the Table 1 '
                        'teacher and student rows are used')
    p.add_argument('--geometry', nargs='*', default=[], help='pgd geometry --json files')
    p.add_argument('--training-log', nargs='*', default=[],
                   help='training_log.json files of student runs (student_plateau gate; the '
                        "subject is the file's folder, as given)")
    p.add_argument('--sanity', nargs='*', default=[],
                   help='pgd sanity-check JSON files (zero_weight_sanity gate; the subject is '
                        "the file's name)")
    p.add_argument('--out', required=True, help='regime.json')
    p.add_argument('--md', default=None, help='also write the gates as a markdown section')


def _load(paths: Sequence[str]) -> List[Tuple[str, dict]]:
    from pgd.errors import UserError
    out = []
    for path in paths:
        try:
            out.append((Path(path).stem, json.loads(Path(path).read_text())))
        except (OSError, ValueError) as exc:
            raise UserError(f'cannot read {path}: {exc}') from exc
    return out


def run(args) -> int:
    from pgd.io import atomic_write_json, atomic_write_text
    mask_outs = {d.get('label', stem): d for stem, d in _load(args.mask_out)}
    geometries = {d.get('config', stem): d for stem, d in _load(args.geometry)}
    curves = {str(Path(path).parent): curve_from_training_log(doc)
              for path, (_, doc) in zip(args.training_log, _load(args.training_log))}
    sanity = dict(_load(args.sanity))
    result = compute(mask_outs, table1_baselines(args.rows), geometries, curves, sanity)
    atomic_write_json(args.out, result)
    md = to_markdown(result)
    if args.md:
        atomic_write_text(args.md, md)
    print(md)
    return 0
