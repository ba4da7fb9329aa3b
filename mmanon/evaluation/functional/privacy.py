"""How well a face-recognition attacker still identifies anonymized faces.

Every function takes identity embeddings as numpy arrays (one row per face) and compares them by cosine
similarity. In mmanon the *raw* embeddings come from the original faces and the *anonymized* ones from the same
faces after anonymization; a good anonymizer drives every measure towards its chance level.
"""
import math
from typing import Optional, Tuple

import numpy as np

# Norms below this count as zero, so that an all-zero embedding is compared as a zero vector, not as NaN.
EPS = 1e-12
# Cosine similarities this close count as equal when picking the most similar template.
TIE = 1e-9


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


def identity_templates(embeddings: np.ndarray, identities: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """One template per identity: the mean of its L2-normalised embeddings, normalised again.

    Args:
        embeddings (np.ndarray): (N, E) embeddings.
        identities (np.ndarray): (N,) their identities.

    Returns:
        tuple[np.ndarray, np.ndarray]: The (K,) sorted distinct identities and their (K, E) templates, float64.
    """
    embeddings, identities = np.asarray(embeddings), np.asarray(identities)
    _check_pairs(embeddings, identities, embeddings, identities)
    distinct, members = np.unique(identities, return_inverse=True)
    templates = np.zeros((len(distinct), embeddings.shape[1]))
    np.add.at(templates, members, l2_normalize(embeddings))
    return distinct, l2_normalize(templates)


def _top1_credit(similarity: np.ndarray, own: np.ndarray) -> np.ndarray:
    """Per query (row), 1 when its own template (column ``own``) is the most similar, and 1/m when it is one of
    m templates tied within ``TIE`` for the highest similarity: the expected top-1 when ties are broken at random.

    Featureless queries (a solid mask) are equally similar to every template. Breaking such ties by order, or by
    rounding in the last bit, would credit an attacker who learned nothing with the share of whichever identity
    comes first; fractional credit gives them chance exactly, under every protocol.
    """
    tied = similarity >= similarity.max(axis=1, keepdims=True) - TIE
    return tied[np.arange(len(own)), own] / tied.sum(axis=1)


def template_top1(query_emb: np.ndarray, query_ids: np.ndarray, gallery_ids: np.ndarray,
                  templates: np.ndarray) -> Tuple[float, float]:
    """Closed-set top-1 re-identification rate of queries against given identity templates.

    Each query is assigned the identity of its most cosine-similar template (see :func:`identity_templates` for
    templates); a query tied between m templates, its own among them, counts 1/m (the expected top-1 when ties
    are broken at random, so that featureless queries score chance).

    Args:
        query_emb (np.ndarray): (Q, E) query embeddings.
        query_ids (np.ndarray): (Q,) query identities.
        gallery_ids (np.ndarray): (K,) the identities of the templates.
        templates (np.ndarray): (K, E) one template per identity.

    Returns:
        tuple[float, float]: ``top1``, the fraction of queries whose identity is in the gallery that are
        assigned their own identity (NaN when there are none), and ``chance``, 1 / the number of gallery
        identities (NaN for an empty gallery).
    """
    query_emb, query_ids = np.asarray(query_emb), np.asarray(query_ids)
    gallery_ids, templates = np.asarray(gallery_ids), np.asarray(templates)
    _check_pairs(query_emb, query_ids, templates, gallery_ids)
    if len(gallery_ids) == 0:
        return float('nan'), float('nan')
    in_gallery = np.isin(query_ids, gallery_ids)
    chance = 1.0 / len(gallery_ids)
    if not in_gallery.any():
        return float('nan'), chance
    own = np.array([np.flatnonzero(gallery_ids == identity)[0] for identity in query_ids[in_gallery]])
    return float(np.mean(_top1_credit(l2_normalize(query_emb[in_gallery]) @ l2_normalize(templates).T, own))), chance


def reidentification_top1(query_emb: np.ndarray, query_ids: np.ndarray, gallery_emb: np.ndarray,
                          gallery_ids: np.ndarray) -> Tuple[float, float]:
    """Closed-set top-1 re-identification rate of queries against a gallery of identity templates.

    Each gallery identity has one template (:func:`identity_templates`); each query is assigned the identity of
    its most cosine-similar template (:func:`template_top1`). In mmanon's raw-gallery protocol the queries are
    the anonymized faces and the gallery the raw ones.

    Args:
        query_emb (np.ndarray): (Q, E) query embeddings.
        query_ids (np.ndarray): (Q,) query identities.
        gallery_emb (np.ndarray): (G, E) gallery embeddings.
        gallery_ids (np.ndarray): (G,) gallery identities.

    Returns:
        tuple[float, float]: ``top1`` and ``chance``, as :func:`template_top1` returns them.
    """
    return template_top1(query_emb, query_ids, *identity_templates(gallery_emb, gallery_ids))


def leave_one_out_top1(embeddings: np.ndarray, identities: np.ndarray,
                       groups: Optional[np.ndarray] = None) -> Tuple[float, float, np.ndarray]:
    """Top-1 re-identification of each face against templates of the faces outside its group.

    The gallery is the faces themselves, each query's group (e.g. its video) left out of the templates, so
    gallery and query never share a face, nor a video whose neighbouring keyframes would be near-copies of the
    query: the anonymized-gallery protocol when both are anonymized faces of known identity (an attacker who
    holds other anonymized faces of the same people). Identities with no face outside the query's group are
    not candidates for it, and a query whose own identity is among them cannot be re-identified and is not
    counted. Ties count as in :func:`template_top1`.

    Args:
        embeddings (np.ndarray): (N, E) embeddings.
        identities (np.ndarray): (N,) their identities.
        groups (np.ndarray, optional): (N,) the group of each face. Defaults to None, each face its own group.

    Returns:
        tuple[float, float, np.ndarray]: ``top1`` over the counted faces (NaN when none is), ``chance``, the
        mean over the counted faces of 1 / their candidate identities (1 / the identities when none is counted;
        NaN without faces), and the (N,) bool mask of the counted faces.
    """
    embeddings, identities = np.asarray(embeddings), np.asarray(identities)
    _check_pairs(embeddings, identities, embeddings, identities)
    groups = np.arange(len(identities)) if groups is None else np.asarray(groups)
    if groups.shape != identities.shape:
        raise ValueError(f'groups must be ({len(identities)},), one per face, got shape {groups.shape}')
    distinct, members, counts = np.unique(identities, return_inverse=True, return_counts=True)
    if len(distinct) == 0:
        return float('nan'), float('nan'), np.zeros(0, dtype=bool)
    normalised = l2_normalize(embeddings)
    sums = np.zeros((len(distinct), embeddings.shape[1]))
    np.add.at(sums, members, normalised)
    similarity = normalised @ l2_normalize(sums).T
    counted = np.zeros(len(identities), dtype=bool)
    candidates = np.full(len(identities), len(distinct))
    # Only the templates of the identities inside a group change when the group is left out: they are made
    # again from the other faces, with the same normalisation as the rest (so that a featureless query still
    # ties with every template, see _top1_credit), or removed when nothing is left of them.
    for group in np.unique(groups):
        inside = np.flatnonzero(groups == group)
        present, inside_members = np.unique(members[inside], return_inverse=True)
        rest = sums[present].copy()
        np.subtract.at(rest, inside_members, normalised[inside])
        left = counts[present] - np.bincount(inside_members, minlength=len(present))
        block = normalised[inside] @ l2_normalize(rest).T
        block[:, left == 0] = -np.inf
        similarity[np.ix_(inside, present)] = block
        counted[inside] = left[inside_members] > 0
        candidates[inside] = len(distinct) - np.count_nonzero(left == 0)
    if not counted.any():
        return float('nan'), 1.0 / len(distinct), counted
    top1 = np.mean(_top1_credit(similarity[counted], members[counted]))
    # Summed exactly, so that equal chances average to themselves.
    return float(top1), math.fsum(1.0 / candidates[counted]) / np.count_nonzero(counted), counted


def classification_top1(predicted: np.ndarray, identities: np.ndarray,
                        classes: np.ndarray) -> Tuple[float, float]:
    """Closed-set top-1 accuracy of an identity classifier.

    Args:
        predicted (np.ndarray): (Q,) the identity the classifier names for each query.
        identities (np.ndarray): (Q,) the true identities.
        classes (np.ndarray): (K,) the identities the classifier knows.

    Returns:
        tuple[float, float]: ``top1`` over the queries whose identity is among the classes (NaN when none
        is), and ``chance``, 1 / K (NaN without classes).
    """
    predicted, identities, classes = np.asarray(predicted), np.asarray(identities), np.asarray(classes)
    if predicted.shape != identities.shape or predicted.ndim != 1:
        raise ValueError(f'predicted and identities must both be (Q,), got shapes {predicted.shape} and '
                         f'{identities.shape}')
    if len(classes) == 0:
        return float('nan'), float('nan')
    known = np.isin(identities, classes)
    chance = 1.0 / len(np.unique(classes))
    if not known.any():
        return float('nan'), chance
    return float(np.mean(predicted[known] == identities[known])), chance


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
