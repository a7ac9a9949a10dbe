"""``python -m pgd geometry CONFIG --ann FILE``: how many feature locations each GT box covers.

PGW selects the top-K locations of a box over all FPN levels; when most boxes cover fewer than
K locations, the top-K is "every location inside the box" and PGW degenerates into a box-shaped
Gaussian (PGD Table 5's BoxGauss). This command measures that premise on any dataset for any
detector config, so the mini scale can be compared with COCO or CrowdHuman:

* every image is resized as the config's test pipeline does (``Resize(scale, keep_ratio)``,
  MMCV's ``rescale_size``) and padded to the data preprocessor's ``pad_size_divisor``;
* the locations are the detector's own priors (``bbox_head.prior_generator.grid_priors``:
  anchor centres for ATSS/GFL/DDOD, points for FCOS/AutoAssign), level by level;
* a GT covers a location when the location's centre is strictly inside the (resized) box, the
  rule of :func:`pgd.distill.pgw.points_inside_boxes`; crowd (``iscrowd``) boxes are skipped.

It prints the distribution (quartiles, and the fraction of GTs covering at least K, 2K and 4K
locations) and, with ``--json``, writes it.
"""
from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument('config', help='detector config (name under config/detectors or path)')
    p.add_argument('--ann', required=True, help='COCO-format annotation file')
    p.add_argument('--k', type=int, default=30, help='PGW top-K to compare with (default 30)')
    p.add_argument('--json', dest='json_out', default=None, help='also write the summary here')
    from mmengine.config import DictAction
    p.add_argument('--cfg-options', nargs='+', action=DictAction, default=None,
                   help='config overrides, e.g. image_size=256 for 256-px SYNTHETIC data')


def _resize_rule(cfg) -> Tuple[Tuple[int, int], bool, int]:
    """(scale, keep_ratio, pad divisor) of the config's test pipeline and preprocessor."""
    from pgd.errors import UserError
    pipeline = cfg.test_dataloader.dataset.pipeline
    resize = next((t for t in pipeline if t['type'] == 'Resize'), None)
    if resize is None or 'scale' not in resize:
        raise UserError('the config\'s test pipeline has no Resize(scale=...) step')
    divisor = int(cfg.model.get('data_preprocessor', {}).get('pad_size_divisor', 1) or 1)
    return tuple(resize['scale']), bool(resize.get('keep_ratio', False)), divisor


def _input_shape(width: int, height: int, scale, keep_ratio: bool, divisor: int):
    """(scale factor x, y) and the padded (H, W) of one image after the test resize."""
    import mmcv
    if keep_ratio:
        new_w, new_h = mmcv.rescale_size((width, height), scale)
    else:
        new_w, new_h = scale
    pad = lambda v: int(math.ceil(v / divisor) * divisor)  # noqa: E731
    return (new_w / width, new_h / height), (pad(new_h), pad(new_w))


def _level_axes(prior_generator, padded_hw) -> List[Tuple[np.ndarray, np.ndarray]]:
    """Per level, the sorted distinct x and y centres of the detector's priors."""
    import torch
    sizes = [(int(math.ceil(padded_hw[0] / s[1])), int(math.ceil(padded_hw[1] / s[0])))
             for s in prior_generator.strides]
    axes = []
    for priors in prior_generator.grid_priors(sizes, device='cpu', dtype=torch.float64):
        p = priors.numpy()
        cx = (p[:, 0] + p[:, 2]) / 2 if p.shape[1] == 4 else p[:, 0]
        cy = (p[:, 1] + p[:, 3]) / 2 if p.shape[1] == 4 else p[:, 1]
        axes.append((np.unique(cx), np.unique(cy)))
    return axes


def covered_locations(boxes: np.ndarray, axes) -> np.ndarray:
    """(G,) number of locations strictly inside each xyxy box, summed over levels."""
    total = np.zeros(len(boxes), dtype=np.int64)
    for xs, ys in axes:
        nx = (np.searchsorted(xs, boxes[:, 2], 'left')
              - np.searchsorted(xs, boxes[:, 0], 'right')).clip(min=0)
        ny = (np.searchsorted(ys, boxes[:, 3], 'left')
              - np.searchsorted(ys, boxes[:, 1], 'right')).clip(min=0)
        total += nx * ny
    return total


