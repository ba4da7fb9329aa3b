import logging
import math
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log
from mmengine.structures import BaseDataElement

from mmanon.registry import METRICS
from ..attackers import EMBEDDING_KEYS, AttackerUnavailable, build_attacker
from ..functional import (classification_top1, leave_one_out_top1, majority_rate, mean_pair_similarity,
                          reidentification_top1, template_top1, verification_scores)

REQUIRED_FACE_KEYS = ('identities', 'raw_crops', 'anonymized_crops')
# The re-identification protocols, in the order they are reported and win ties of the worst case.
PROTOCOLS = ('raw_gallery', 'anon_gallery', 'train_gallery', 'classifier')
# What a protocol gives: top-1, chance and the majority-guess rate over its queries.
Reidentification = Tuple[float, float, float]


def worst_case(rates: Dict[str, Reidentification]) -> Optional[Tuple[str, Reidentification]]:
    """The protocol on which an attacker does best: the highest multiple of its chance.

    Protocols differ in their galleries and so in chance (the raw gallery has the evaluated identities, an
    attacker's classifier its training identities); the multiple of chance is what a privacy target bounds, so
    the worst case passes such a target only if every protocol does.

    Args:
        rates (dict[str, tuple[float, float, float]]): Per protocol (or ``attacker/protocol``), top-1, chance
            and majority-guess rate; protocols with a NaN top-1 or chance are left out; ties go to the first.

    Returns:
        tuple[str, tuple[float, float, float]] | None: The worst protocol and its rates, None when no protocol
        has a number.
    """
    usable = [(name, rate) for name, rate in rates.items() if not (math.isnan(rate[0]) or math.isnan(rate[1]))]
    if not usable:
        return None
    return max(usable, key=lambda item: item[1][0] / item[1][1])


