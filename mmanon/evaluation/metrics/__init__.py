from .face_privacy_metric import FacePrivacyMetric

__all__ = ['FacePrivacyMetric']
