from typing import Optional, Sequence, Tuple

import cv2
import numpy as np
from mmcv.transforms import BaseTransform

from mmanon.registry import TRANSFORMS
from .load_face_image import FaceImageError

# SphereFace's five reference points, (x, y) in a 112 x 96 (height x width) crop: the eye on the image's left,
# the other eye, the nose tip, the left and the right mouth corner. The landmark files of CASIA-WebFace and
# LFW in the common "aligned" distribution list the points in this order.
SPHEREFACE_TEMPLATE = ((30.2946, 51.6963), (65.5318, 51.5014), (48.0252, 71.7366), (33.5493, 92.3655),
                       (62.7299, 92.2041))
SPHEREFACE_SIZE = (112, 96)
INTERPOLATIONS = dict(nearest=cv2.INTER_NEAREST, bilinear=cv2.INTER_LINEAR, bicubic=cv2.INTER_CUBIC)
# Landmarks spread over less than a pixel (root-mean-square distance from their centre) locate no face: the
# warp would blow a pixel or two up to the whole crop, or, when the points coincide, not exist.
MIN_LANDMARK_SPREAD = 1.0


def degenerate_landmarks(points: np.ndarray) -> Optional[str]:
    """Why (K, 2) landmarks cannot locate a face, or None when they can.

    Args:
        points (np.ndarray): (x, y) landmarks in pixels.

    Returns:
        str | None: The problem.
    """
    points = np.asarray(points, dtype=np.float64)
    spread = float(np.sqrt(((points - points.mean(axis=0))**2).sum(axis=1).mean()))
    if spread < MIN_LANDMARK_SPREAD:
        return (f'the landmarks are degenerate: they spread over {spread:.3g} pixels (root-mean-square distance '
                f'from their centre), less than {MIN_LANDMARK_SPREAD:g}')
    return None


