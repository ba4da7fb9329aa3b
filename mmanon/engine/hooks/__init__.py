from .adversarial_training_hook import AdversarialTrainingHook
from .checkpoint_coverage_hook import CheckpointCoverageHook
from .random_state_hook import RandomStateHook

__all__ = ['AdversarialTrainingHook', 'CheckpointCoverageHook', 'RandomStateHook']
