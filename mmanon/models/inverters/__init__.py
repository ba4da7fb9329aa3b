from .unet_inverter import UNetInverter

__all__ = ['UNetInverter']
