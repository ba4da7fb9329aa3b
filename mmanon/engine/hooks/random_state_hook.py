import logging
import random
from typing import List, Optional

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.logging import print_log

from mmanon.registry import HOOKS


@HOOKS.register_module()
class RandomStateHook(Hook):
    """Save every rank's random number generators with each checkpoint, so that ``--resume`` continues the very
    random streams an uninterrupted run would have used (data transforms, dropout, RoI sampling, the face
    dataset's batches: anything drawing from torch's, numpy's, Python's or CUDA's global generators).

    On resume, the loops replay the data (MMEngine's iteration-based train loop skips the batches already
    trained, the adversarial hook its face batches) before the first resumed iteration; each rank's generators
    are restored after the replay, just before the first resumed batch is drawn (the transforms of a
    dataloader without workers draw from the global generators; an epoch-based loop draws its batches from
    the start of the epoch after the checkpoint, so there they are restored before the epoch). For the replay
    itself to be exact, the train
    dataloader gets a generator of its own (seeded from the run's seed): otherwise each new epoch's iterator
    draws its base seed from torch's global generator, at a point the replay cannot reproduce. Without this
    hook a resumed run follows a different but equally valid stream.

    MMEngine writes checkpoints on rank 0 only, so under distributed training the ranks' states are gathered
    to every rank after each training iteration (ranks differ under ``--diff-rank-seed``, and on GPUs in any
    case); the checkpoint holds one state per rank, and each rank restores its own. The states are stored as
    tensors and plain Python values, so checkpoints stay loadable with ``weights_only=True``.
    """

    # after_train_iter: after the iteration's other work, before CheckpointHook (VERY_LOW) saves.
    priority = 'LOW'

    def __init__(self) -> None:
        self._rank_states: Optional[List[dict]] = None
        self._pending: Optional[dict] = None
        self._epoch_state: Optional[dict] = None

    def before_train(self, runner) -> None:
        for loop in (runner.train_loop, runner.val_loop):
            if loop is not None and loop.dataloader.generator is None:
                loop.dataloader.generator = torch.Generator().manual_seed(runner.seed)
        state = self._resumed_state(runner)
        if state is None:
            return
        loop = runner.train_loop
        if hasattr(loop, 'dataloader_iterator'):  # IterBasedTrainLoop: it replays runner.iter batches next
            loop.dataloader_iterator = _RestoreAfterReplay(loop.dataloader_iterator, runner.iter, state)
        else:
            self._epoch_state = state

    def _resumed_state(self, runner) -> Optional[dict]:
        """This rank's state from the checkpoint, if training resumes from it."""
        pending, self._pending = self._pending, None
        if pending is None or pending['iter'] != runner.iter:
            return None
        states = pending['states']
        if len(states) != get_world_size():
            print_log(f'the checkpoint holds the random states of {len(states)} rank(s), this run has '
                      f'{get_world_size()}: the resumed run follows new random streams', logger='current',
                      level=logging.WARNING)
            return None
        return states[get_rank()]

    def before_train_epoch(self, runner) -> None:
        state, self._epoch_state = self._epoch_state, None
        if state is not None:
            _set_random_state(state)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        loop = runner.train_loop
        if isinstance(getattr(loop, 'dataloader_iterator', None), _RestoreAfterReplay):
            loop.dataloader_iterator = loop.dataloader_iterator.iterator

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        # A collective call, which before_save_checkpoint (run on rank 0 only) cannot make.
        if get_world_size() > 1:
            self._rank_states = all_gather_object(_random_state())

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint['random_state'] = self._rank_states if get_world_size() > 1 else [_random_state()]

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # Loading weights to fine-tune (``load_from``) also lands here; the states are only applied when
        # training continues from the checkpoint's own iteration, i.e. on resume.
        states = checkpoint.get('random_state')
        self._pending = None if states is None else dict(states=states, iter=checkpoint['meta'].get('iter'))


class _RestoreAfterReplay:
    """The train loop's batch iterator, which sets the random state once ``replayed`` batches were drawn."""

    def __init__(self, iterator, replayed: int, state: dict) -> None:
        self.iterator = iterator
        self.replayed = replayed
        self.state = state

    def __iter__(self):
        return self

    def __next__(self):
        if self.replayed == 0 and self.state is not None:
            _set_random_state(self.state)
            self.state = None
        self.replayed -= 1
        return next(self.iterator)


def _random_state() -> dict:
    """This process's generator states, as tensors and plain Python values."""
    _, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state = dict(
        torch=torch.get_rng_state(),
        numpy=dict(keys=torch.from_numpy(keys.astype(np.int64)), position=int(position), has_gauss=int(has_gauss),
                   cached_gaussian=float(cached_gaussian)),
        python=random.getstate())
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def _set_random_state(state: dict) -> None:
    torch.set_rng_state(state['torch'])
    numpy = state['numpy']
    np.random.set_state(('MT19937', numpy['keys'].numpy().astype(np.uint32), numpy['position'], numpy['has_gauss'],
                         numpy['cached_gaussian']))
    random.setstate(state['python'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])
