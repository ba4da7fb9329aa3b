from .ava_face_dataset import AVAFaceDataset
from .transforms import *  # noqa: F401,F403

__all__ = ['AVAFaceDataset']
