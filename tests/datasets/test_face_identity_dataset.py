"""FaceIdentityDataset and its transforms on generated faces: labels of both layouts, alignment onto the
template, the augmentations, and every kind of bad input (raised naming the file and row, or skipped and
counted)."""
import os
import os.path as osp
import shutil

import numpy as np
import pytest
import torch

from mmanon.datasets import FaceImageError, FaceIdentityDataset
from mmanon.datasets.toy_faces import ToyFacesSpec, generate_toy_faces, lfw_image_path
from mmanon.datasets.transforms import BrightnessContrastJitter, FaceAlign, scaled_template
from mmanon.registry import DATASETS, TRANSFORMS, build_in_scope

SPEC = ToyFacesSpec(num_identities=4, images_per_identity=3, val_images_per_identity=1, image_size=(96, 96),
                    num_folds=2, pairs_per_fold=2)
PIPELINE = [dict(type='LoadFaceImage'), dict(type='FaceAlign'), dict(type='PackFaceInputs')]


@pytest.fixture(scope='module')
def faces(tmp_path_factory):
    out_dir = str(tmp_path_factory.mktemp('faces'))
    return generate_toy_faces(out_dir, SPEC)


@pytest.fixture
def copied(faces, tmp_path):
    """A copy of the generated faces that a test may break."""
    out_dir = str(tmp_path / 'faces')
    shutil.copytree(osp.dirname(faces['images']), out_dir)
    return {key: osp.join(out_dir, osp.relpath(path, osp.dirname(faces['images']))) for key, path in faces.items()}


def build(paths, pipeline=PIPELINE, **kwargs):
    cfg = dict(type='FaceIdentityDataset', data_prefix=dict(img_path=paths['images']), pipeline=pipeline)
    return build_in_scope(DATASETS, dict(cfg, **kwargs))


def write(path, lines):
    with open(path, 'w') as f:
        f.write(''.join(line + '\n' for line in lines))


def test_folder_layout_labels_identities_in_sorted_order(faces):
    dataset = build(faces)
    names = [f'face_{i:02d}' for i in range(SPEC.num_identities)]
    assert dataset.metainfo['classes'] == tuple(names)
    assert dataset.metainfo['num_identities'] == SPEC.num_identities
    assert len(dataset) == SPEC.num_identities * SPEC.images_per_identity
    for index in range(len(dataset)):
        item = dataset[index]
        sample = item['data_samples']
        identity = sample.metainfo['identity']
        assert sample.gt_label.dtype == torch.long and sample.gt_label.tolist() == [names.index(identity)]
        assert osp.basename(osp.dirname(sample.metainfo['img_path'])) == identity
        assert item['inputs'].dtype == torch.uint8 and item['inputs'].shape == (3, 112, 96)


def test_list_layout_with_names_and_with_integer_identities(faces, tmp_path):
    dataset = build(faces, ann_file=faces['val_list'])
    assert [dataset.get_data_info(i)['gt_label'] for i in range(len(dataset))] == list(range(SPEC.num_identities))

    # Integer identities sort numerically (10 after 7), so a list of labels 0..N-1 keeps them.
    images = [lfw_image_path(f'face_{i:02d}', 1) for i in range(4)]
    write(tmp_path / 'list.txt', [f'{path} {identity}' for path, identity in zip(images, (10, 7, 2, 7))])
    dataset = build(faces, ann_file=str(tmp_path / 'list.txt'))
    assert dataset.metainfo['classes'] == ('2', '7', '10')
    assert [dataset.get_data_info(i)['gt_label'] for i in range(4)] == [2, 1, 0, 1]


def test_given_classes_fix_the_labels(faces, tmp_path, logged_warnings):
    first, second = lfw_image_path('face_03', 1), lfw_image_path('face_01', 2)
    write(tmp_path / 'list.txt', [f'{first} face_03', f'{second} face_01'])
    dataset = build(faces, ann_file=str(tmp_path / 'list.txt'), metainfo=dict(classes=faces['identities']))
    assert dataset.metainfo['num_identities'] == SPEC.num_identities
    assert [dataset.get_data_info(i)['gt_label'] for i in range(2)] == [3, 1]

    write(tmp_path / 'list.txt', [f'{first} face_03', f'{second} stranger'])
    with pytest.raises(ValueError, match=r"list.txt, row 2: identity 'stranger' is not in"):
        build(faces, ann_file=str(tmp_path / 'list.txt'), metainfo=dict(classes=faces['identities']))
    dataset = build(faces, ann_file=str(tmp_path / 'list.txt'), metainfo=dict(classes=faces['identities']),
                    on_bad_data='skip')
    assert len(dataset) == 1
    assert any(m.startswith('skipped 1 images of identities outside') for m in logged_warnings), logged_warnings
    with pytest.raises(FileNotFoundError, match='no_such_file.txt'):
        build(faces, metainfo=dict(classes=str(tmp_path / 'no_such_file.txt')))


