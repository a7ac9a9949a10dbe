"""``python -m pgd analyse-quality``: Fig. 2 -- where a trained teacher's high-quality
predictions are.

For the first ``--num-images`` val images that have at least one GT box, every location gets the
PGD quality (Eq. 1, :func:`pgd.distill.pgw.quality_scores`, ``xi = 0.8`` by default)::

    q[g, n] = 1[X_n inside b_g] * max_a p[n, a, c_g] ** (1 - xi) * IoU(b_g, box[n, a]) ** xi

The heat-map is ``max_g q[g, n]`` painted per FPN level onto the input image (each input pixel
takes the value of its nearest location centre on that level, using the head's own location
centres), then the maximum over levels, cropped to the un-padded image, resized to the
original image and set to 0 outside every GT box (q is 0 there by definition; without this the
coarse levels' cells would bleed past the box edges). It is drawn over the image with the GT
boxes, one ``<image_id>.png`` and ``<image_id>.pdf`` per image. Values lie in [0, 1] (q is a
product of a probability and an IoU raised to powers in [0, 1]).

``summary.json`` gives per image and on average:

* ``frac_inbox_for_50pct_mass`` / ``frac_inbox_for_80pct_mass``: the smallest fraction of the
  in-box (GT, location) pairs whose quality sums to 50% / 80% of the total quality mass --
  small values mean the quality concentrates on a few locations, the observation behind PGD;
* ``max_quality``, ``mean_inbox_quality``, ``level_mass_share`` (share of the quality mass per
  FPN level), the heat-map's ``heat_min``/``heat_max`` and the number of GTs / in-box pairs.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from pgd.analysis.mask_out import add_model_arguments


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument('--out-dir', required=True, help='folder for <image_id>.png/.pdf and '
                                                    'summary.json')
    p.add_argument('--num-images', type=int, default=4,
                   help='number of val images (with at least one GT) to draw (default 4)')


def mass_fraction(values, share: float) -> float:
    """Smallest fraction of ``values`` (non-negative) whose sum reaches ``share`` of the total;
    NaN when the total is 0 or there are no values."""
    import numpy as np
    v = np.sort(np.asarray(values, dtype=np.float64))[::-1]
    total = float(v.sum())
    if v.size == 0 or total <= 0:
        return float('nan')
    k = int(np.searchsorted(np.cumsum(v), share * total - 1e-12 * total)) + 1
    return min(k, v.size) / v.size


def heat_on_input(qmax, points, level_sizes, strides, input_hw):
    """(N,) per-location values -> (H_in, W_in) map: per level each pixel takes its nearest
    location centre's value; maximum over levels."""
    import torch
    h_in, w_in = input_hw
    ys = torch.arange(h_in, dtype=torch.float64) + 0.5
    xs = torch.arange(w_in, dtype=torch.float64) + 0.5
    heat = torch.zeros((h_in, w_in), dtype=torch.float64)
    start = 0
    for (h, w), s in zip(level_sizes, strides):
        lvl = qmax[start:start + h * w].reshape(h, w).double().cpu()
        # the level's first centre gives its offset: 0 for anchor heads, s/2 for point heads
        ox = float(points[start, 0]) / s
        oy = float(points[start, 1]) / s
        jj = torch.floor(xs / s - ox + 0.5).long().clamp(0, w - 1)
        ii = torch.floor(ys / s - oy + 0.5).long().clamp(0, h - 1)
        heat = torch.maximum(heat, lvl[ii][:, jj])
        start += h * w
    return heat.numpy()


def inbox_pixels(boxes, shape):
    """(H, W) float mask of the pixels whose centre lies inside at least one box (xyxy)."""
    import numpy as np
    h, w = shape
    ys = np.arange(h)[:, None] + 0.5
    xs = np.arange(w)[None, :] + 0.5
    mask = np.zeros((h, w), dtype=bool)
    for x1, y1, x2, y2 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        mask |= (xs > x1) & (xs < x2) & (ys > y1) & (ys < y2)
    return mask.astype(np.float64)


def _draw(image_rgb, heat, gts, class_names, title, out_png: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from pgd.io import atomic_write_bytes_via
    h, w = heat.shape
    fig, ax = plt.subplots(figsize=(6.4, 6.4 * h / max(w, 1) + 0.6))
    import numpy as np
    ax.imshow(image_rgb)
    # locations outside every GT box (q = 0) stay transparent
    cmap = plt.get_cmap('jet').with_extremes(bad=(0.0, 0.0, 0.0, 0.0))
    im = ax.imshow(np.ma.masked_where(heat <= 0, heat), cmap=cmap, alpha=0.55, vmin=0.0,
                   vmax=1.0)
    for (x1, y1, x2, y2), label in gts:
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor='white',
                               linewidth=1.5))
        name = class_names[label] if 0 <= label < len(class_names) else str(label)
        ax.text(x1, y1 - 2, name, color='white', fontsize=7, va='bottom',
                bbox=dict(facecolor='black', alpha=0.5, pad=1, linewidth=0))
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label='quality q')
    fig.tight_layout()
    for ext in ('png', 'pdf'):
        atomic_write_bytes_via(out_png.with_suffix(f'.{ext}'),
                               lambda f, ext=ext: fig.savefig(f, format=ext, dpi=120))
    plt.close(fig)


