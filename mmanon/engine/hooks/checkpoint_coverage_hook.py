from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmanon.registry import HOOKS
from mmanon.utils.checkpoint import check_trained_keys, state_dict_of


@HOOKS.register_module()
class CheckpointCoverageHook(Hook):
    """Refuse a loaded checkpoint that lacks weights of trained parts of the model, before they are loaded.

    mmengine's runner loads ``load_from`` non-strictly: a checkpoint of another model only logs its missing
    keys, and a test then reports figures of random weights. This hook checks the checkpoint with
    :func:`mmanon.utils.checkpoint.check_trained_keys` when the runner has read it: uncovered trained parts
    raise (or only warn with ``allow_missing_keys``), and an optional part the checkpoint lacks as a whole
    (the co-trained face discriminator) is left out of the model. ``tools/test.py`` adds it; a test config
    for another tool can add it to ``custom_hooks``.

    Args:
        allow_missing_keys (bool): Only warn about uncovered parts. Defaults to False.
    """

    # Before any other hook sees the checkpoint, and before the runner loads it into the model.
    priority = 'VERY_HIGH'

    def __init__(self, allow_missing_keys: bool = False) -> None:
        if not isinstance(allow_missing_keys, bool):
            raise TypeError(f'allow_missing_keys must be a bool, got {allow_missing_keys!r}')
        self.allow_missing_keys = allow_missing_keys

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        filename = runner.cfg.get('load_from') or 'the checkpoint'
        check_trained_keys(model, state_dict_of(checkpoint), filename, self.allow_missing_keys)
