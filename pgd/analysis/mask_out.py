"""``python -m pgd mask-out``: the Fig. 3 pilot -- how much of a trained detector's AP comes from
its few highest-quality predictions.

For every val image the detector's dense outputs are decoded (:func:`pgd.distill.head_decoding.
decode_head_outputs`) and every location gets the PGD quality w.r.t. each GT box it falls in
(:func:`pgd.distill.pgw.quality_scores`, Eq. 1)::

    q[g, n] = 1[X_n inside b_g] * max_a p[n, a, c_g] ** (1 - xi) * IoU(b_g, box[n, a]) ** xi

with ``xi = 0.8``. For a ratio ``X`` the predictions at the top-X% locations are removed, then the
head's normal post-processing (score threshold, NMS, ``max_per_img``) runs and the detections
are COCO-evaluated with the config's own ``test_evaluator`` (MMDetection's CocoMetric, i.e.
pycocotools) -- the same path as ``python -m pgd test``, so ratio 0 reproduces its AP exactly.

Reading of the paper's "top-X% of all anchor positions bounded by the GT box" (the paper gives
no further detail; these are our decisions):

* **Per GT box.** The candidates of GT ``g`` are the locations (all FPN levels together) whose
  centre lies strictly inside ``b_g`` -- the same inside test and location centres as PGW.
  ``k_g = ceil(X * #inside(g))`` of them with the highest ``q[g, .]`` are masked, so any X > 0
  masks at least one location per GT and X = 1 masks every in-box location. Ties go to the
  lower flattened location index (deterministic). Locations masked for several GTs are simply
  masked (union).
* **A location is masked as a whole**: all its A predictions (anchors) and all class scores
  are set to a very negative logit (-1e4, sigmoid = 0 exactly in float32) before
  ``head.predict_by_feat``, so they fall below any score threshold and never reach NMS. This
  works unchanged for every supported head (ATSS, FCOS, GFL, DDOD, AutoAssign); quality
  branches (centerness / IoU / objectness) are left alone because a zero class score already
  removes the prediction.
* Locations outside every GT box are never masked; their predictions still compete in NMS.
* GT boxes are taken in the network's input frame (resized image): when the test pipeline loads
  annotations after ``Resize`` (MMDetection's usual test pipeline) they are scaled by the
  image's ``scale_factor``. Crowd/ignored boxes (``ignored_instances``) are not candidates.

Output JSON: ``{"ratios": [...], "AP": [...], "AP50": [...], "AP75": [...],
"masked_locations": [...], "inbox_locations": N, "label", "detector", "synthetic",
"provenance": {...}}`` (AP in percent, like ``pgd test``).
"""
from __future__ import annotations

import argparse
import copy
import math
import os
from pathlib import Path
from typing import List, NamedTuple, Sequence

from pgd.engine.config_utils import RESIZE_STEPS
from pgd.errors import UserError

XI = 0.8
MASK_LOGIT = -1e4
DEFAULT_RATIOS = '0,0.01,0.05,0.1'


# ----------------------------------------------------------------------------- CLI helpers