def run(args) -> int:
    from pgd.errors import UserError
    if args.num_images < 1:
        raise UserError('--num-images must be at least 1')
    from pgd.analysis.mask_out import input_frame_gts, load_detector, location_quality
    loaded = load_detector(args)
    import cv2
    import numpy as np
    import torch

    from pgd.engine.config_utils import dataset_info
    from pgd.io import atomic_write_json
    from pgd.provenance import file_sha256, provenance

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg, model = loaded.cfg, loaded.model
    head = model.bbox_head
    info = dataset_info(cfg)
    synthetic = bool(info.get('synthetic'))
    classes = list(loaded.dataloader.dataset.metainfo.get('classes', ()))
    label = Path(str(loaded.config_path)).stem
    images = []
    with torch.no_grad():
        for data in loaded.dataloader:
            data = model.data_preprocessor(data, False)
            inputs, samples = data['inputs'], data['data_samples']
            outs = head(model.extract_feat(inputs))
            gt_bboxes, gt_labels, gt_valid = input_frame_gts(samples, loaded.gt_needs_scaling,
                                                             inputs.device)
            dec, q, inside = location_quality(head, outs, gt_bboxes, gt_labels, gt_valid,
                                              xi=args.xi)
            for b, ds in enumerate(samples):
                n_gt = int(gt_valid[b].sum())
                if n_gt == 0:
                    continue
                qb = q[b, :n_gt].float().cpu()
                ib = inside[b, :n_gt].cpu()
                qmax = qb.max(dim=0).values
                heat = heat_on_input(qmax, dec.points.cpu(), dec.level_sizes, dec.strides,
                                     tuple(inputs.shape[-2:]))
                ih, iw = ds.metainfo['img_shape'][:2]
                oh, ow = ds.metainfo['ori_shape'][:2]
                heat = heat[:ih, :iw]
                if (ih, iw) != (oh, ow):
                    heat = cv2.resize(heat, (ow, oh), interpolation=cv2.INTER_LINEAR)
                heat = np.clip(heat, 0.0, 1.0)
                sw, sh = ds.metainfo.get('scale_factor', (1.0, 1.0))[:2]
                boxes = gt_bboxes[b, :n_gt].cpu().double()
                boxes = boxes / boxes.new_tensor([sw, sh, sw, sh])  # input frame -> original
                heat = heat * inbox_pixels(boxes.numpy(), heat.shape)
                img = cv2.imread(ds.metainfo['img_path'], cv2.IMREAD_COLOR)
                if img is None:
                    raise UserError(f"cannot read image {ds.metainfo['img_path']}")
                img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
                gts = [(tuple(float(v) for v in bx), int(lb))
                       for bx, lb in zip(boxes.tolist(), gt_labels[b, :n_gt].tolist())]
                pair_q = qb[ib].numpy()
                level_mass = []
                start = 0
                for h, w in dec.level_sizes:
                    seg = qb[:, start:start + h * w]
                    level_mass.append(float(seg.sum()))
                    start += h * w
                total = float(sum(level_mass))
                image_id = ds.metainfo.get('img_id')
                title = (f"{'SYNTHETIC data -- ' if synthetic else ''}Fig. 2 quality map "
                         r"$q = p^{1-\xi}\,\mathrm{IoU}^{\xi}$, "
                         rf"$\xi$ = {args.xi:g}" f"\n{label}, image {image_id}")
                _draw(img, heat, gts, classes, title, out_dir / f'{image_id}.png')
                images.append({
                    'image_id': image_id,
                    'file': Path(ds.metainfo['img_path']).name,
                    'png': f'{image_id}.png',
                    'num_gt': n_gt,
                    'num_inbox_pairs': int(ib.sum()),
                    'max_quality': float(qb.max()) if qb.numel() else 0.0,
                    'mean_inbox_quality': float(pair_q.mean()) if pair_q.size else float('nan'),
                    'frac_inbox_for_50pct_mass': mass_fraction(pair_q, 0.5),
                    'frac_inbox_for_80pct_mass': mass_fraction(pair_q, 0.8),
                    'level_mass_share': [m / total if total > 0 else float('nan')
                                         for m in level_mass],
                    'heat_min': float(heat.min()),
                    'heat_max': float(heat.max()),
                    'heat_has_nan': bool(np.isnan(heat).any()),
                })
                if len(images) >= args.num_images:
                    break
            if len(images) >= args.num_images:
                break
    if not images:
        raise UserError('no val image with a GT box: nothing to draw')

    def _mean(key):
        vals = [im[key] for im in images if not math.isnan(im[key])]
        return sum(vals) / len(vals) if vals else None

    def _clean(obj):
        if isinstance(obj, float) and math.isnan(obj):
            return None
        if isinstance(obj, dict):
            return {k: _clean(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [_clean(v) for v in obj]
        return obj

    ckpt = Path(args.checkpoint)
    summary = {
        'label': label,
        'detector': type(head).__name__,
        'synthetic': synthetic,
        'xi': args.xi,
        'num_images': len(images),
        'mean_frac_inbox_for_50pct_mass': _mean('frac_inbox_for_50pct_mass'),
        'mean_frac_inbox_for_80pct_mass': _mean('frac_inbox_for_80pct_mass'),
        'mean_max_quality': _mean('max_quality'),
        'images': images,
        'provenance': provenance(
            config_path=loaded.config_path, config_text=cfg.pretty_text, seed=None,
            dataset=info, device=loaded.device, checkpoint=str(ckpt),
            checkpoint_sha256=file_sha256(ckpt)),
    }
    atomic_write_json(out_dir / 'summary.json', _clean(summary))
    print(f"[pgd analyse-quality] {len(images)} image(s), mean fraction of in-box locations "
          f"holding 50% of the quality mass: {summary['mean_frac_inbox_for_50pct_mass']} -> "
          f"{out_dir}", flush=True)
    return 0
