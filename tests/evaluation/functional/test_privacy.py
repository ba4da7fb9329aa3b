import numpy as np
import pytest

from mmanon.evaluation.functional import (classification_top1, identity_templates, l2_normalize, leave_one_out_top1,
                                          majority_rate, mean_pair_similarity, reidentification_top1, roc_auc,
                                          tar_at_far, template_top1, verification_scores)


def clustered_faces(num_identities, faces_per_identity, noise, dims=32, seed=0):
    """Embeddings scattered around one random centre per identity."""
    rng = np.random.default_rng(seed)
    ids = np.repeat(np.arange(num_identities), faces_per_identity)
    centres = rng.normal(size=(num_identities, dims))
    return centres[ids] + noise * rng.normal(size=(len(ids), dims)), ids


def test_perfect_attacker():
    embeddings, ids = clustered_faces(8, 5, noise=0.05)
    assert reidentification_top1(embeddings, ids, embeddings, ids) == (1.0, 1 / 8)
    assert verification_scores(embeddings, ids, embeddings, ids) == (1.0, 1.0)
    assert mean_pair_similarity(embeddings, embeddings) == pytest.approx(1.0)


def test_random_attacker_is_at_chance():
    rng = np.random.default_rng(0)
    ids = np.repeat(np.arange(10), 100)
    raw, anonymized = rng.normal(size=(2, len(ids), 32))
    top1, chance = reidentification_top1(anonymized, ids, raw, ids)
    assert chance == 0.1
    assert top1 == pytest.approx(chance, abs=0.03)
    auc, tar = verification_scores(raw, ids, anonymized, ids)
    assert auc == pytest.approx(0.5, abs=0.02)
    assert tar == pytest.approx(0.01, abs=0.01)
    assert mean_pair_similarity(raw, anonymized) == pytest.approx(0.0, abs=0.02)


def test_chance_is_one_over_gallery_identities():
    embeddings, ids = clustered_faces(5, 2, noise=0.1)
    assert reidentification_top1(embeddings, ids, embeddings, ids)[1] == 0.2


def test_reidentification_uses_identity_templates():
    # Identity 0 has one gallery face close to the query and one far away; identity 1 one face in between.
    # Nearest-neighbour matching would pick identity 0, the normalised mean template picks identity 1.
    gallery = np.array([[1.0, 0.0], [-1.0, 0.1], [0.8, 0.6]])
    gallery_ids = np.array([0, 0, 1])
    query = np.array([[0.95, 0.3]])
    assert reidentification_top1(query, np.array([1]), gallery, gallery_ids) == (1.0, 0.5)


def test_reidentification_counts_only_queries_in_gallery():
    gallery = np.eye(3)
    queries = np.array([[1.0, 0, 0], [0, 0.9, 0.1], [0, 0, 1.0], [1.0, 0, 0]])
    top1, chance = reidentification_top1(queries, np.array([0, 2, 2, 7]), gallery, np.array([0, 1, 2]))
    assert top1 == pytest.approx(2 / 3)
    assert chance == pytest.approx(1 / 3)
    assert np.isnan(reidentification_top1(queries, np.full(4, 9), gallery, np.arange(3))[0])


def test_templates_given_or_built_give_the_same_rate():
    embeddings, ids = clustered_faces(6, 4, noise=1.5, seed=3)
    queries, query_ids = clustered_faces(6, 3, noise=1.5, seed=3)
    distinct, templates = identity_templates(embeddings, ids)
    assert distinct.tolist() == list(range(6)) and templates.shape == (6, 32)
    np.testing.assert_allclose(np.linalg.norm(templates, axis=1), 1.0)
    # Stored templates need not be normalised (a checkpoint may hold sums).
    assert template_top1(queries, query_ids, distinct, 3 * templates) == \
        reidentification_top1(queries, query_ids, embeddings, ids)
    assert np.isnan(template_top1(queries, query_ids, distinct[:0], templates[:0])[1])


