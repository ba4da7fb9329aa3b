"""Time the safe proposal loading of ``mmanon.AVAFaceDataset`` against mmaction2's full unpickling.

An AVA-sized proposal file is generated (235 videos x 897 keyframes, 1 to 19 proposals of 5 values each, as
float32 like the FAIR files) and loaded by ``mmengine.load`` (what ``AVADataset`` does: full unpickling, no
checks) and by :func:`mmanon.datasets.ava_face_dataset.load_proposal_file` (an allow-list unpickler, then every
entry validated); the best of ``--repeats`` runs of each and their ratio are printed.

    python benchmarks/proposal_loading.py
"""
import argparse
import os
import os.path as osp
import pickle
import tempfile
import time

import numpy as np
from mmengine import load

import mmanon  # noqa: F401
from mmanon.datasets.ava_face_dataset import load_proposal_file
from timing import machine  # noqa: E402  (benchmarks/ is on sys.path as the script's folder)


def parse_args():
    parser = argparse.ArgumentParser(description='Time safe proposal loading against full unpickling.')
    parser.add_argument('--videos', type=int, default=235, help='videos of the file (default: 235, AVA train)')
    parser.add_argument('--keyframes', type=int, default=897, help='keyframes per video (default: 897)')
    parser.add_argument('--repeats', type=int, default=3, help='runs of each loader; the best counts (default: 3)')
    return parser.parse_args()


def proposal_file(path: str, videos: int, keyframes: int) -> int:
    """Write a proposal file of random normalised boxes and scores; returns its number of entries."""
    rng = np.random.default_rng(0)
    proposals = {}
    for video in range(videos):
        for timestamp in range(902, 902 + keyframes):
            count = int(rng.integers(1, 20))
            corners = np.sort(rng.random((count, 2, 2), dtype=np.float32), axis=1).reshape(count, 4)
            proposals[f'video{video:04d},{timestamp:04d}'] = np.concatenate(
                [corners, rng.random((count, 1), dtype=np.float32)], axis=1)
    with open(path, 'wb') as f:
        pickle.dump(proposals, f)
    return len(proposals)


def best_seconds(load_file, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        load_file()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    args = parse_args()
    print(f'machine: {machine()}')
    with tempfile.TemporaryDirectory() as tmp:
        path = osp.join(tmp, 'proposals.pkl')
        entries = proposal_file(path, args.videos, args.keyframes)
        print(f'proposal file: {entries} entries, {os.path.getsize(path) / 1e6:.1f} MB')
        stock = best_seconds(lambda: load(path), args.repeats)
        safe = best_seconds(lambda: load_proposal_file(path), args.repeats)
    print('| loader | seconds | ratio |\n|---|---|---|')
    print(f'| mmengine.load (mmaction2 AVADataset: full unpickling) | {stock:.2f} | 1.00 |')
    print(f'| load_proposal_file (mmanon.AVAFaceDataset: allow-list + validation) | {safe:.2f} | {safe / stock:.2f} |')


if __name__ == '__main__':
    main()
