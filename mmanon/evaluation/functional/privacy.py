"""How well a face-recognition attacker still identifies anonymized faces.

Every function takes identity embeddings as numpy arrays (one row per face) and compares them by cosine
similarity. In mmanon the *raw* embeddings come from the original faces and the *anonymized* ones from the same
faces after anonymization; a good anonymizer drives every measure towards its chance level.
"""
from typing import Tuple

import numpy as np

# Norms below this count as zero, so that an all-zero embedding is compared as a zero vector, not as NaN.
EPS = 1e-12


def l2_normalize(embeddings: np.ndarray) -> np.ndarray:
    """Rows of ``embeddings`` scaled to unit L2 norm (all-zero rows stay zero), as float64.

    Args:
        embeddings (np.ndarray): (N, E) embeddings.

    Returns:
        np.ndarray: (N, E) unit-norm embeddings.
    """
    embeddings = np.asarray(embeddings, dtype=np.float64)
    return embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), EPS)


def _check_pairs(emb_a: np.ndarray, ids_a: np.ndarray, emb_b: np.ndarray, ids_b: np.ndarray) -> None:
    for emb, ids, name in ((emb_a, ids_a, 'first'), (emb_b, ids_b, 'second')):
        if emb.ndim != 2 or ids.shape != emb.shape[:1]:
            raise ValueError(f'the {name} set needs (N, E) embeddings and (N,) identities, got shapes '
                             f'{emb.shape} and {ids.shape}')
    if emb_a.shape[1] != emb_b.shape[1]:
        raise ValueError(f'both sets need the same embedding size, got {emb_a.shape[1]} and {emb_b.shape[1]}')


def reidentification_top1(query_emb: np.ndarray, query_ids: np.ndarray, gallery_emb: np.ndarray,
                          gallery_ids: np.ndarray) -> Tuple[float, float]:
    """Closed-set top-1 re-identification rate of queries against a gallery of identity templates.

    Each gallery identity has one template: the mean of its L2-normalised gallery embeddings, normalised
    again. Each query is assigned the identity of its most cosine-similar template (the first one on a tie).
    In mmanon the queries are the anonymized faces and the gallery the raw ones.

    Args:
        query_emb (np.ndarray): (Q, E) query embeddings.
        query_ids (np.ndarray): (Q,) query identities.
        gallery_emb (np.ndarray): (G, E) gallery embeddings.
        gallery_ids (np.ndarray): (G,) gallery identities.

    Returns:
        tuple[float, float]: ``top1``, the fraction of queries whose identity is in the gallery that are
        assigned their own identity (NaN when there are none), and ``chance``, 1 / the number of gallery
        identities (NaN for an empty gallery).
    """
    query_emb, gallery_emb = np.asarray(query_emb), np.asarray(gallery_emb)
    query_ids, gallery_ids = np.asarray(query_ids), np.asarray(gallery_ids)
    _check_pairs(query_emb, query_ids, gallery_emb, gallery_ids)
    identities, members = np.unique(gallery_ids, return_inverse=True)
    if len(identities) == 0:
        return float('nan'), float('nan')
    templates = np.zeros((len(identities), gallery_emb.shape[1]))
    np.add.at(templates, members, l2_normalize(gallery_emb))
    templates = l2_normalize(templates)

    in_gallery = np.isin(query_ids, identities)
    chance = 1.0 / len(identities)
    if not in_gallery.any():
        return float('nan'), chance
    similarity = l2_normalize(query_emb[in_gallery]) @ templates.T
    assigned = identities[similarity.argmax(axis=1)]
    return float(np.mean(assigned == query_ids[in_gallery])), chance


def majority_rate(query_ids: np.ndarray, gallery_ids: np.ndarray) -> float:
    """Top-1 re-identification rate of an attacker that learned nothing from the faces and always names the
    most frequent identity: the highest share of the queries that one gallery identity has.

    With identities of uneven frequency this exceeds chance (1 / identities); an anonymizer that leaves no
    identity cue at all can score anything between the rarest and this share, depending on which template its
    featureless faces happen to be nearest to.

    Args:
        query_ids (np.ndarray): (Q,) query identities.
        gallery_ids (np.ndarray): (G,) gallery identities.

    Returns:
        float: The share, over the queries whose identity is in the gallery (NaN when there are none).
    """
    query_ids = np.asarray(query_ids)
    in_gallery = query_ids[np.isin(query_ids, np.unique(gallery_ids))]
    if len(in_gallery) == 0:
        return float('nan')
    return float(np.unique(in_gallery, return_counts=True)[1].max() / len(in_gallery))


