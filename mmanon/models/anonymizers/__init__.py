from .base_anonymizer import BaseAnonymizer
from .base_blur import BaseBlur
from .box_blur import BoxBlur
from .gaussian_blur import GaussianBlur
from .gaussian_noise import GaussianNoise
from .identity_anonymizer import IdentityAnonymizer
from .pixelate import Pixelate
from .resnet_anonymizer import ResNetAnonymizer
from .solid_mask import SolidMask

__all__ = [
    'BaseAnonymizer', 'BaseBlur', 'BoxBlur', 'GaussianBlur', 'GaussianNoise', 'IdentityAnonymizer', 'Pixelate',
    'ResNetAnonymizer', 'SolidMask'
]