def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments shared with ``analyse-quality``: which trained detector, on which data."""
    from mmengine.config import DictAction
    p.add_argument('--config', required=True, help='config file or name under config/detectors')
    p.add_argument('--checkpoint', required=True, help="trained weights (a run's final.pth)")
    p.add_argument('--data-root', default=None, help='dataset root (retargets the test loader)')
    p.add_argument('--device', choices=('auto', 'cpu', 'cuda'), default='auto')
    p.add_argument('--xi', type=float, default=XI,
                   help='quality exponent xi in p^(1-xi) * IoU^xi (default 0.8)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, default=None,
                   help='config overrides, e.g. model.test_cfg.score_thr=0.0')


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument('--ratios', default=DEFAULT_RATIOS,
                   help='comma-separated fractions of in-box locations to mask '
                        f'(default {DEFAULT_RATIOS})')
    p.add_argument('--out', required=True, help='result JSON to write')


def parse_ratios(text: str) -> List[float]:
    try:
        ratios = [float(x) for x in str(text).split(',') if x.strip() != '']
    except ValueError:
        raise UserError(f'--ratios: {text!r} is not a comma-separated list of numbers') from None
    if not ratios:
        raise UserError('--ratios: give at least one ratio, e.g. 0,0.01,0.05')
    bad = [r for r in ratios if not (0.0 <= r <= 1.0) or math.isnan(r)]
    if bad:
        raise UserError(f'--ratios: {bad[0]} is outside [0, 1] (ratios are fractions, 0.01 = 1%)')
    return ratios


# ----------------------------------------------------------------------------- model + data

class Loaded(NamedTuple):
    config_path: Path
    cfg: object
    model: object
    dataloader: object
    device: str
    gt_needs_scaling: bool


def gt_needs_scaling(cfg) -> bool:
    """True when the test pipeline loads the GT boxes after resizing the image, i.e. the data
    samples' GT boxes are in original-image pixels rather than in the network's input frame."""
    pipeline = cfg.test_dataloader.dataset.get('pipeline') or []
    names = [str(t.get('type', '')) for t in pipeline]
    ann = [i for i, n in enumerate(names) if n.startswith('LoadAnnotations')]
    if not ann:
        raise UserError('the test pipeline does not load annotations (LoadAnnotations); the '
                        'analysis needs the GT boxes of the val images')
    resize = [i for i, n in enumerate(names) if n in RESIZE_STEPS]
    return bool(resize) and ann[0] > resize[0]


def load_detector(args) -> Loaded:
    """Config (retargeted at ``--data-root``), the detector with the checkpoint's weights (eval
    mode, on the selected device) and the test dataloader."""
    if args.device == 'cpu':
        os.environ['CUDA_VISIBLE_DEVICES'] = ''
    from pgd.engine.config_utils import (annotation_path, check_annotation_file, load_config,
                                         retarget_data_root, select_device)
    from pgd.engine.registry import register_all
    from pgd.engine.safe_load import allow_mmengine_checkpoints
    from pgd.engine.test import check_checkpoint

    ckpt = Path(args.checkpoint)
    check_checkpoint(ckpt)
    path, cfg = load_config(args.config, getattr(args, 'cfg_options', None))
    if args.data_root:
        retarget_data_root(cfg, args.data_root)
    check_annotation_file(annotation_path(cfg, 'test_dataloader'))
    device = select_device(args.device)
    needs_scaling = gt_needs_scaling(cfg)
    allow_mmengine_checkpoints()
    register_all()

    from mmdet.registry import MODELS
    from mmengine.runner import Runner, load_checkpoint

    from pgd.distill.head_decoding import head_type
    model = MODELS.build(cfg.model)
    if not hasattr(model, 'bbox_head'):
        raise UserError(f'{args.config}: the analysis needs a single-stage detector with a '
                        f'bbox_head (got {type(model).__name__})')
    try:
        head_type(model.bbox_head)
    except NotImplementedError as exc:
        raise UserError(str(exc)) from None
    load_checkpoint(model, str(ckpt), map_location='cpu', strict=False)
    model.to(device)
    model.eval()
    dataloader = Runner.build_dataloader(copy.deepcopy(cfg.test_dataloader))
    return Loaded(path, cfg, model, dataloader, device, needs_scaling)


def input_frame_gts(data_samples, needs_scaling: bool, device):
    """Padded GT boxes/labels/valid mask in the network's input frame: (B, G, 4), (B, G), (B, G)."""
    from pgd.distill.inputs import pad_gts
    boxes, labels = [], []
    for ds in data_samples:
        b = ds.gt_instances.bboxes
        b = (b.tensor if hasattr(b, 'tensor') else b).float().to(device)
        if needs_scaling and len(b):
            sw, sh = ds.metainfo.get('scale_factor', (1.0, 1.0))[:2]
            b = b * b.new_tensor([sw, sh, sw, sh])
        boxes.append(b.reshape(-1, 4))
        labels.append(ds.gt_instances.labels.long().to(device))
    gt_bboxes, gt_labels, gt_valid = pad_gts(boxes, labels)
    return gt_bboxes.to(device), gt_labels.to(device), gt_valid.to(device)


def location_quality(head, outs, gt_bboxes, gt_labels, gt_valid, xi: float = XI):
    """Decoded predictions, quality ``q`` (B, G, N) and the inside mask (B, G, N)."""
    import torch

    from pgd.distill.head_decoding import decode_head_outputs
    from pgd.distill.pgw import points_inside_boxes, quality_scores
    with torch.no_grad():
        dec = decode_head_outputs(head, outs)
        q = quality_scores(dec.cls_prob, dec.boxes, dec.points, gt_bboxes, gt_labels, gt_valid,
                           xi=xi, inside_only=True)
        inside = points_inside_boxes(dec.points, gt_bboxes, gt_valid)
    return dec, q, inside


def num_to_mask(num_inside, ratio: float):
    """``ceil(ratio * #inside)`` per GT (rounded to 9 decimals first, so 0.1 * 10 is 1)."""
    import torch
    k = torch.ceil(torch.round(num_inside.double() * float(ratio) * 1e9) / 1e9)
    return torch.minimum(k.long(), num_inside.long())


