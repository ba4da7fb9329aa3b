from .adversarial_training_hook import AdversarialTrainingHook
from .random_state_hook import RandomStateHook

__all__ = ['AdversarialTrainingHook', 'RandomStateHook']