def scaled_template(crop_size: Sequence[int],
                    template: Sequence[Sequence[float]] = SPHEREFACE_TEMPLATE,
                    template_size: Sequence[int] = SPHEREFACE_SIZE) -> np.ndarray:
    """The reference points of ``template`` for crops of another size.

    The template is scaled uniformly, as large as it fits, and centred, so faces keep their proportions
    whatever the crop's aspect ratio (a 112 x 112 crop gets SphereFace's points shifted right by 8 pixels,
    the usual square variant).

    Args:
        crop_size (Sequence[int]): (height, width) of the crops.
        template (Sequence[Sequence[float]]): (x, y) reference points in pixel coordinates (the centre of the
            top-left pixel is (0, 0)) of crops of ``template_size``. Defaults to ``SPHEREFACE_TEMPLATE``.
        template_size (Sequence[int]): (height, width) of the template's crops. Defaults to (112, 96).

    Returns:
        np.ndarray: (K, 2) float64 reference points in ``crop_size`` crops.
    """
    (height, width), (template_height, template_width) = crop_size, template_size
    scale = min(height / template_height, width / template_width)
    offset = np.array([width - template_width * scale, height - template_height * scale]) / 2
    # Scaled in edge coordinates (pixel centres at +0.5), where a crop's border maps onto the border.
    return (np.asarray(template, dtype=np.float64) + 0.5) * scale + offset - 0.5


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The rotation, uniform scale and translation that best map ``src`` onto ``dst`` in least squares
    (Umeyama, 1991), reflections excluded.

    Args:
        src (np.ndarray): (K, 2) points, K >= 2.
        dst (np.ndarray): (K, 2) target points.

    Returns:
        np.ndarray: (2, 3) float64 matrix ``M`` with ``dst ~ src @ M[:, :2].T + M[:, 2]``.
    """
    src, dst = np.asarray(src, dtype=np.float64), np.asarray(dst, dtype=np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_centred, dst_centred = src - src_mean, dst - dst_mean
    src_variance = (src_centred**2).sum() / len(src)
    if src_variance == 0:
        raise ValueError(f'the points {src.tolist()} all coincide; no similarity transform maps them')
    covariance = dst_centred.T @ src_centred / len(src)
    u, singular_values, vt = np.linalg.svd(covariance)
    # Flipping the sign of the weakest direction turns the best orthogonal map into the best rotation.
    signs = np.array([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rotation = u @ np.diag(signs) @ vt
    scale = (singular_values * signs).sum() / src_variance
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, None]])


@TRANSFORMS.register_module()
class FaceAlign(BaseTransform):
    """Warp a face image to an aligned crop of the discriminator's size.

    With landmarks (``results['landmarks']``, (K, 2) (x, y) points in the order of the template), the crop
    is the similarity transform that best maps them onto the template (:func:`similarity_transform`) applied
    with ``cv2.warpAffine``; the landmarks move with it. Without landmarks, the crop is the centred region of
    the image with the crop's aspect ratio (``center_crop_ratio`` of the largest such region) resized to the
    crop size, which suits datasets whose faces are already centred and upright.

    Landmarks that cannot belong to the image raise a :class:`FaceImageError` naming it, which
    :class:`mmanon.datasets.FaceIdentityDataset` skips under ``on_bad_data='skip'``: degenerate ones (see
    :func:`degenerate_landmarks`), and ones whose crop would take less than ``min_inside`` of its pixels from
    inside the image (far-off points, or points in other units, give crops of border colour that would still be
    labelled with an identity).

    Required keys: ``img``. Optional: ``landmarks``, ``img_path`` (named in errors).
    Modified keys: ``img``, ``img_shape``, ``landmarks``. Added keys: ``align_matrix`` (the (2, 3) warp).

    Args:
        crop_size (Sequence[int]): (height, width) of the crop. Defaults to (112, 96).
        template (Sequence[Sequence[float]]): Reference points in crops of ``template_size``, scaled to
            ``crop_size`` by :func:`scaled_template`. Defaults to ``SPHEREFACE_TEMPLATE``.
        template_size (Sequence[int]): (height, width) of the template's crops. Defaults to (112, 96).
        center_crop_ratio (float): Without landmarks, the side of the centred region as a fraction of the
            largest region of the crop's aspect ratio that fits the image, in (0, 1]. Defaults to 1.0.
        interpolation (str): 'nearest', 'bilinear' or 'bicubic'. Defaults to 'bilinear'.
        border_value (int): Value of the pixels the warp takes from outside the image. Defaults to 0.
        min_inside (float): Least fraction of the crop's pixels that landmarks must take from inside the image,
            in [0, 1]. Defaults to 0.5.
    """

    def __init__(self,
                 crop_size: Sequence[int] = SPHEREFACE_SIZE,
                 template: Sequence[Sequence[float]] = SPHEREFACE_TEMPLATE,
                 template_size: Sequence[int] = SPHEREFACE_SIZE,
                 center_crop_ratio: float = 1.0,
                 interpolation: str = 'bilinear',
                 border_value: int = 0,
                 min_inside: float = 0.5) -> None:
        crop_size = tuple(crop_size)
        if len(crop_size) != 2 or not all(isinstance(s, int) and s > 0 for s in crop_size):
            raise ValueError(f'crop_size must be (height, width), two positive ints, got {crop_size}')
        template = np.asarray(template, dtype=np.float64)
        if template.ndim != 2 or template.shape[1] != 2 or len(template) < 2:
            raise ValueError(f'template must be at least two (x, y) points, got shape {template.shape}')
        if not 0 < center_crop_ratio <= 1:
            raise ValueError(f'center_crop_ratio must be in (0, 1], got {center_crop_ratio}')
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f'interpolation must be one of {sorted(INTERPOLATIONS)}, got {interpolation!r}')
        if not 0 <= min_inside <= 1:
            raise ValueError(f'min_inside must be in [0, 1], got {min_inside}')
        self.crop_size: Tuple[int, int] = crop_size
        self.template = scaled_template(crop_size, template, template_size)
        self.center_crop_ratio = center_crop_ratio
        self.interpolation = interpolation
        self.border_value = border_value
        self.min_inside = min_inside

    def transform(self, results: dict) -> dict:
        img = results['img']
        landmarks = results.get('landmarks')
        if landmarks is None:
            matrix = self._center_crop_matrix(img.shape[:2])
        else:
            landmarks = np.asarray(landmarks, dtype=np.float64)
            matrix = self.landmark_matrix(img.shape[:2], landmarks, results.get('img_path', 'the image'))
            results['landmarks'] = (landmarks @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)
        height, width = self.crop_size
        results['img'] = cv2.warpAffine(img, matrix, (width, height), flags=INTERPOLATIONS[self.interpolation],
                                        borderMode=cv2.BORDER_CONSTANT, borderValue=(self.border_value, ) * 3)
        results['img_shape'] = (height, width)
        results['align_matrix'] = matrix
        return results

    def landmark_matrix(self, img_shape: Tuple[int, int], landmarks: np.ndarray, name: str) -> np.ndarray:
        """The warp that aligns an image's landmarks onto the template, once they are found to fit the image.

        Args:
            img_shape (tuple[int, int]): (height, width) of the image.
            landmarks (np.ndarray): (K, 2) (x, y) points in the order of the template.
            name (str): The image, named in errors.

        Returns:
            np.ndarray: (2, 3) float64 warp from the image to the crop.

        Raises:
            ValueError: If the landmarks are not K finite points.
            FaceImageError: If they are degenerate, or the crop takes too little of the image.
        """
        landmarks = np.asarray(landmarks, dtype=np.float64)
        if landmarks.shape != self.template.shape or not np.isfinite(landmarks).all():
            raise ValueError(f'the landmarks of {name} must be {len(self.template)} finite (x, y) points like the '
                             f'template, got {landmarks.tolist()}')
        problem = degenerate_landmarks(landmarks)
        if problem is not None:
            raise FaceImageError(f'{name}: {problem}')
        matrix = similarity_transform(landmarks, self.template)
        # Where the centres of the crop's pixels come from in the image.
        height, width = self.crop_size
        ys, xs = np.mgrid[:height, :width]
        crop_points = np.stack([xs.ravel(), ys.ravel()], axis=1) - matrix[:, 2]
        image_points = crop_points @ np.linalg.inv(matrix[:, :2]).T
        img_height, img_width = img_shape
        inside = ((image_points >= -0.5) & (image_points <= (img_width - 0.5, img_height - 0.5))).all(axis=1).mean()
        if inside < self.min_inside:
            raise FaceImageError(f'{name}: its landmarks {np.round(landmarks, 1).tolist()} put {1 - inside:.0%} of the '
                                 f'aligned crop outside the {img_width}x{img_height} image (at most '
                                 f'{1 - self.min_inside:.0%} allowed): they do not locate a face in it')
        return matrix

    def _center_crop_matrix(self, img_shape: Tuple[int, int]) -> np.ndarray:
        """The warp that resizes the centred region of the crop's aspect ratio to the crop size."""
        img_height, img_width = img_shape
        height, width = self.crop_size
        region_height = min(img_height, img_width * height / width) * self.center_crop_ratio
        scale = height / region_height
        x0 = (img_width - region_height * width / height) / 2
        y0 = (img_height - region_height) / 2
        # In edge coordinates the region's corner maps onto the crop's; pixel centres sit at +0.5.
        return np.array([[scale, 0, (0.5 - x0) * scale - 0.5], [0, scale, (0.5 - y0) * scale - 0.5]])

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(crop_size={self.crop_size}, center_crop_ratio={self.center_crop_ratio}, '
                f'interpolation={self.interpolation!r}, border_value={self.border_value}, '
                f'min_inside={self.min_inside})')
