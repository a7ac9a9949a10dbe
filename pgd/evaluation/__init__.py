"""Evaluation metrics that MMDetection does not ship (CrowdHuman MR^-2 / AP / JI)."""
from pgd.evaluation.crowd_metrics import (
    average_precision,
    box_ioa,
    box_iou,
    evaluate_crowd,
    image_jaccard,
    jaccard_index,
    log_average_miss_rate,
    match_image,
)

__all__ = [
    "average_precision",
    "box_ioa",
    "box_iou",
    "evaluate_crowd",
    "image_jaccard",
    "jaccard_index",
    "log_average_miss_rate",
    "match_image",
]
