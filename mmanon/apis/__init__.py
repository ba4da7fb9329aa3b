from .anonymize_video import anonymize_video, build_method_anonymizer, load_learned_anonymizer
from .face_detection import (CenterFaceDetector, DlibFaceDetector, HaarFaceDetector, OnnxFaceDetector,
                             build_face_detector)
from .face_tracking import FaceTrack, IoUTracker
from .faces import clip_faces, collect_faces, crop_faces, face_loader, load_detector

__all__ = [
    'anonymize_video', 'build_method_anonymizer', 'load_learned_anonymizer', 'build_face_detector',
    'CenterFaceDetector', 'HaarFaceDetector', 'DlibFaceDetector', 'OnnxFaceDetector', 'FaceTrack', 'IoUTracker',
    'clip_faces', 'collect_faces', 'crop_faces', 'face_loader', 'load_detector'
]