def test_featureless_queries_score_chance():
    # Identical queries (a solid mask) are equally similar to templates that differ only by rounding: each tie
    # between the four identities counts 1/4, whichever identity comes first or rounds highest, so an attacker
    # who learned nothing scores chance even where one identity has most of the queries.
    rng = np.random.default_rng(0)
    direction = rng.normal(size=16)
    gallery = np.stack([direction * (1 + 1e-12 * k) + 1e-13 * rng.normal(size=16) for k in range(4)])
    queries = np.repeat(direction[None], 8, axis=0)
    query_ids = np.array([0, 0, 0, 0, 0, 2, 1, 3])
    assert template_top1(queries, query_ids, np.arange(4), gallery) == (0.25, 0.25)
    # Leave-one-out: identities 1 to 3 have a single face, uncounted but still templates to tie with.
    top1, chance, counted = leave_one_out_top1(queries, query_ids)
    assert (top1, chance, counted.sum()) == (0.25, 0.25, 5)
    # Tied between two templates, the own one among them: half a hit.
    assert template_top1(np.array([[1.0, 1.0]]), np.array([7]), np.array([7, 8, 9]),
                         np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])) == (0.5, 1 / 3)


def test_leave_one_out_by_hand():
    # Identity 0: two faces along x; identity 1: two faces along y; identity 2: one face, never a query.
    embeddings = np.array([[1.0, 0.1], [1.0, -0.1], [0.1, 1.0], [0.9, 0.44], [-1.0, 0.0]])
    ids = np.array([0, 0, 1, 1, 2])
    top1, chance, counted = leave_one_out_top1(embeddings, ids)
    assert counted.tolist() == [True, True, True, True, False] and chance == pytest.approx(1 / 3)
    # Face 3 is nearer identity 0's template than face 2 alone; the others find their own identity.
    assert top1 == pytest.approx(3 / 4)
    # A face left out of its own template: a single face per identity re-identifies nothing.
    assert np.isnan(leave_one_out_top1(np.eye(3), np.arange(3))[0])


def test_leave_one_out_is_at_chance_for_random_embeddings_and_perfect_for_clusters():
    rng = np.random.default_rng(1)
    ids = np.repeat(np.arange(10), 30)
    assert leave_one_out_top1(rng.normal(size=(300, 32)), ids)[0] == pytest.approx(0.1, abs=0.04)
    embeddings, ids = clustered_faces(8, 3, noise=0.05)
    assert leave_one_out_top1(embeddings, ids)[:2] == (1.0, 1 / 8)


def test_leave_one_out_leaves_out_the_query_group():
    # Each face looks like the other faces of its video, not like its identity in other videos: face by face,
    # a query's own identity template holds the query's video twins; video by video, nothing identifies it.
    rng = np.random.default_rng(0)
    ids = np.repeat(np.arange(10), 6)
    videos = np.repeat(np.arange(20), 3)
    embeddings = rng.normal(size=(20, 64))[videos] + 0.01 * rng.normal(size=(60, 64))
    assert leave_one_out_top1(embeddings, ids)[0] > 0.9
    top1, chance, counted = leave_one_out_top1(embeddings, ids, videos)
    assert counted.all() and chance == pytest.approx(0.1) and top1 < 0.3
    # Identities seen in a single video (9 in video 18, 10 in video 19) have no gallery outside it: their faces
    # are not counted; the other faces have all 11 identities as candidates.
    single = ids.copy()
    single[57:] = 10
    top1, chance, counted = leave_one_out_top1(embeddings, single, videos)
    assert counted.tolist() == [True] * 54 + [False] * 6
    assert chance == pytest.approx(1 / 11)
    with pytest.raises(ValueError, match='groups must be'):
        leave_one_out_top1(embeddings, ids, videos[:5])


def test_classification_top1():
    predicted = np.array([0, 1, 1, 5, 2])
    identities = np.array([0, 1, 2, 5, 9])  # identity 9 is not a class
    assert classification_top1(predicted, identities, np.array([0, 1, 2, 5])) == (0.75, 0.25)
    assert np.isnan(classification_top1(predicted, identities, np.array([7]))[0])
    with pytest.raises(ValueError, match='must both be'):
        classification_top1(predicted[:2], identities, np.arange(3))


def test_roc_auc_by_hand():
    # Positive 0.9 beats all 3 negatives, 0.7 beats 0.3 and 0.2, 0.4 beats 0.3 and 0.2: 7 of 9 pairs.
    assert roc_auc([0.9, 0.7, 0.4], [0.8, 0.3, 0.2]) == pytest.approx(7 / 9)


def test_roc_auc_counts_ties_as_half():
    # 0.5 vs 0.5 is a tie (1/2); 0.5 beats 0.2; 0.9 beats both: (0.5 + 1 + 2) / 4.
    assert roc_auc([0.5, 0.9], [0.5, 0.2]) == pytest.approx(3.5 / 4)
    assert roc_auc([0.3, 0.3], [0.3, 0.3, 0.3]) == 0.5
    assert np.isnan(roc_auc([], [0.1]))


