"""The claim check with premise gates (``pgd claims --regime regime.json``): the gates come
first, and a claim whose table fails a gate is "regime invalid" instead of holds / not."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from manifest_rows import write_row
from pgd.analysis import claims as claims_mod
from pgd.analysis.claim_regime import gated_tables, load_regime
from pgd.errors import UserError


def _doc(ap: float, dataset: str) -> dict:
    return {'metrics': {'AP': ap, 'AP50': ap + 15, 'AP75': ap + 2, 'MR': 60.0 - ap, 'JI': ap},
            'provenance': {'git_commit': 'c0ffee' * 6,
                           'dataset': {'name': dataset, 'synthetic': True}}}


@pytest.fixture()
def inputs(tmp_path):
    rows = []
    for seed in (0, 1):
        for setting, ap in (('student', 20.0), ('fgd', 21.0), ('pgd', 24.0)):
            rows.append(write_row(tmp_path, 'table1', 'atss', setting, seed,
                                  _doc(ap + 0.1 * seed, 'synthetic_shapes')))
    # Table 3 on another dataset (crowd): not concerned by Table 1's gates
    for setting, ap in (('student', 30.0), ('pgd', 33.0)):
        rows.append(write_row(tmp_path, 'table3', 'ddod', setting, 0,
                              _doc(ap, 'synthetic_crowd')))
    return tmp_path, [str(r) for r in rows]


def _regime(path: Path, passed) -> Path:
    gates = [{'gate': 'student_teacher_ratio', 'subject': 'atss', 'measured': 0.34,
              'threshold': 'in [0.70, 0.92]', 'pass': passed},
             {'gate': 'geometry_median', 'subject': 'mini/atss_r18_student', 'measured': None,
              'threshold': '>= 60 locations', 'pass': None}]
    path.write_text(json.dumps({'gates': gates, 'all_pass': bool(passed)}))
    return path


def test_failing_gate_marks_its_tables_regime_invalid(inputs):
    root, rows = inputs
    regime = load_regime(_regime(root / 'regime.json', False))
    claims, _, _ = claims_mod.check_claims(rows, [], regime)
    by = {c.title: c for c in claims}
    t1 = by['PGD beats FGD on every detector (Table 1)']
    assert t1.status == 'regime invalid' and t1.verdict == 'regime invalid'
    assert t1.measured_status == 'holds'  # still measured, and said in the details
    assert t1.regime_failures == ['student_teacher_ratio (atss)']
    crowd = by['PGD best on crowd MR/AP/JI (Table 3)']
    assert crowd.status == 'holds' and not crowd.regime_failures
    # nothing measured stays "not measured"; the Fig. 3 claim is never gated
    assert by['PGD > FGD with MobileNetV2 (Table 2)'].status == 'not measured'
    assert by['teacher top-1% masking roughly halves AP (Fig. 3)'].status == 'not measured'


def test_passing_or_missing_gates_change_nothing(inputs):
    root, rows = inputs
    regime = load_regime(_regime(root / 'regime.json', True))
    claims, _, _ = claims_mod.check_claims(rows, [], regime)
    assert not any(c.status == 'regime invalid' for c in claims)
    plain, _, _ = claims_mod.check_claims(rows, [])
    assert [c.verdict for c in claims] == [c.verdict for c in plain]


def test_cli_prints_the_gates_first(inputs, capsys):
    from pgd.cli import main
    root, rows = inputs
    out = root / 'results' / 'mini' / 'claims.md'
    assert main(['claims', '--rows', *rows, '--regime', str(_regime(root / 'r.json', False)),
                 '--out', str(out)]) == 0
    text = out.read_text()
    gates = text.index('## Premise gates')
    assert gates < text.index('**Summary:**') < text.index('## Details')
    assert '| student_teacher_ratio | atss | 0.34 | in [0.70, 0.92] | **FAIL** |' in text
    assert '| geometry_median | mini/atss_r18_student | missing |' in text
    assert 'regime invalid (of 15)' in text
    assert '**regime invalid**' in text
    assert '- Regime invalid: this table fails the premise gate(s) student_teacher_ratio ' \
           '(atss); measured: holds' in text
    printed = capsys.readouterr().out
    assert printed.index('gate student_teacher_ratio (atss): FAIL') < printed.index('regime inv')


def test_gate_mapping_and_bad_regime_file(tmp_path):
    ds = {'table1': {'shapes'}, 'table5': {'shapes'}, 'table3': {'crowd'}}
    assert gated_tables(['table1', 'table3', 'table5'], ds) == {'table1', 'table5'}
    assert gated_tables(['table3', 'table5'], {'table3': {'crowd'}}) == {'table3', 'table5'}
    bad = tmp_path / 'bad.json'
    bad.write_text(json.dumps({'gates': [{'gate': 'x'}]}))
    with pytest.raises(UserError, match='not a regime file'):
        load_regime(bad)
