"""mmanon's registry nodes.

Each node is a direct child of MMEngine's root node, under the scope ``mmanon``, as MMAction2's and
MMDetection's are: MMEngine resolves a scope prefix only among the root's children. Configs therefore name our
components ``mmanon.<Class>`` wherever another scope is active (as mmaction2's detection configs name
``mmaction.ResNet3dSlowOnly`` inside mmdet's ``FastRCNN``); components that mmanon builds itself are built in
the ``mmanon`` scope (:func:`build_in_scope`), where plain names resolve.
"""
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import DefaultScope, Registry

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='mmanon', locations=['mmanon.models'])
DATASETS = Registry('dataset', parent=MMENGINE_DATASETS, scope='mmanon', locations=['mmanon.datasets'])
TRANSFORMS = Registry(
    'transform', parent=MMENGINE_TRANSFORMS, scope='mmanon', locations=['mmanon.datasets.transforms'])
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope='mmanon', locations=['mmanon.engine.hooks'])
METRICS = Registry('metric', parent=MMENGINE_METRICS, scope='mmanon', locations=['mmanon.evaluation.metrics'])


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