def marker_centroids(crop, crop_size):
    """Where the white eyes and the red mouth of a generated face lie in an aligned RGB crop, next to where
    the template puts them."""
    template = scaled_template(crop_size)
    radius = 0.4 * np.linalg.norm(template[1] - template[0])
    ys, xs = np.mgrid[:crop_size[0], :crop_size[1]]
    pixels = crop.permute(1, 2, 0).numpy().astype(int)
    white = pixels.min(axis=2) > 200
    red = pixels[..., 0] - pixels[..., 1:].max(axis=2) > 80  # red only in the first (R) channel: RGB order
    found, expected = [], [template[0], template[1], template[3:].mean(axis=0)]
    for point, mask in zip(expected, (white, white, red)):
        near = mask & (np.hypot(xs - point[0], ys - point[1]) < radius)
        assert near.sum() > 0, f'no marker near {point}'
        found.append((xs[near].mean(), ys[near].mean()))
    return np.array(found), np.array(expected)


@pytest.mark.parametrize('crop_size', [(112, 96), (64, 64)])
def test_alignment_puts_the_landmarks_on_the_template(faces, crop_size):
    pipeline = [dict(type='LoadFaceImage'), dict(type='FaceAlign', crop_size=crop_size), dict(type='PackFaceInputs')]
    dataset = build(faces, pipeline=pipeline, landmark_file=faces['landmarks'])
    for index in range(len(dataset)):
        found, expected = marker_centroids(dataset[index]['inputs'], crop_size)
        errors = np.linalg.norm(found - expected, axis=1)
        # The faces are rotated by up to 20 degrees and scaled in their images; the mouth line's rounded ends
        # and the JPEG blur it a little more than the round eyes.
        assert errors[:2].max() < 1.0 and errors[2] < 2.0, (index, found, expected)
    # The landmarks follow the warp onto the template.
    results = dataset.pipeline.transforms[1](dataset.pipeline.transforms[0](dataset.get_data_info(0)))
    np.testing.assert_allclose(results['landmarks'], scaled_template(crop_size), atol=1.5)


def test_alignment_without_landmarks_crops_the_centre():
    # A 100 x 200 image: red left quarter, blue right quarter, a white square in the middle of the green centre.
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, :50], img[:, 50:150], img[:, 150:] = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    img[25:75, 75:125] = 255
    crop = FaceAlign(crop_size=(40, 40))(dict(img=img))['img']
    assert crop.shape == (40, 40, 3)
    assert (crop[:, :8] == (0, 255, 0)).all() and (crop[:, -8:] == (0, 255, 0)).all()
    assert (crop[12:28, 12:28] == 255).all()
    centre = FaceAlign(crop_size=(40, 40), center_crop_ratio=0.5)(dict(img=img))['img']
    assert (centre == 255).all()
    with pytest.raises(ValueError, match='landmarks of a.jpg must be 5 finite'):
        FaceAlign()(dict(img=img, img_path='a.jpg', landmarks=np.zeros((4, 2))))


def test_augmentations():
    img = np.random.default_rng(0).integers(50, 200, size=(8, 6, 3), dtype=np.uint8)
    flip = build_in_scope(TRANSFORMS, dict(type='RandomFlip', prob=1.0, direction='horizontal'))
    np.testing.assert_array_equal(flip(dict(img=img.copy()))['img'], img[:, ::-1])

    np.testing.assert_array_equal(BrightnessContrastJitter(prob=0)(dict(img=img.copy()))['img'], img)
    np.random.seed(0)
    jittered = [BrightnessContrastJitter(0.3, 0.3, prob=1)(dict(img=img.copy()))['img'] for _ in range(20)]
    assert all(j.dtype == np.uint8 and j.shape == img.shape for j in jittered)
    assert len({j.tobytes() for j in jittered}) == 20
    # Brightness scales and contrast blends with the mean: the mean moves by at most the brightness factor.
    assert all(abs(j.mean() / img.mean() - 1) <= 0.3 + 0.01 for j in jittered)
    with pytest.raises(ValueError, match='brightness and contrast must be in'):
        BrightnessContrastJitter(brightness=1.5)


