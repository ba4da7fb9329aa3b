from .privacy import (l2_normalize, majority_rate, mean_pair_similarity, reidentification_top1, roc_auc,
                      tar_at_far, verification_scores)

__all__ = [
    'l2_normalize', 'majority_rate', 'mean_pair_similarity', 'reidentification_top1', 'roc_auc', 'tar_at_far',
    'verification_scores'
]
