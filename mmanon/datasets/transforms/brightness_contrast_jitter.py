import numpy as np
from mmcv.transforms import BaseTransform
from mmcv.transforms.utils import cache_randomness

from mmanon.registry import TRANSFORMS


@TRANSFORMS.register_module()
class BrightnessContrastJitter(BaseTransform):
    """Randomly change the brightness and contrast of ``results['img']``, as faces under other lighting.

    The image is multiplied by a brightness factor, then blended with its own mean grey level by a contrast
    factor (``out = c * (b * img) + (1 - c) * mean(b * img)``), each factor drawn uniformly from
    ``[1 - strength, 1 + strength]``, and rounded back to uint8. Colours keep their hue, which carries
    identity as much as shape does.

    Required keys: ``img`` (uint8). Modified keys: ``img``.

    Args:
        brightness (float): Strength of the brightness change, in [0, 1). Defaults to 0.2.
        contrast (float): Strength of the contrast change, in [0, 1). Defaults to 0.2.
        prob (float): Probability of changing an image at all. Defaults to 0.5.
    """

    def __init__(self, brightness: float = 0.2, contrast: float = 0.2, prob: float = 0.5) -> None:
        if not (0 <= brightness < 1 and 0 <= contrast < 1):
            raise ValueError(f'brightness and contrast must be in [0, 1), got {brightness} and {contrast}')
        if not 0 <= prob <= 1:
            raise ValueError(f'prob must be in [0, 1], got {prob}')
        self.brightness = brightness
        self.contrast = contrast
        self.prob = prob

    @cache_randomness
    def _random_factors(self):
        """(brightness, contrast) factors, or None to leave the image as it is."""
        if np.random.rand() >= self.prob:
            return None
        return (np.random.uniform(1 - self.brightness, 1 + self.brightness),
                np.random.uniform(1 - self.contrast, 1 + self.contrast))

    def transform(self, results: dict) -> dict:
        factors = self._random_factors()
        if factors is None:
            return results
        brightness, contrast = factors
        img = results['img'].astype(np.float32) * brightness
        img = contrast * img + (1 - contrast) * img.mean()
        results['img'] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(brightness={self.brightness}, contrast={self.contrast}, '
                f'prob={self.prob})')