def roc_auc(positive_scores: np.ndarray, negative_scores: np.ndarray) -> float:
    """Exact area under the ROC curve: the probability that a random positive scores above a random negative,
    ties counting 1/2 (the normalised Mann-Whitney U statistic).

    Args:
        positive_scores (np.ndarray): Scores of the positive pairs.
        negative_scores (np.ndarray): Scores of the negative pairs.

    Returns:
        float: The AUC in [0, 1]; NaN without positives or without negatives.
    """
    positive_scores = np.asarray(positive_scores, dtype=np.float64).ravel()
    negative_scores = np.asarray(negative_scores, dtype=np.float64).ravel()
    num_pos, num_neg = len(positive_scores), len(negative_scores)
    if num_pos == 0 or num_neg == 0:
        return float('nan')
    scores = np.concatenate([positive_scores, negative_scores])
    # Midranks: a group of tied scores shares the mean of the 1-based ranks it spans, which is what makes each
    # tied positive-negative pair count 1/2.
    _, group, counts = np.unique(scores, return_inverse=True, return_counts=True)
    group_end = np.cumsum(counts)
    midranks = group_end - (counts - 1) / 2
    positive_rank_sum = midranks[group[:num_pos]].sum()
    return float((positive_rank_sum - num_pos * (num_pos + 1) / 2) / (num_pos * num_neg))


def tar_at_far(positive_scores: np.ndarray, negative_scores: np.ndarray, far: float = 0.01) -> float:
    """True accept rate at a false accept rate.

    The threshold is the lowest score with at most ``far`` of the negatives strictly above it (a negative
    score, so ties at the threshold are rejected); the TAR is the fraction of positives strictly above it.

    Args:
        positive_scores (np.ndarray): Scores of the positive pairs.
        negative_scores (np.ndarray): Scores of the negative pairs.
        far (float): The false accept rate, in [0, 1]. Defaults to 0.01.

    Returns:
        float: The TAR in [0, 1]; NaN without positives or without negatives.
    """
    if not 0 <= far <= 1:
        raise ValueError(f'far must be in [0, 1], got {far}')
    positive_scores = np.asarray(positive_scores, dtype=np.float64).ravel()
    negative_scores = np.asarray(negative_scores, dtype=np.float64).ravel()
    if len(positive_scores) == 0 or len(negative_scores) == 0:
        return float('nan')
    # The relative tolerance keeps e.g. 0.01 * 300 from flooring to 2 through rounding.
    num_false_accepts = int(np.floor(far * len(negative_scores) * (1 + 1e-9)))
    if num_false_accepts >= len(negative_scores):
        return 1.0
    # The (num_false_accepts + 1)-th highest negative score.
    threshold = np.partition(negative_scores, -1 - num_false_accepts)[-1 - num_false_accepts]
    return float(np.mean(positive_scores > threshold))


