"""What the tools do with a trained checkpoint: the flags that govern loading it, and the check that it holds
weights for every trained part of the model it is loaded into.

A checkpoint that does not fit its model is loaded by mmengine with a log line about missing keys only, and the
parts it lacks keep their random initial weights: a test then prints an mAP of a random head. Here such a
checkpoint is refused, naming what it lacks, unless the user allows it (``--allow-missing-keys``).
"""
import argparse
import logging
import os
import re
from collections import Counter, OrderedDict
from typing import Dict, List, Optional

import torch
from mmengine.logging import print_log
from mmengine.runner.checkpoint import CheckpointLoader, load_state_dict

from mmanon.compat import TRUST_ENV, CheckpointError

# Parts of a model that a checkpoint may lack as a whole: they take no part in the model's predictions. The
# co-trained face discriminator only embeds faces for the privacy metric, and a detector trained without one
# (a stock or handcrafted-method checkpoint) is still tested under a config that has one; it is then left out
# rather than left with random weights, so no privacy figure comes from an untrained attacker.
OPTIONAL_PARTS = ('data_preprocessor.discriminator', )
# Buffers that are counters, not trained state: BatchNorm's num_batches_tracked matters only without momentum.
UNTRAINED_BUFFERS = re.compile(r'(^|\.)num_batches_tracked$')
MODULE_PREFIX = re.compile(r'^module\.')


def add_checkpoint_arguments(parser: argparse.ArgumentParser, missing_keys: bool = True) -> None:
    """Add ``--trust-checkpoint`` and, if asked, ``--allow-missing-keys`` to a tool's parser.

    Args:
        parser (argparse.ArgumentParser): The tool's parser.
        missing_keys (bool): Whether the tool loads a trained model whose coverage it checks. Defaults to True.
    """
    parser.add_argument('--trust-checkpoint', action='store_true',
                        help='load checkpoints with full unpickling and read the config stored in them as Python '
                        '(both can run code); only for files from a trusted source that the default safe loading '
                        f'refuses. Same as {TRUST_ENV}=1')
    if missing_keys:
        parser.add_argument('--allow-missing-keys', action='store_true',
                            help='use a checkpoint that lacks weights of trained parts of the model (they keep '
                            'their initial, random weights); by default such a checkpoint is refused, naming what '
                            'it lacks')


def apply_checkpoint_arguments(args: argparse.Namespace) -> None:
    """Make ``--trust-checkpoint`` hold for every loader of this process and of the processes it starts."""
    if getattr(args, 'trust_checkpoint', False):
        os.environ[TRUST_ENV] = '1'


def _uncovered(model: torch.nn.Module, state_dict: Dict[str, torch.Tensor]) -> List[str]:
    """Keys of the model's trained state that ``state_dict`` lacks or holds with another shape, in model order."""
    uncovered = []
    for key, value in model.state_dict().items():
        if UNTRAINED_BUFFERS.search(key):
            continue
        saved = state_dict.get(key)
        if not isinstance(saved, torch.Tensor) or saved.shape != value.shape:
            uncovered.append(key)
    return uncovered


def _prefixes(key: str) -> List[str]:
    atoms = key.split('.')
    return ['.'.join(atoms[:depth]) for depth in range(1, len(atoms) + 1)]


def _whole_parts(keys: List[str], expected: List[str]) -> List[str]:
    """``keys`` summarised as the largest parts (module prefixes) of which every expected key is in ``keys``."""
    expected_under, keys_under = Counter(), Counter()
    for key in expected:
        expected_under.update(_prefixes(key))
    for key in keys:
        keys_under.update(_prefixes(key))
    parts = []
    for key in keys:
        part = next(prefix for prefix in _prefixes(key) if keys_under[prefix] == expected_under[prefix])
        if part not in parts:
            parts.append(part)
    return parts


def _describe(parts: List[str], keys: List[str], prefix: str) -> str:
    named = [f'{prefix}{part}.*' if part not in keys else f'{prefix}{part}' for part in parts[:3]]
    more = f' (and {len(parts) - 3} more)' if len(parts) > 3 else ''
    return ', '.join(named) + more


