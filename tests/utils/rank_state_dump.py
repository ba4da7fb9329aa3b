"""A test-only hook, imported by training runs that tests start: every rank saves its model's state and the
number of identity-labelled faces its batches held, so that tests can compare the ranks."""
import os.path as osp

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


@HOOKS.register_module()
class DumpRankStateHook(Hook):

    def __init__(self):
        self.faces_seen = 0

    def _model(self, runner):
        return runner.model.module if is_model_wrapper(runner.model) else runner.model

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.faces_seen += len(self._model(runner).data_preprocessor.train_faces)

    def after_run(self, runner):
        state = {k: v.detach().cpu().clone() for k, v in self._model(runner).state_dict().items()}
        torch.save(dict(state_dict=state, faces_seen=self.faces_seen),
                   osp.join(runner.work_dir, f'rank{get_rank()}_state.pth'))