def top_quality_mask(q, inside, ratio: float):
    """(B, N) bool: the union over GTs of each GT's top-``ceil(ratio * #inside)`` locations by
    quality, candidates restricted to the GT's inside locations; ties -> lower index."""
    import torch
    b, g, n = q.shape
    if ratio <= 0 or g == 0 or n == 0:
        return torch.zeros((b, n), dtype=torch.bool, device=q.device)
    k = num_to_mask(inside.sum(-1), ratio)                                  # (B, G)
    key = torch.where(inside, q.to(torch.float64), torch.full_like(q, -1.0, dtype=torch.float64))
    order = torch.sort(key, dim=-1, descending=True, stable=True).indices  # (B, G, N)
    take = torch.arange(n, device=q.device).expand(b, g, n) < k[..., None]
    chosen = torch.zeros_like(take).scatter(-1, order, take)
    return (chosen & inside).any(dim=1)


def mask_cls_scores(cls_scores: Sequence, loc_mask) -> list:
    """Copies of the per-level class logits (B, A*C, H, W) with every channel of the masked
    locations set to :data:`MASK_LOGIT`."""
    out, start = [], 0
    for cls in cls_scores:
        bsz, _, h, w = cls.shape
        m = loc_mask[:, start:start + h * w].reshape(bsz, 1, h, w)
        out.append(cls.masked_fill(m, MASK_LOGIT))
        start += h * w
    if start != loc_mask.shape[1]:
        raise ValueError(f'mask covers {loc_mask.shape[1]} locations, heads have {start}')
    return out


def coco_or_zero(raw: dict) -> dict:
    """CocoMetric output -> percent metrics; no detection at all -> every AP is 0 (as pgd test)."""
    from pgd.engine.test import COCO_KEYS, coco_metrics
    if not any(k.startswith('coco/') for k in raw):
        return {k: 0.0 for k in COCO_KEYS}
    return coco_metrics(raw)


# ----------------------------------------------------------------------------- command

def run(args) -> int:
    ratios = parse_ratios(args.ratios)
    loaded = load_detector(args)
    import torch
    from mmengine.evaluator import Evaluator

    from pgd.engine.config_utils import dataset_info
    from pgd.io import atomic_write_json
    from pgd.provenance import file_sha256, provenance

    cfg, model = loaded.cfg, loaded.model
    head = model.bbox_head
    evaluators = []
    for _ in ratios:
        ev = Evaluator(copy.deepcopy(cfg.test_evaluator))
        ev.dataset_meta = loaded.dataloader.dataset.metainfo
        evaluators.append(ev)
    masked = [0] * len(ratios)
    inbox = 0
    with torch.no_grad():
        for data in loaded.dataloader:
            data = model.data_preprocessor(data, False)
            inputs, samples = data['inputs'], data['data_samples']
            outs = head(model.extract_feat(inputs))
            gts = input_frame_gts(samples, loaded.gt_needs_scaling, inputs.device)
            _, q, inside = location_quality(head, outs, *gts, xi=args.xi)
            inbox += int(inside.any(dim=1).sum())
            metas = [s.metainfo for s in samples]
            for i, (ratio, ev) in enumerate(zip(ratios, evaluators)):
                loc_mask = top_quality_mask(q, inside, ratio)
                masked[i] += int(loc_mask.sum())
                cls = mask_cls_scores(outs[0], loc_mask) if ratio > 0 else list(outs[0])
                results = head.predict_by_feat(cls, *outs[1:], batch_img_metas=metas,
                                               rescale=True)
                for s, r in zip(samples, results):
                    s.pred_instances = r
                ev.process(data_samples=samples, data_batch=None)
    n_images = len(loaded.dataloader.dataset)
    per_ratio = [coco_or_zero(ev.evaluate(n_images)) for ev in evaluators]
    info = dataset_info(cfg)
    ckpt = Path(args.checkpoint)
    result = {
        'ratios': ratios,
        'AP': [m['AP'] for m in per_ratio],
        'AP50': [m['AP50'] for m in per_ratio],
        'AP75': [m['AP75'] for m in per_ratio],
        'masked_locations': masked,
        'inbox_locations': inbox,
        'label': Path(str(loaded.config_path)).stem,
        'detector': type(head).__name__,
        'synthetic': bool(info.get('synthetic')),
        'xi': args.xi,
        'masking': 'per GT: top ceil(X * #in-box locations) by q = p^(1-xi) IoU^xi, all '
                   'anchors/classes of a masked location set to -1e4 before predict_by_feat',
        'provenance': provenance(
            config_path=loaded.config_path, config_text=cfg.pretty_text, seed=None,
            dataset=info, device=loaded.device, checkpoint=str(ckpt),
            checkpoint_sha256=file_sha256(ckpt), num_images=n_images),
    }
    atomic_write_json(args.out, result)
    summary = ', '.join(f'{100 * r:g}%: AP {a}' for r, a in zip(ratios, result['AP']))
    print(f'[pgd mask-out] {summary} -> {args.out}', flush=True)
    return 0