@METRICS.register_module()
class FacePrivacyMetric(BaseMetric):
    """How well face-recognition attackers identify the anonymized faces, used beside ``AVAMetric``.

    Each data sample may carry ``'faces'``: a dict (an ``InstanceData`` after ``to_dict()``) of
    ``identities`` (F,) long, -1 for unknown; ``raw_crops`` and ``anonymized_crops`` (F, C, h, w) uint8; and,
    from the model's own face discriminator, optionally ``raw_embeddings`` and ``anonymized_embeddings``
    (F, E). Faces of unknown identity and samples without faces contribute nothing.

    Every attacker embeds the raw and the anonymized crop of each face, and the anonymized faces are
    re-identified (closed-set top-1) under each protocol the attacker supports:

    - ``raw_gallery``: against per-identity templates of the raw faces
      (:func:`~mmanon.evaluation.functional.reidentification_top1`), what a fixed recogniser does with photos
      of the people;
    - ``anon_gallery``: against templates of the *other* anonymized faces, the faces of the query's own video
      (its ``video_id``; a sample without one is a video of its own) left out
      (:func:`~mmanon.evaluation.functional.leave_one_out_top1`), what an attacker does with anonymized faces
      of known identity; an anonymizer that turns each identity into a consistent new look passes the raw
      gallery and fails here. Identities that live in one video each (AVA's person ids) leave nothing to
      match, and the protocol gives NaN;
    - ``train_gallery``: against the templates of the faces the attacker was trained on, for an attacker
      that holds them (``tools/analysis/train_attacker.py`` stores those of the anonymized training faces);
    - ``classifier``: the identity the attacker's own classifier names, for an attacker whose classes are
      identities (the adaptive attacker's head).

    For each attacker ``<name>`` and protocol ``<protocol>`` the metric reports ``<name>/<protocol>/top1``,
    ``/chance`` (a random guess among the protocol's gallery identities) and ``/majority`` (always naming the
    protocol's most frequent gallery identity, above chance when identities are unevenly frequent); then
    ``<name>/worst_case/top1``, ``/chance``, ``/majority`` and ``/protocol``, those of the protocol with the
    highest multiple of chance (:func:`worst_case`), and the same over every attacker and protocol as
    ``worst_case/...`` with ``worst_case/protocol`` naming ``<name>/<protocol>``. Besides re-identification:

    - ``<name>/roc_auc`` and ``<name>/tar@far=<far>``: verification of (raw, anonymized) pairs by cosine
      similarity (:func:`~mmanon.evaluation.functional.verification_scores`), NaN with a single identity;
    - ``<name>/raw_anon_similarity``: the mean cosine similarity of a face's raw and anonymized embeddings;

    ``num_faces``, the number of faces of known identity, and ``reid_majority``, the majority-guess rate over
    all of them. Lower is more private, except the chance and majority levels. Protocols with no query of a
    gallery identity give NaN and are left out of the worst cases.

    ``self.results`` holds one entry per data sample (even one without faces), because mmengine's
    ``collect_results`` restores the dataset order across ranks and drops the samplers' padding by counting
    entries; entries hold embeddings, identities and the video, never crops.

    Args:
        attackers (Sequence[dict]): Attacker configs; see :func:`mmanon.evaluation.attackers.build_attacker`.
            ``type`` is 'discriminator' (the embeddings the model attached; skipped with a warning when there
            are none), 'checkpoint' (a separately trained ``FaceDiscriminatorHead``; args ``checkpoint`` and
            optionally ``name``), 'dlib' (dlib's face recogniser; arg ``channel_order``, default 'rgb';
            skipped with a warning when its optional packages are missing) or 'inverted' (anonymized faces
            restored by an inverter before another attacker embeds them; args ``inverter``, ``attacker``).
            Names must be unique.
            Defaults to ``(dict(type='discriminator'), )``.
        far (float): False accept rate of the reported TAR, in (0, 1). Defaults to 0.01.
        max_pairs (int): Verification pairs above which negatives are subsampled. Defaults to 4_000_000.
        seed (int): Seed of that subsample. Defaults to 0.
        collect_device (str): Device for collecting results across ranks, 'cpu' or 'gpu'. Defaults to 'cpu'.
        prefix (str, optional): Prefix of the metric names. Defaults to None, meaning 'privacy'.
        collect_dir (str, optional): Directory shared by the ranks to collect results through, with
            ``collect_device='cpu'``. Defaults to None.
    """

    default_prefix: Optional[str] = 'privacy'

    def __init__(self,
                 attackers: Sequence[dict] = (dict(type='discriminator'), ),
                 far: float = 0.01,
                 max_pairs: int = 4_000_000,
                 seed: int = 0,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None,
                 collect_dir: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix, collect_dir=collect_dir)
        if not 0 < far < 1:
            raise ValueError(f'far must be in (0, 1), got {far}')
        if max_pairs < 1:
            raise ValueError(f'max_pairs must be positive, got {max_pairs}')
        if not attackers:
            raise ValueError('attackers must name at least one attacker config, got none')
        self.far = far
        self.max_pairs = max_pairs
        self.seed = seed
        self.attackers = []
        for cfg in attackers:
            try:
                self.attackers.append(build_attacker(cfg))
            except AttackerUnavailable as e:
                print_log(f'{type(self).__name__} skips an attacker: {e}', logger='current', level=logging.WARNING)
        names = [attacker.name for attacker in self.attackers]
        if len(set(names)) != len(names):
            raise ValueError(f'attacker names must be unique, got {names}; give them a `name`')
        self._warned = set()

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            print_log(f'{type(self).__name__}: {message}', logger='current', level=logging.WARNING)

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        """Embed the known faces of a batch with every attacker and keep their embeddings and identities.

        Args:
            data_batch: The batch from the dataloader; unused.
            data_samples (Sequence[dict]): The model's outputs, each with optional ``'faces'``.
        """
        results = [dict(identities=np.zeros(0, dtype=np.int64), embeddings={}, video=sample.get('video_id'))
                   for sample in data_samples]
        faces, with_faces = [], []
        for i, sample in enumerate(data_samples):
            known_faces = self._known_faces(sample.get('faces'))
            if known_faces is not None:
                faces.append(known_faces)
                with_faces.append(results[i])
                results[i]['identities'] = known_faces['identities'].cpu().numpy().astype(np.int64)
        if faces:
            for attacker in self.attackers:
                for result, embeddings in zip(with_faces, attacker.embed_faces(faces)):
                    if embeddings is None:
                        self._warn_once(
                            attacker.name, f'the faces carry no raw_embeddings/anonymized_embeddings, so the '
                            f'{attacker.name!r} attacker is skipped (does the model attach its discriminator\'s '
                            'embeddings to the faces?)')
                    else:
                        result['embeddings'][attacker.name] = embeddings
        self.results.extend(results)

    @staticmethod
    def _reidentification(attacker, identities: np.ndarray, videos: np.ndarray, raw: np.ndarray,
                          anonymized: np.ndarray) -> Dict[str, Reidentification]:
        """Top-1, chance and majority-guess rate of each protocol the attacker supports (see the class)."""
        rates = dict(raw_gallery=(*reidentification_top1(anonymized, identities, raw, identities),
                                  majority_rate(identities, identities)))
        top1, chance, counted = leave_one_out_top1(anonymized, identities, videos)
        rates['anon_gallery'] = (top1, chance, majority_rate(identities[counted], identities))
        if attacker.train_gallery is not None:
            gallery_ids, templates = attacker.train_gallery
            rates['train_gallery'] = (*template_top1(anonymized, identities, gallery_ids, templates),
                                      majority_rate(identities, gallery_ids))
        predicted = attacker.classify(anonymized)
        if predicted is not None:
            rates['classifier'] = (*classification_top1(predicted, identities, attacker.classes),
                                   majority_rate(identities, attacker.classes))
        return rates

    @staticmethod
    def _videos(results: list) -> np.ndarray:
        """(F,) a group number per face of the results: one per ``video_id``, and a face of a sample without
        one (a photo of a face-identity dataset) in a group of its own."""
        numbers, groups = {}, []
        for result in results:
            for _ in result['identities']:
                key = result['video'] if result['video'] is not None else (len(groups), )
                groups.append(numbers.setdefault(key, len(numbers)))
        return np.asarray(groups, dtype=np.int64)

    @staticmethod
    def _known_faces(faces) -> Optional[dict]:
        """The faces of known identity of one sample, or None when there are none."""
        if faces is None:
            return None
        if isinstance(faces, BaseDataElement):
            faces = faces.to_dict()
        missing = [key for key in REQUIRED_FACE_KEYS if key not in faces]
        if missing:
            raise KeyError(f"data sample 'faces' lacks {missing}; it has {sorted(faces)}")
        # Other fields (boxes, meta information) are of no use here and are left behind.
        used = {key: faces[key] for key in REQUIRED_FACE_KEYS + EMBEDDING_KEYS if key in faces}
        num_faces = len(used['identities'])
        for key, value in used.items():
            if len(value) != num_faces:
                raise ValueError(f"data sample 'faces' has {num_faces} identities but {len(value)} {key}")
        known = used['identities'] >= 0
        if not known.any():
            return None
        return {key: value[known] for key, value in used.items()}

    def compute_metrics(self, results: list) -> dict:
        """Privacy measures per attacker over all processed faces.

        Args:
            results (list): One entry per data sample, from :meth:`process`.

        Returns:
            dict[str, float]: The measures, named as in the class description.
        """
        all_identities = np.concatenate([result['identities'] for result in results]) if results else np.zeros(0)
        metrics = dict(num_faces=len(all_identities), reid_majority=majority_rate(all_identities, all_identities))
        worst_of_attackers = {}
        for attacker in self.attackers:
            name = attacker.name
            used = [result for result in results if name in result['embeddings']]
            if not used:
                continue
            identities = np.concatenate([result['identities'] for result in used])
            videos = self._videos(used)
            raw, anonymized = (np.concatenate([result['embeddings'][name][k] for result in used]) for k in (0, 1))
            if len(np.unique(identities)) < 2:
                self._warn_once(f'{name}/identities', f'the {name!r} attacker saw fewer than two identities, so '
                                'its roc_auc and TAR are NaN')
            rates = self._reidentification(attacker, identities, videos, raw, anonymized)
            for protocol, rate in rates.items():
                metrics.update(zip((f'{name}/{protocol}/{key}' for key in ('top1', 'chance', 'majority')), rate))
            worst = worst_case(rates)
            if worst is not None:
                protocol, rate = worst
                metrics.update(zip((f'{name}/worst_case/{key}' for key in ('top1', 'chance', 'majority')), rate))
                metrics[f'{name}/worst_case/protocol'] = protocol
                worst_of_attackers[f'{name}/{protocol}'] = rate
            auc, tar = verification_scores(raw, identities, anonymized, identities, self.far, self.max_pairs,
                                           self.seed)
            metrics.update({
                f'{name}/roc_auc': auc,
                f'{name}/tar@far={self.far:g}': tar,
                f'{name}/raw_anon_similarity': mean_pair_similarity(raw, anonymized),
            })
        worst = worst_case(worst_of_attackers)
        if worst is not None:
            protocol, rate = worst
            metrics.update(zip((f'worst_case/{key}' for key in ('top1', 'chance', 'majority')), rate))
            metrics['worst_case/protocol'] = protocol
        return metrics
