"""Workarounds for bugs in the packaged upstream stack, applied once when ``mmanon`` is imported.

Every patch of another package lives here and nowhere else. Each one is guarded so that it does nothing once
upstream is fixed, and names the upstream report.
"""
import importlib.util
import os
import os.path as osp
import pickle
import sys
import types

import numpy as np
import torch

TRUST_ENV = 'MMANON_TRUST_CHECKPOINTS'


def _provide_missing_drn() -> None:
    """mmaction2 1.2.0's wheel and sdist lack ``mmaction/models/localizers/drn/``, yet
    ``mmaction.models.localizers`` imports it, so ``import mmaction.models`` fails
    (open-mmlab/mmaction2#2714). Register empty stand-in modules whose ``DRN`` explains the gap when built.
    """
    spec = importlib.util.find_spec('mmaction')
    drn_dir = osp.join(osp.dirname(spec.origin), 'models', 'localizers', 'drn')
    if osp.isdir(drn_dir) or 'mmaction.models.localizers.drn' in sys.modules:
        return

    class DRN:
        """Stand-in for mmaction2's DRN localizer, which its 1.2.0 package does not ship."""

        def __init__(self, *args, **kwargs):
            raise ImportError('DRN is missing from the installed mmaction2 1.2.0 package '
                              '(open-mmlab/mmaction2#2714); install mmaction2 from source to use it.')

    package = types.ModuleType('mmaction.models.localizers.drn')
    package.__path__ = []
    module = types.ModuleType('mmaction.models.localizers.drn.drn')
    module.DRN = DRN
    package.drn = module
    sys.modules[package.__name__] = package
    sys.modules[module.__name__] = module


def _fix_ava_nan() -> None:
    """mmaction2's AVA evaluation returns ``np.NAN`` for a class with detections but no ground truth; numpy 2
    removed that alias (numpy NEP 52), so small datasets crash in ``ava_eval``. No upstream report exists yet.
    """
    if hasattr(np, 'NAN'):
        return
    from mmaction.evaluation.functional.ava_evaluation import metrics

    original = metrics.compute_average_precision
    if getattr(original, '_mmanon_compat', False):
        return

    def compute_average_precision(precision, recall):
        if precision is None and recall is None:
            return np.nan
        return original(precision, recall)

    compute_average_precision._mmanon_compat = True
    compute_average_precision.__doc__ = original.__doc__
    metrics.compute_average_precision = compute_average_precision


def _history_buffer_reduce(self):
    return type(self), (self._log_history.tolist(), self._count_history.tolist(), self.max_length)


def without_numpy(obj):
    """``obj`` with every numpy scalar and array inside dicts, lists and tuples made plain Python."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, dict):
        return type(obj)((k, without_numpy(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)) and not hasattr(obj, '_fields'):
        return type(obj)(without_numpy(v) for v in obj)
    return obj


def _make_checkpoints_weights_only_safe() -> None:
    """torch >= 2.6 loads checkpoints with ``weights_only=True`` and mmengine 0.10.7 cannot resume under it
    (open-mmlab/mmengine#1655; the proposed fix, open-mmlab/mmengine#1650, turns the safety off instead).

    We keep the safety on and save checkpoints without numpy objects, whose numpy-2 pickles go through
    ``getattr`` and can never be allow-listed safely: the runner's checkpoint is stripped of numpy scalars and
    arrays (the timer's ``eta``, metric values) before it is written, and the message hub's ``HistoryBuffer``,
    the one non-torch class mmengine puts in a checkpoint, pickles as plain lists and is allow-listed. Files
    that hold anything else, such as checkpoints written without this patch, fail with a message naming the
    file; loading them needs an explicit opt-in (``--trust-checkpoint`` in the tools, or
    ``MMANON_TRUST_CHECKPOINTS=1``).
    """
    from mmengine.logging import HistoryBuffer
    from mmengine.runner import runner as runner_module
    from mmengine.runner.checkpoint import CheckpointLoader

    HistoryBuffer.__reduce__ = _history_buffer_reduce
    if hasattr(torch.serialization, 'add_safe_globals'):
        torch.serialization.add_safe_globals([HistoryBuffer])
    CheckpointLoader.register_scheme(prefixes='', loader=load_local_checkpoint, force=True)

    save = runner_module.save_checkpoint
    if not getattr(save, '_mmanon_compat', False):

        def save_checkpoint(checkpoint, filename, *args, **kwargs):
            return save(without_numpy(checkpoint), filename, *args, **kwargs)

        save_checkpoint._mmanon_compat = True
        runner_module.save_checkpoint = save_checkpoint


def checkpoints_trusted() -> bool:
    """Whether the user opted in to full (code-executing) unpickling of checkpoints."""
    return os.environ.get(TRUST_ENV, '0').lower() in ('1', 'true', 'yes')


def load_local_checkpoint(filename, map_location=None):
    """Load a local checkpoint with ``weights_only=True`` unless checkpoints are explicitly trusted.

    Args:
        filename (str): Path of the checkpoint file.
        map_location (str | torch.device, optional): As in :func:`torch.load`. Defaults to None.

    Returns:
        dict: The checkpoint.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    if checkpoints_trusted():
        return torch.load(filename, map_location=map_location, weights_only=False)
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        reason = next((line.strip() for line in str(e).splitlines() if 'WeightsUnpickler error' in line),
                      str(e).strip())
        raise pickle.UnpicklingError(
            f'{filename} holds objects outside the weights-only allow-list, so loading it could run code. '
            f'If you trust where it came from, load it with --trust-checkpoint (tools/train.py, '
            f'tools/test.py) or {TRUST_ENV}=1. {reason}') from e


def apply() -> None:
    """Apply every workaround; idempotent."""
    _provide_missing_drn()
    _fix_ava_nan()
    _make_checkpoints_weights_only_safe()
