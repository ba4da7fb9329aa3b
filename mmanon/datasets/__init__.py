from .ava_face_dataset import AVAFaceDataset
from .face_identity_dataset import FaceIdentityDataset, load_landmark_file
from .transforms import *  # noqa: F401,F403

__all__ = ['AVAFaceDataset', 'FaceIdentityDataset', 'load_landmark_file']