def test_tar_at_far_by_hand():
    negatives = np.arange(100) / 100  # 0.00 ... 0.99
    positives = np.array([0.995, 0.985, 0.5, 0.2])
    # At most 1 negative above the threshold: the threshold is 0.98, and 0.995 and 0.985 pass.
    assert tar_at_far(positives, negatives, far=0.01) == 0.5
    # At most 3 of 300 negatives: floating point must not turn 0.01 * 300 into 2.
    assert tar_at_far(positives, np.repeat(negatives, 3), far=0.01) == 0.5
    assert tar_at_far(positives, negatives, far=0.0) == 0.25
    assert tar_at_far(positives, negatives, far=1.0) == 1.0
    # Negatives tied at the threshold are rejected, and so are positives with that score.
    assert tar_at_far([0.5, 0.6], [0.5] * 10, far=0.01) == 0.5
    with pytest.raises(ValueError, match='far must be in'):
        tar_at_far(positives, negatives, far=1.5)


def test_verification_pairs_include_a_face_and_its_own_anonymized_version():
    raw = np.array([[1.0, 0.0], [0.0, 1.0]])
    anonymized = np.array([[0.9, 0.1], [0.6, 0.4]])
    ids = np.array([0, 1])
    # Positives: cos(raw0, anon0) high, cos(raw1, anon1) ~0.55; negatives: cos(raw0, anon1) ~0.83 and
    # cos(raw1, anon0) ~0.11. Positive 1 beats only the second negative: (2 + 1) / 4.
    assert verification_scores(raw, ids, anonymized, ids)[0] == pytest.approx(3 / 4)


def test_verification_subsamples_negatives_deterministically():
    embeddings, ids = clustered_faces(20, 10, noise=2.0, seed=1)
    rng = np.random.default_rng(2)
    anonymized = embeddings + 2.0 * rng.normal(size=embeddings.shape)
    exact = verification_scores(embeddings, ids, anonymized, ids)
    subsampled = verification_scores(embeddings, ids, anonymized, ids, max_pairs=20_000, seed=3)
    assert subsampled == verification_scores(embeddings, ids, anonymized, ids, max_pairs=20_000, seed=3)
    assert subsampled != exact
    assert subsampled[0] == pytest.approx(exact[0], abs=0.01)
    assert subsampled[1] == pytest.approx(exact[1], abs=0.05)


def test_single_identity_has_no_negatives():
    embeddings = np.random.default_rng(0).normal(size=(4, 8))
    ids = np.zeros(4, dtype=int)
    assert all(np.isnan(v) for v in verification_scores(embeddings, ids, embeddings, ids))
    assert all(np.isnan(v) for v in verification_scores(embeddings, ids, embeddings, ids, max_pairs=3))


def test_mean_pair_similarity():
    raw = np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    anonymized = np.array([[0.0, 3.0], [0.0, 1.0], [1.0, 0.0]])
    # Orthogonal, parallel, and a zero vector (similarity 0 rather than NaN).
    assert mean_pair_similarity(raw, anonymized) == pytest.approx(1 / 3)
    np.testing.assert_allclose(l2_normalize(raw), [[1, 0], [0, 1], [0, 0]])


def test_shape_errors_are_explained():
    with pytest.raises(ValueError, match='same embedding size'):
        verification_scores(np.zeros((2, 3)), np.arange(2), np.zeros((2, 4)), np.arange(2))
    with pytest.raises(ValueError, match=r'\(N, E\) embeddings and \(N,\) identities'):
        reidentification_top1(np.zeros((2, 3)), np.arange(3), np.zeros((2, 3)), np.arange(2))
    with pytest.raises(ValueError, match='must both be'):
        mean_pair_similarity(np.zeros((2, 3)), np.zeros((3, 3)))


def test_majority_rate_is_the_share_of_the_most_frequent_gallery_identity():
    queries = np.array([0, 0, 0, 1, 2, 7])
    assert majority_rate(queries, np.array([0, 1, 2])) == pytest.approx(3 / 5)  # identity 7 is not in the gallery
    assert majority_rate(queries, np.array([1, 2])) == pytest.approx(1 / 2)
    assert np.isnan(majority_rate(queries, np.array([9])))
