"""mmanon: privacy-preserving spatio-temporal action detection for MMAction2.

Importing the package applies the upstream compatibility fixes (``mmanon.compat``) and registers every
mmanon component in the ``mmanon`` registry scope (``mmanon.registry``).
"""
from . import compat

compat.apply()

try:
    import mmcv.ops  # noqa: F401,E402  (RoIAlign and friends: the detectors need the compiled ops)
except ImportError as e:  # pragma: no cover - depends on the installation
    raise ImportError('mmcv is installed without its compiled ops (mmcv._ext), which the MMAction2 detectors '
                      'need; reinstall it with `bash tools/install.sh`') from e

from . import datasets, engine, evaluation, models  # noqa: E402,F401  (register components)
from .version import __version__  # noqa: E402

__all__ = ['__version__']
