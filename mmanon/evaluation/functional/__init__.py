from .privacy import (classification_top1, identity_templates, l2_normalize, leave_one_out_top1, majority_rate,
                      mean_pair_similarity, reidentification_top1, roc_auc, tar_at_far, template_top1,
                      verification_scores)

__all__ = [
    'classification_top1', 'identity_templates', 'l2_normalize', 'leave_one_out_top1', 'majority_rate',
    'mean_pair_similarity', 'reidentification_top1', 'roc_auc', 'tar_at_far', 'template_top1', 'verification_scores'
]
