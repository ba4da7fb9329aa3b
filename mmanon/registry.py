"""mmanon's registry nodes.

Each node is a child of the matching MMAction2 node, under the scope ``mmanon``. Configs name our components
``mmanon.<Class>`` (as mmaction2's detection configs name ``mmaction.ResNet3dSlowOnly`` inside mmdet's
``FastRCNN``); inside an ``mmanon`` scope, every MMAction2, MMDetection-free and MMEngine component resolves
through the parents.
"""
from mmaction.registry import DATASETS as MMACTION_DATASETS
from mmaction.registry import HOOKS as MMACTION_HOOKS
from mmaction.registry import METRICS as MMACTION_METRICS
from mmaction.registry import MODELS as MMACTION_MODELS
from mmaction.registry import TRANSFORMS as MMACTION_TRANSFORMS
from mmengine.registry import DefaultScope, Registry

MODELS = Registry('model', parent=MMACTION_MODELS, scope='mmanon', locations=['mmanon.models'])
DATASETS = Registry('dataset', parent=MMACTION_DATASETS, scope='mmanon', locations=['mmanon.datasets'])
TRANSFORMS = Registry(
    'transform', parent=MMACTION_TRANSFORMS, scope='mmanon', locations=['mmanon.datasets.transforms'])
HOOKS = Registry('hook', parent=MMACTION_HOOKS, scope='mmanon', locations=['mmanon.engine.hooks'])
METRICS = Registry('metric', parent=MMACTION_METRICS, scope='mmanon', locations=['mmanon.evaluation.metrics'])


def build_in_scope(registry: Registry, cfg: dict, **default_args):
    """Build ``cfg`` from ``registry`` with ``mmanon`` as the default scope.

    Our components are often built from inside another scope (the data preprocessor from within mmdet's
    ``FastRCNN``), where a plain ``registry.build`` would look names up in that scope. Building nested parts
    this way lets configs write ``dict(type='GaussianBlur')`` instead of ``dict(type='mmanon.GaussianBlur')``.

    Args:
        registry (Registry): One of the registries of this module.
        cfg (dict): The config to build; a ``type`` with an explicit scope prefix still wins.
        **default_args: Passed to ``Registry.build``.

    Returns:
        The built object.
    """
    with DefaultScope.overwrite_default_scope('mmanon'):
        return registry.build(cfg, default_args=default_args or None)
