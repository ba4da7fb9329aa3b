"""Environment set-up shared by the train and test tools."""
import torch
import torch.distributed as torch_dist
from mmengine.config import Config
from mmengine.registry import MODEL_WRAPPERS
from torch.nn.parallel import DistributedDataParallel


def setup_cpu_distributed(cfg: Config, launcher: str) -> None:
    """Let a multi-process run work on a machine without CUDA.

    mmengine 0.10.7's ``init_dist`` calls ``torch.cuda.set_device`` and its default DDP wrapper passes
    ``device_ids=[LOCAL_RANK]``; both fail on CPU. When CUDA is unavailable this initialises the gloo process
    group from torchrun's environment (so the Runner finds it ready and skips ``init_dist``) and makes the DDP
    wrapper use ``device_ids=None``. With CUDA, nothing changes.

    Args:
        cfg (Config): The run's config; ``model_wrapper_cfg`` may be filled in.
        launcher (str): The ``--launcher`` value.
    """
    if launcher == 'none' or torch.cuda.is_available():
        return
    backend = cfg.get('env_cfg', {}).get('dist_cfg', {}).get('backend', 'nccl')
    if backend != 'gloo':
        raise RuntimeError(f'--launcher {launcher} without CUDA needs the gloo backend, but the config selects '
                           f'"{backend}"; add --cfg-options env_cfg.dist_cfg.backend=gloo')
    if launcher != 'pytorch':
        raise RuntimeError(f'on CPU only --launcher pytorch (torchrun, tools/dist_train.sh) is supported, '
                           f'got --launcher {launcher}')
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend='gloo')

    wrapper_cfg = cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel',
        broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper_cfg.setdefault('type', 'MMDistributedDataParallel')
    wrapper_type = MODEL_WRAPPERS.get(wrapper_cfg['type'])
    if isinstance(wrapper_type, type) and issubclass(wrapper_type, DistributedDataParallel):
        wrapper_cfg['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper_cfg
