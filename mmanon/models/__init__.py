from .anonymizers import *  # noqa: F401,F403
from .data_preprocessors import *  # noqa: F401,F403
from .heads import *  # noqa: F401,F403
from .inverters import *  # noqa: F401,F403
from .recognizers import *  # noqa: F401,F403
