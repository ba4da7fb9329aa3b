from .face_discriminator_head import FaceDiscriminatorHead

__all__ = ['FaceDiscriminatorHead']
