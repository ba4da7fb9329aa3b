from .checkpoint import (add_checkpoint_arguments, apply_checkpoint_arguments, check_trained_keys,
                         load_trained_checkpoint, state_dict_of)
from .setup_env import setup_cpu_distributed

__all__ = [
    'add_checkpoint_arguments', 'apply_checkpoint_arguments', 'check_trained_keys', 'load_trained_checkpoint',
    'setup_cpu_distributed', 'state_dict_of'
]