def check_trained_keys(model: torch.nn.Module,
                       state_dict: Dict[str, torch.Tensor],
                       filename: str,
                       allow_missing_keys: bool = False,
                       prefix: str = '') -> List[str]:
    """Refuse a state dict that lacks weights of trained parts of ``model``; leave out the optional parts that
    it lacks as a whole.

    Every parameter and buffer of the model's state dict must be in ``state_dict`` with the same shape, except
    BatchNorm's ``num_batches_tracked`` counters and the :data:`OPTIONAL_PARTS`; an optional part that the
    state dict lacks entirely is set to None on the model (with a warning), before the weights are loaded. Keys
    that a module renames when it loads an older layout of itself (its ``upgrade_state_dict_keys``) count under
    their new names.

    Args:
        model (nn.Module): The model the weights are for.
        state_dict (dict[str, Tensor]): The weights, keys relative to ``model`` (``module.`` prefixes stripped).
        filename (str): The checkpoint, named in messages.
        allow_missing_keys (bool): Only warn about uncovered parts, which keep their initial weights.
            Defaults to False.
        prefix (str): Prefix of the model's keys in the checkpoint, for messages. Defaults to ''.

    Returns:
        list[str]: The optional parts left out.

    Raises:
        CheckpointError: If trained parts are uncovered and ``allow_missing_keys`` is False.
    """
    # The keys that modules rename when they load an older layout of themselves, renamed as loading will.
    state_dict = dict(state_dict)
    for name, module in model.named_modules():
        if hasattr(module, 'upgrade_state_dict_keys'):
            module.upgrade_state_dict_keys(state_dict, f'{name}.' if name else '')
    expected = [k for k in model.state_dict() if not UNTRAINED_BUFFERS.search(k)]
    uncovered = _uncovered(model, state_dict)
    dropped = []
    for part in OPTIONAL_PARTS:
        keys = [k for k in expected if k.startswith(part + '.')]
        owner_name, _, name = part.rpartition('.')
        owner = model.get_submodule(owner_name) if keys else None
        if keys and all(k in uncovered for k in keys) and not any(k.startswith(part + '.') for k in state_dict):
            setattr(owner, name, None)
            dropped.append(part)
            uncovered = [k for k in uncovered if not k.startswith(part + '.')]
            print_log(f'{filename} has no weights for {prefix}{part}.*: it is left out of the model (it takes no '
                      'part in the predictions; the figures that need it are not computed)', logger='current',
                      level=logging.WARNING)
    if not uncovered:
        return dropped
    mismatched = [k for k in uncovered if k in state_dict]
    missing = [k for k in uncovered if k not in state_dict]
    problems = []
    if missing:
        problems.append(f'has no weights for {_describe(_whole_parts(missing, expected), missing, prefix)}')
    if mismatched:
        shapes = model.state_dict()
        key = mismatched[0]
        more = f' (and {len(mismatched) - 1} more)' if len(mismatched) > 1 else ''
        problems.append(f'holds {prefix}{key} with shape {tuple(state_dict[key].shape)}, the model has '
                        f'{tuple(shapes[key].shape)}{more}')
    message = f'{filename} {" and ".join(problems)}: it does not fit the model'
    if not allow_missing_keys:
        raise CheckpointError(f'{message}. Pass --allow-missing-keys to use it anyway (the parts it lacks keep '
                              'their initial, random weights).')
    print_log(f'{message}; the parts it lacks keep their initial weights (--allow-missing-keys)', logger='current',
              level=logging.WARNING)
    return dropped


def state_dict_of(checkpoint: dict) -> Dict[str, torch.Tensor]:
    """The weights of a loaded checkpoint (its ``state_dict``, or the checkpoint itself), ``module.`` stripped."""
    state_dict = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state_dict, dict):
        raise CheckpointError(f'a checkpoint must be a dict of weights or hold one in "state_dict", got a '
                              f'{type(state_dict).__name__}')
    return OrderedDict((MODULE_PREFIX.sub('', key), value) for key, value in state_dict.items())


def load_trained_checkpoint(model: torch.nn.Module,
                            filename: str,
                            allow_missing_keys: bool = False,
                            map_location: Optional[str] = 'cpu') -> dict:
    """Load a checkpoint into a model after :func:`check_trained_keys`.

    Args:
        model (nn.Module): The model.
        filename (str): The checkpoint (a path or any scheme of mmengine's ``CheckpointLoader``).
        allow_missing_keys (bool): See :func:`check_trained_keys`. Defaults to False.
        map_location (str, optional): As in :func:`torch.load`. Defaults to 'cpu'.

    Returns:
        dict: The checkpoint.
    """
    checkpoint = CheckpointLoader.load_checkpoint(filename, map_location=map_location)
    try:
        state_dict = state_dict_of(checkpoint)
    except CheckpointError as e:
        raise CheckpointError(f'{filename}: {e}') from None
    check_trained_keys(model, state_dict, filename, allow_missing_keys)
    load_state_dict(model, state_dict, strict=False, logger='current')
    return checkpoint
