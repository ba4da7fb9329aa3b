from .brightness_contrast_jitter import BrightnessContrastJitter
from .face_align import SPHEREFACE_SIZE, SPHEREFACE_TEMPLATE, FaceAlign, scaled_template, similarity_transform
from .load_face_image import FaceImageError, LoadFaceImage, read_face_image
from .pack_face_inputs import PackFaceInputs

__all__ = [
    'BrightnessContrastJitter', 'FaceAlign', 'FaceImageError', 'LoadFaceImage', 'PackFaceInputs',
    'SPHEREFACE_SIZE', 'SPHEREFACE_TEMPLATE', 'read_face_image', 'scaled_template', 'similarity_transform'
]
