"""``python -m pgd sanity-check``: does the distiller add anything but its losses?

Compares the final weights of two runs with the same seed: the plain student, and the distiller
with every distillation loss weight 0 and no teacher-init (``config/distill/zero.py``: PGD's
losses computed every step, weighted by 0). They must be equal bit for bit: same tensors, same
values. A difference means the distiller perturbs the student by something other than its loss
(an extra random draw, another data order, BN statistics, a gradient path). The result is the
premise gate ``zero_weight_sanity`` of ``pgd regime``.

Output JSON: ``{"pass", "tensors", "tensors_differing", "max_abs_diff", "first_differing",
"student", "zero", "provenance"}``; the exit code is 0 either way (the verdict is the result),
2 for unreadable or mismatched checkpoints.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument('--student', required=True, help="the plain student run's final.pth")
    p.add_argument('--zero', required=True,
                   help="final.pth of the zero-weight distillation (--method zero), same seed")
    p.add_argument('--out', required=True, help='JSON result')


def load_state(path) -> dict:
    import torch

    from pgd.errors import UserError
    path = Path(path)
    if not path.is_file():
        raise UserError(f'checkpoint not found: {path}')
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- any unreadable file is the user's to fix
        raise UserError(f'cannot read checkpoint {path}: {exc}') from exc
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not state:
        raise UserError(f'{path}: no state_dict in this checkpoint')
    return state


def compare_states(a: dict, b: dict) -> dict:
    """Bit-for-bit comparison of two state dicts with the same keys and shapes."""
    import torch

    from pgd.errors import UserError
    if a.keys() != b.keys():
        only = sorted(set(a) ^ set(b))
        raise UserError(f'the two checkpoints hold different tensors (e.g. {only[0]}): not the '
                        f'same student architecture')
    differing, max_diff = [], 0.0
    for key in a:
        x, y = a[key], b[key]
        if x.shape != y.shape:
            raise UserError(f'{key}: shapes {tuple(x.shape)} and {tuple(y.shape)} differ')
        if not torch.equal(x, y):
            differing.append(key)
            if x.is_floating_point():
                max_diff = max(max_diff, float((x.double() - y.double()).abs().max()))
            else:
                max_diff = max(max_diff, float((x.long() - y.long()).abs().max()))
    return {'pass': not differing, 'tensors': len(a), 'tensors_differing': len(differing),
            'max_abs_diff': max_diff, 'first_differing': differing[:5]}


def run(args) -> int:
    from pgd.io import atomic_write_json
    from pgd.provenance import file_sha256, portable_path, provenance
    result = compare_states(load_state(args.student), load_state(args.zero))
    result.update(student=portable_path(args.student), zero=portable_path(args.zero),
                  provenance=provenance(student_sha256=file_sha256(args.student),
                                        zero_sha256=file_sha256(args.zero)))
    atomic_write_json(args.out, result)
    verdict = 'PASS (bit-identical)' if result['pass'] else (
        f"FAIL: {result['tensors_differing']} of {result['tensors']} tensors differ "
        f"(max |diff| {result['max_abs_diff']:.3g})")
    print(f'[pgd sanity-check] zero-weight distiller vs plain student: {verdict} -> {args.out}',
          flush=True)
    return 0
