from .face_identity_classifier import FaceIdentityClassifier

__all__ = ['FaceIdentityClassifier']