def _pair_scores(raw_emb: np.ndarray, raw_ids: np.ndarray, anon_emb: np.ndarray, anon_ids: np.ndarray,
                 max_pairs: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Cosine scores of the positive and negative (raw, anonymized) pairs; see :func:`verification_scores`."""
    raw, anon = l2_normalize(raw_emb), l2_normalize(anon_emb)
    if len(raw) * len(anon) <= max_pairs:
        scores = raw @ anon.T
        same = raw_ids[:, None] == anon_ids[None, :]
        return scores[same], scores[~same]

    positives = [(raw[raw_ids == i] @ anon[anon_ids == i].T).ravel() for i in np.intersect1d(raw_ids, anon_ids)]
    positives = np.concatenate(positives) if positives else np.zeros(0)

    # Negative pairs are drawn uniformly with replacement: a raw face with probability proportional to its
    # number of negative partners, then one of those partners uniformly. The anonymized faces are sorted by
    # identity, so an identity's faces are one block and its partners are everything before or after it.
    order = np.argsort(anon_ids, kind='stable')
    sorted_ids = anon_ids[order]
    block_start = np.searchsorted(sorted_ids, raw_ids, side='left')
    block_size = np.searchsorted(sorted_ids, raw_ids, side='right') - block_start
    num_partners = len(anon) - block_size
    if num_partners.sum() == 0:
        return positives, np.zeros(0)
    rng = np.random.default_rng(seed)
    i = rng.choice(len(raw), size=max_pairs, p=num_partners / num_partners.sum())
    r = rng.integers(0, num_partners[i])
    j = order[np.where(r < block_start[i], r, r + block_size[i])]
    # Scored in chunks: gathering all sampled rows at once would take max_pairs * E * 16 bytes.
    chunk = 1 << 15
    negatives = [
        np.einsum('ne,ne->n', raw[i[k:k + chunk]], anon[j[k:k + chunk]]) for k in range(0, max_pairs, chunk)
    ]
    return positives, np.concatenate(negatives)


def verification_scores(raw_emb: np.ndarray,
                        raw_ids: np.ndarray,
                        anon_emb: np.ndarray,
                        anon_ids: np.ndarray,
                        far: float = 0.01,
                        max_pairs: int = 4_000_000,
                        seed: int = 0) -> Tuple[float, float]:
    """How well cosine similarity verifies whether a raw and an anonymized face show the same identity.

    Every (raw face i, anonymized face j) pair is scored by the cosine similarity of their embeddings. Pairs
    of the same identity are positives (including i == j, a face and its own anonymized version), the others
    negatives. When there are more than ``max_pairs`` pairs in all, every positive pair is still scored but
    the negatives are ``max_pairs`` pairs drawn uniformly (with replacement) from all negative pairs with a
    generator seeded by ``seed``, so the result is deterministic and the AUC and FAR estimates unbiased.

    Args:
        raw_emb (np.ndarray): (N, E) embeddings of the raw faces.
        raw_ids (np.ndarray): (N,) their identities.
        anon_emb (np.ndarray): (M, E) embeddings of the anonymized faces.
        anon_ids (np.ndarray): (M,) their identities.
        far (float): False accept rate at which the TAR is read. Defaults to 0.01.
        max_pairs (int): Pair count above which negatives are subsampled. Defaults to 4_000_000.
        seed (int): Seed of the negative subsample. Defaults to 0.

    Returns:
        tuple[float, float]: ``roc_auc``, see :func:`roc_auc`, and ``tar_at_far``, see :func:`tar_at_far`;
        both NaN when there are no positive or no negative pairs (e.g. a single identity).
    """
    raw_emb, anon_emb = np.asarray(raw_emb), np.asarray(anon_emb)
    raw_ids, anon_ids = np.asarray(raw_ids), np.asarray(anon_ids)
    _check_pairs(raw_emb, raw_ids, anon_emb, anon_ids)
    if max_pairs < 1:
        raise ValueError(f'max_pairs must be positive, got {max_pairs}')
    positives, negatives = _pair_scores(raw_emb, raw_ids, anon_emb, anon_ids, max_pairs, seed)
    return roc_auc(positives, negatives), tar_at_far(positives, negatives, far)


def mean_pair_similarity(raw_emb: np.ndarray, anon_emb: np.ndarray) -> float:
    """Mean cosine similarity between each face's raw and anonymized embedding.

    Args:
        raw_emb (np.ndarray): (N, E) embeddings of the raw faces.
        anon_emb (np.ndarray): (N, E) embeddings of the same faces anonymized, in the same order.

    Returns:
        float: The mean similarity in [-1, 1]; NaN for N = 0.
    """
    raw_emb, anon_emb = np.asarray(raw_emb), np.asarray(anon_emb)
    if raw_emb.ndim != 2 or raw_emb.shape != anon_emb.shape:
        raise ValueError(f'raw_emb and anon_emb must both be (N, E), got shapes {raw_emb.shape} and '
                         f'{anon_emb.shape}')
    if len(raw_emb) == 0:
        return float('nan')
    return float(np.mean(np.sum(l2_normalize(raw_emb) * l2_normalize(anon_emb), axis=1)))
