import random
from typing import Optional

import torch
from mmengine.hooks import Hook

from mmanon.registry import HOOKS


@HOOKS.register_module()
class RandomStateHook(Hook):
    """Save the random number generators' state with each checkpoint so that ``--resume`` continues the very
    random stream an uninterrupted run would have used (dropout, RoI sampling, anything drawing from torch's
    or Python's global generators).

    On resume, the loop replays the data pipeline up to the stopping point, which reproduces numpy's stream
    (the transforms') by itself; torch's and Python's are restored just before the first resumed iteration,
    after that replay. For that to be exact, the train dataloader gets a generator of its own (seeded from the
    run's seed): otherwise each new epoch's iterator draws its base seed from torch's global generator, at
    a point the replay cannot reproduce. Without this hook a resumed run follows a different but equally
    valid stream.

    The state is stored as tensors and plain tuples of ints, so checkpoints stay loadable with
    ``weights_only=True``.
    """

    priority = 'VERY_LOW'

    def __init__(self) -> None:
        self._pending: Optional[dict] = None

    def before_train(self, runner) -> None:
        dataloader = runner.train_loop.dataloader
        if dataloader.generator is None:
            dataloader.generator = torch.Generator().manual_seed(runner.seed)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        state = dict(torch=torch.get_rng_state(), python=random.getstate())
        if torch.cuda.is_available():
            state['cuda'] = torch.cuda.get_rng_state_all()
        checkpoint['random_state'] = state

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # Loading weights to fine-tune (``load_from``) also lands here; the state is only applied when
        # training continues from the checkpoint's own iteration, i.e. on resume.
        state = checkpoint.get('random_state')
        self._pending = None if state is None else dict(state, iter=checkpoint['meta'].get('iter'))

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if self._pending is None:
            return
        state, self._pending = self._pending, None
        if state['iter'] != runner.iter:
            return
        torch.set_rng_state(state['torch'])
        random.setstate(state['python'])
        if 'cuda' in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state['cuda'])