def test_empty_identity_folder(copied, logged_warnings):
    empty = osp.join(copied['images'], 'face_99')
    os.makedirs(empty)
    write(osp.join(empty, 'notes.txt'), ['not an image'])
    with pytest.raises(ValueError, match=f'the identity folder {empty} holds no images'):
        build(copied)
    dataset = build(copied, on_bad_data='skip')
    assert 'face_99' not in dataset.metainfo['classes'] and len(dataset) == 12
    assert any(m.startswith('skipped 1 identity folders without images') for m in logged_warnings)


def test_unreadable_image(copied, logged_warnings):
    broken = osp.join(copied['images'], lfw_image_path('face_02', 2))
    write(broken, ['not a jpeg'])
    # Found lazily, in the pipeline, naming the file.
    dataset = build(copied)
    index = next(i for i in range(len(dataset)) if dataset.get_data_info(i)['img_path'] == broken)
    with pytest.raises(FaceImageError, match=f'cannot decode the face image {broken}'):
        dataset[index]
    # In training under 'skip', another sample takes its place.
    dataset = build(copied, on_bad_data='skip')
    assert dataset[index]['data_samples'].metainfo['img_path'] != broken
    assert dataset.skipped_in_pipeline >= 1  # the replacement is drawn at random, maybe the same one again
    assert any(m.startswith('skipped an unreadable image') and broken in m for m in logged_warnings)
    with pytest.raises(FaceImageError, match="check_images='decode'"):
        build(copied, on_bad_data='skip', test_mode=True)[index]
    # Or up front.
    with pytest.raises(FaceImageError, match=f'cannot decode the face image {broken}'):
        build(copied, check_images='decode')
    dataset = build(copied, check_images='decode', on_bad_data='skip')
    assert len(dataset) == 11
    assert any(m.startswith('skipped 1 missing or unreadable images') for m in logged_warnings)


def test_missing_listed_image(copied):
    write(copied['val_list'], [f'{lfw_image_path("face_00", 3)} face_00', 'face_00/face_00_0042.jpg face_00'])
    with pytest.raises(FaceImageError, match=r'val_list.txt, row 2: the face image .*face_00_0042.jpg does not'):
        build(copied, ann_file=copied['val_list'])
    assert len(build(copied, ann_file=copied['val_list'], check_images='none')) == 2


def test_list_row_with_wrong_number_of_fields(copied, logged_warnings):
    rows = [f'{lfw_image_path("face_00", 3)} face_00', f'{lfw_image_path("face_01", 3)} face 01', '']
    write(copied['val_list'], rows)
    with pytest.raises(ValueError, match=r'val_list.txt, row 2: expected 2 fields \(path identity\), got 3'):
        build(copied, ann_file=copied['val_list'])
    assert len(build(copied, ann_file=copied['val_list'], on_bad_data='skip')) == 1
    assert any(m.startswith('skipped 1 bad rows of') for m in logged_warnings)


@pytest.mark.parametrize('breakage, message', [
    ('drop', r'landmarks.txt has no landmarks for face_01/face_01_0002.jpg \('),
    ('short', r'landmarks.txt, row 5: expected a path and 10 values \(x1 y1 ... x5 y5\), got 9 values'),
    ('text', r'landmarks.txt, row 5: the landmarks of face_01/face_01_0002.jpg must be numbers'),
])
def test_landmarks_that_do_not_match_the_images(copied, logged_warnings, breakage, message):
    with open(copied['landmarks']) as f:
        rows = f.read().splitlines()
    assert rows[4].startswith('face_01/face_01_0002.jpg ')
    if breakage == 'drop':
        del rows[4]
    elif breakage == 'short':
        rows[4] = rows[4].rsplit(' ', 1)[0]
    else:
        rows[4] = rows[4].replace(rows[4].split()[3], 'nose')
    write(copied['landmarks'], rows)
    with pytest.raises(ValueError, match=message):
        build(copied, landmark_file=copied['landmarks'])
    dataset = build(copied, landmark_file=copied['landmarks'], on_bad_data='skip')
    assert len(dataset) == 11
    assert len([m for m in logged_warnings if m.startswith('skipped 1 ')]) == 1 + (breakage != 'drop')


