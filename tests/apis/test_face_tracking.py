import numpy as np
import pytest

from mmanon.apis import IoUTracker
from mmanon.apis.face_tracking import box_iou


def box(x, y, w=20, h=20):
    return [x, y, x + w, y + h]


def test_box_iou():
    ious = box_iou(np.array([box(0, 0), box(100, 100)]), np.array([box(10, 0), box(0, 0, 0, 0)]))
    np.testing.assert_allclose(ious, [[200 / 600, 0], [0, 0]])


def test_detection_starts_a_track_in_its_first_frame():
    tracker = IoUTracker()
    assert tracker.update(None) == []
    tracks = tracker.update(np.array([box(0, 0) + [0.9]]))
    assert [t.track_id for t in tracks] == [0]
    np.testing.assert_allclose(tracks[0].box, box(0, 0))
    assert tracks[0].score == pytest.approx(0.9) and not tracks[0].lost


def test_greedy_association_takes_the_best_pairs_first():
    tracker = IoUTracker(iou_threshold=0.1, smoothing=0, extrapolate=False)
    tracker.update(np.array([box(0, 0), box(12, 0)]))
    # The best pair (IoU 0.90) is detection 0 with track 1; then detection 1 with track 0 (IoU 0.82), although
    # either detection also overlaps the other track above the threshold.
    tracks = tracker.update(np.array([box(11, 0), box(2, 0)]))
    by_id = {t.track_id: t.box for t in tracks}
    assert set(by_id) == {0, 1} and tracker.num_tracks == 2
    np.testing.assert_allclose(by_id[1], box(11, 0))
    np.testing.assert_allclose(by_id[0], box(2, 0))


def test_detection_below_the_iou_threshold_starts_a_new_track():
    tracker = IoUTracker(iou_threshold=0.5, extrapolate=False)
    tracker.update(np.array([box(0, 0)]))
    tracks = tracker.update(np.array([box(10, 0)]))  # IoU 1/3
    assert [(t.track_id, t.lost) for t in tracks] == [(0, True), (1, False)]


def test_lost_track_lives_max_age_frames_then_expires():
    tracker = IoUTracker(max_age=3, extrapolate=False)
    tracker.update(np.array([box(50, 50)]))
    for miss in range(1, 4):
        tracks = tracker.update(np.zeros((0, 5)))
        assert len(tracks) == 1 and tracks[0].misses == miss and tracks[0].lost
        np.testing.assert_allclose(tracks[0].box, box(50, 50))
        assert tracker.expired == []
    assert tracker.update(None) == []
    assert [t.track_id for t in tracker.expired] == [0]
    assert tracker.update(None) == [] and tracker.expired == []


def test_redetection_within_max_age_continues_the_track():
    tracker = IoUTracker(max_age=2, extrapolate=False)
    tracker.update(np.array([box(50, 50)]))
    tracker.update(None)
    tracks = tracker.update(np.array([box(51, 50)]))
    assert [(t.track_id, t.misses, t.hits) for t in tracks] == [(0, 0, 2)]


def test_lost_track_moves_on_by_its_velocity():
    tracker = IoUTracker(smoothing=0, max_age=5)
    for x in (0, 4, 8):
        tracker.update(np.array([box(x, 10)]))
    tracks = tracker.update(None)
    np.testing.assert_allclose(tracks[0].box, box(12, 10))
    tracks = tracker.predict()  # a frame without detection: moves on, counts no miss
    np.testing.assert_allclose(tracks[0].box, box(16, 10))
    assert tracks[0].misses == 1

    still = IoUTracker(smoothing=0, max_age=5, extrapolate=False)
    for x in (0, 4, 8):
        still.update(np.array([box(x, 10)]))
    np.testing.assert_allclose(still.update(None)[0].box, box(8, 10))


def test_smoothing_averages_the_prediction_and_the_detection():
    tracker = IoUTracker(smoothing=0.5, extrapolate=False)
    tracker.update(np.array([box(0, 0)]))
    tracks = tracker.update(np.array([box(4, 0)]))
    np.testing.assert_allclose(tracks[0].box, box(2, 0))


def test_tracking_is_deterministic():
    rng = np.random.default_rng(0)
    frames = [np.concatenate([rng.uniform(0, 100, (3, 2)), rng.uniform(10, 30, (3, 2))], 1) for _ in range(20)]
    frames = [np.concatenate([f[:, :2], f[:, :2] + f[:, 2:]], 1) for f in frames]
    runs = []
    for _ in range(2):
        tracker = IoUTracker(iou_threshold=0.1)
        runs.append([[(t.track_id, *t.box.round(6)) for t in tracker.update(f)] for f in frames])
    assert runs[0] == runs[1]


@pytest.mark.parametrize('kwargs', [dict(iou_threshold=0), dict(smoothing=1), dict(max_age=-1)])
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        IoUTracker(**kwargs)


def test_association_scale_keeps_a_small_jittering_face_on_one_track():
    """A 10-pixel face whose box jumps by 6 pixels overlaps its last box by IoU 0.25 only; compared enlarged
    twice, by 0.54."""
    jitter = [box(100, 100, 10, 10), box(106, 100, 10, 10), box(100, 100, 10, 10)]
    plain = IoUTracker(smoothing=0, extrapolate=False)
    enlarged = IoUTracker(smoothing=0, extrapolate=False, association_scale=2)
    for b in jitter:
        plain.update(np.array([b]))
        enlarged.update(np.array([b]))
    assert plain.num_tracks == 2 and enlarged.num_tracks == 1
    with pytest.raises(ValueError, match='association_scale'):
        IoUTracker(association_scale=0.5)