def coverage(config: str, ann_file: str, cfg_options=None) -> np.ndarray:
    """Covered locations of every non-crowd GT of ``ann_file`` for the detector ``config``."""
    from mmdet.registry import MODELS

    from pgd.engine.config_utils import load_config
    from pgd.engine.registry import register_all
    from pgd.errors import UserError
    register_all()
    _, cfg = load_config(config, cfg_options)
    scale, keep_ratio, divisor = _resize_rule(cfg)
    head = MODELS.build(cfg.model.bbox_head)   # the priors need the head only
    try:
        data = json.loads(Path(ann_file).read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f'cannot read annotation file {ann_file}: {exc}') from exc
    images = {im['id']: im for im in data.get('images', [])}
    by_image: Dict[int, List[list]] = defaultdict(list)
    for ann in data.get('annotations', []):
        if not ann.get('iscrowd', 0) and ann['image_id'] in images:
            by_image[ann['image_id']].append(ann['bbox'])
    if not by_image:
        raise UserError(f'{ann_file} has no non-crowd annotations')
    axes_cache: Dict[tuple, list] = {}
    counts = []
    for image_id, bboxes in by_image.items():
        im = images[image_id]
        (sx, sy), padded = _input_shape(im['width'], im['height'], scale, keep_ratio, divisor)
        if padded not in axes_cache:
            axes_cache[padded] = _level_axes(head.prior_generator, padded)
        b = np.asarray(bboxes, dtype=np.float64)
        xyxy = np.stack([b[:, 0] * sx, b[:, 1] * sy, (b[:, 0] + b[:, 2]) * sx,
                         (b[:, 1] + b[:, 3]) * sy], axis=1)
        counts.append(covered_locations(xyxy, axes_cache[padded]))
    return np.concatenate(counts)


def summarise(counts: np.ndarray, k: int) -> dict:
    """Quartiles and the fractions of GTs covering >= K, 2K and 4K locations."""
    q25, q50, q75 = (float(v) for v in np.percentile(counts, [25, 50, 75]))
    return {'num_gts': int(counts.size), 'k': int(k), 'p25': q25, 'median': q50, 'p75': q75,
            'mean': float(counts.mean()), 'min': int(counts.min()), 'max': int(counts.max()),
            'frac_below_k': float((counts < k).mean()),
            'frac_at_least_2k': float((counts >= 2 * k).mean()),
            'frac_at_least_4k': float((counts >= 4 * k).mean())}


def format_summary(s: dict, config: str, ann: str) -> str:
    k = s['k']
    return '\n'.join([
        f'locations covered per GT (summed over FPN levels), {config} on {ann}:',
        f'  {s["num_gts"]} GTs; quartiles {s["p25"]:.0f} / {s["median"]:.0f} / '
        f'{s["p75"]:.0f}; mean {s["mean"]:.1f}; min {s["min"]}, max {s["max"]}',
        f'  below K = {k}: {100 * s["frac_below_k"]:.1f} % (top-K = every inside location); '
        f'>= 2K: {100 * s["frac_at_least_2k"]:.1f} %; >= 4K: '
        f'{100 * s["frac_at_least_4k"]:.1f} %'])


def run(args) -> int:
    from pgd.errors import UserError
    from pgd.io import atomic_write_json
    if args.k <= 0:
        raise UserError(f'--k must be a positive integer, got {args.k}')
    if not Path(args.ann).is_file():
        raise UserError(f'annotation file not found: {args.ann}')
    summary = summarise(coverage(args.config, args.ann, args.cfg_options), args.k)
    print(format_summary(summary, args.config, args.ann))
    if args.json_out:
        atomic_write_json(args.json_out, dict(summary, config=args.config,
                                              ann_file=Path(args.ann).name))
    return 0