def test_invalid_arguments(faces):
    with pytest.raises(ValueError, match="on_bad_data must be 'raise' or 'skip'"):
        FaceIdentityDataset(data_prefix=dict(img_path=faces['images']), on_bad_data='ignore')
    with pytest.raises(ValueError, match='check_images must be one of'):
        FaceIdentityDataset(data_prefix=dict(img_path=faces['images']), check_images='all')
    with pytest.raises(FileNotFoundError, match='the image folder'):
        FaceIdentityDataset(data_prefix=dict(img_path=faces['images'] + '_missing'))


def landmark_rows(paths):
    with open(paths['landmarks'], encoding='utf-8') as f:
        return f.read().splitlines()


@pytest.mark.parametrize('points', ['20 20 20 20 20 20 20 20 20 20', '20 20 20.1 20 20 20.2 20 20 20 20.3'])
def test_degenerate_landmarks_are_found_when_the_dataset_is_built(copied, logged_warnings, points):
    rows = landmark_rows(copied)
    rows[4] = rows[4].split()[0] + ' ' + points
    write(copied['landmarks'], rows)
    with pytest.raises(ValueError, match=r'landmarks.txt, row 5: face_01/face_01_0002.jpg: the landmarks are '
                       'degenerate: they spread over'):
        build(copied, landmark_file=copied['landmarks'])
    assert len(build(copied, landmark_file=copied['landmarks'], on_bad_data='skip')) == 11
    assert any(m.startswith('skipped 1 bad rows of') for m in logged_warnings)


def test_far_off_landmarks_give_no_labelled_crop(copied, logged_warnings):
    rows = landmark_rows(copied)
    name, *values = rows[4].split()
    rows[4] = ' '.join([name] + [str(float(v) + 5000) for v in values])
    write(copied['landmarks'], rows)
    # Found while the dataset is built when the images are decoded up front ...
    with pytest.raises(FaceImageError, match=rf'landmarks.txt: .*{name}: its landmarks .* put 100% of the aligned '
                       r'crop outside the 96x96 image'):
        build(copied, landmark_file=copied['landmarks'], check_images='decode')
    dataset = build(copied, landmark_file=copied['landmarks'], check_images='decode', on_bad_data='skip')
    assert len(dataset) == 11
    assert any(m.startswith('skipped 1 images whose landmarks') for m in logged_warnings)
    # ... else when the sample is read: an error naming the image, or another sample in training under 'skip';
    # never a crop of border colour with a label.
    dataset = build(copied, landmark_file=copied['landmarks'], test_mode=True)
    index = next(i for i in range(len(dataset)) if dataset.get_data_info(i)['img_path'].endswith(name))
    with pytest.raises(FaceImageError, match=f'{name}: its landmarks'):
        dataset[index]
    dataset = build(copied, landmark_file=copied['landmarks'], on_bad_data='skip')
    assert not dataset[index]['data_samples'].metainfo['img_path'].endswith(name)
    assert dataset.skipped_in_pipeline >= 1


def test_list_and_landmark_files_in_other_encodings(copied, tmp_path):
    rows = landmark_rows(copied)
    with open(copied['landmarks'], 'wb') as f:
        f.write(b'\xef\xbb\xbf' + ''.join(row + '\r\n' for row in rows).encode())
    classes = tmp_path / 'identities.txt'
    classes.write_bytes(b'\xef\xbb\xbfface_00\r\nface_01\r\nface_02\r\nface_03\r\n')
    dataset = build(copied, landmark_file=copied['landmarks'], metainfo=dict(classes=str(classes)))
    assert len(dataset) == 12 and dataset.metainfo['classes'] == tuple(f'face_{i:02d}' for i in range(4))
    with open(copied['val_list'], 'wb') as f:
        f.write(f'{lfw_image_path("face_00", 3)} face_00\n{lfw_image_path("face_01", 3)} identité\n'.encode('latin-1'))
    with pytest.raises(ValueError, match=r'val_list.txt, row 2: not UTF-8'):
        build(copied, ann_file=copied['val_list'], on_bad_data='skip')


def test_dataset_left_empty_names_its_file(copied):
    write(copied['val_list'], ['face_00/face_00_0042.jpg face_00'])
    with pytest.raises(ValueError, match=r'FaceIdentityDataset has no samples: no usable image is listed in '
                       r'.*val_list.txt'):
        build(copied, ann_file=copied['val_list'], on_bad_data='skip')
