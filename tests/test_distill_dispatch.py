"""``python -m pgd distill`` picks its engine and checks detector support from the catalog."""
from __future__ import annotations

import argparse

import pytest

from pgd import catalog


def args_for(method, student='mini/atss_r18_student', options=None):
    return argparse.Namespace(student=student, teacher=None, teacher_ckpt=None, method=method,
                              loss_options=options, cfg_options=None, no_init_from_teacher=False)


@pytest.mark.parametrize('name', catalog.method_names())
def test_the_engine_is_the_catalogs(name, monkeypatch):
    import pgd.engine.distill as distill
    called = []
    monkeypatch.setattr(distill, 'ENGINES', {
        engine: (lambda cfg, method_cfg, args, engine=engine: called.append(engine) or cfg)
        for engine in distill.ENGINES})
    method = catalog.method(name)
    student = 'mini/gfl_r18_student' if not method.supports('atss') else 'mini/atss_r18_student'
    distill.compose(args_for(name, student, {'loss_scale': 2}))
    assert called == [method.engine]


def test_engines_cover_the_catalog():
    from pgd.engine.distill import ENGINES
    assert {m.engine for m in catalog.METHODS} <= set(ENGINES)


def test_detector_names_come_from_the_catalog():
    from pgd.engine.distill import DETECTOR_NAMES, detector_name
    from pgd.errors import UserError
    assert DETECTOR_NAMES == {d.mmdet_type: d.name for d in catalog.DETECTORS}
    assert detector_name({'type': 'AutoAssign'}) == 'autoassign'
    with pytest.raises(UserError, match="unknown detector type 'RetinaNet'"):
        detector_name({'type': 'RetinaNet'})


def test_ld_is_refused_on_other_detectors_from_method_supports(monkeypatch):
    from pgd.engine.distill import compose
    from pgd.errors import UserError
    with pytest.raises(UserError) as err:
        compose(args_for('ld'))
    assert str(err.value) == 'LD is defined for gfl only, not atss'
    # the restriction is the catalog's, nothing else: lifted there, LD gets past the check
    monkeypatch.setattr(catalog, 'METHODS', tuple(
        catalog.Method('ld', 'LD', engine='ld') if m.name == 'ld' else m
        for m in catalog.METHODS))
    with pytest.raises(UserError, match='LD needs --teacher'):
        compose(args_for('ld'))
