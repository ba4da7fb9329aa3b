from torch import Tensor

from mmanon.registry import MODELS
from .base_anonymizer import BaseAnonymizer


@MODELS.register_module()
class IdentityAnonymizer(BaseAnonymizer):
    """Leave faces untouched: the raw, non-private upper bound that every anonymizer is compared with."""

    def anonymize(self, crops: Tensor) -> Tensor:
        return crops.clone()
