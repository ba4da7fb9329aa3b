"""The video tool's media threads: read_ahead and VideoWriter's background encoder keep order, content and
errors as the plain loop would."""
import contextlib
import os
import threading
from fractions import Fraction

import av
import numpy as np
import pytest

from mmanon.apis.media_io import H264_OPTIONS, VideoReader, VideoWriter, read_ahead
from av_clips import audio_packets, write_clip  # noqa: I100  (tests/apis is on sys.path)


def frames(count=12, width=64, height=48, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, width, 3), np.uint8) for _ in range(count)]


def test_read_ahead_keeps_order_and_raises_where_the_iteration_failed():

    def items():
        yield from range(20)
        raise ValueError('frame 20 is broken')

    got = []
    with pytest.raises(ValueError, match='frame 20'):
        for item in read_ahead(items(), depth=3):
            got.append(item)
    assert got == list(range(20))


def test_read_ahead_closed_early_stops_its_thread_and_closes_the_iterator():
    closed = threading.Event()

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    before = threading.active_count()
    with contextlib.closing(read_ahead(endless(), depth=2)) as items:
        assert [next(items) for _ in range(5)] == [0, 1, 2, 3, 4]
    assert closed.is_set() and threading.active_count() == before


def test_background_encoding_writes_the_packets_of_the_plain_loop(tmp_path):
    """The writer's thread changes when frames are encoded, not what is written: the same H.264 packets as
    encoding each frame in the caller's thread."""
    clip = frames()
    writer = VideoWriter(str(tmp_path / 'threaded.mp4'), 64, 48, Fraction(25))
    for frame in clip:
        writer.write(frame)
    writer.finish()
    with av.open(str(tmp_path / 'plain.mp4'), 'w') as container:
        stream = container.add_stream('libx264', rate=25, options=dict(H264_OPTIONS))
        stream.width, stream.height, stream.pix_fmt = 64, 48, 'yuv420p'
        stream.time_base = stream.codec_context.time_base = Fraction(1, 25)
        for i, frame in enumerate(clip):
            video_frame = av.VideoFrame.from_ndarray(frame, format='bgr24')
            video_frame.pts, video_frame.time_base = i, Fraction(1, 25)
            container.mux(stream.encode(video_frame))
        container.mux(stream.encode(None))

    def packets(path):
        with av.open(str(path)) as container:
            return [(p.pts, bytes(p)) for p in container.demux(video=0) if p.size]

    assert len(packets(tmp_path / 'threaded.mp4')) == len(clip)
    assert packets(tmp_path / 'threaded.mp4') == packets(tmp_path / 'plain.mp4')


def test_audio_read_ahead_is_copied_to_its_last_packet(tmp_path):
    """The audio after the last video frame is muxed once the reader is done: the input must stay open until
    then (closing it at the end of the iteration lost the last 3 packets of the Hamilton clip)."""
    source = tmp_path / 'talk.mp4'
    # More audio than video: the last packets come after the last frame.
    assert write_clip(source, frames(), fps=25, audio_seconds=1.5) > 20
    reader = VideoReader(str(source))
    writer = VideoWriter(str(tmp_path / 'out.mp4'), 64, 48, reader.rate, reader.time_base, reader.audio_streams)
    with contextlib.closing(read_ahead(reader)) as items:
        for kind, item in items:
            if kind == 'audio':
                writer.write_audio(item)
            else:
                writer.write(*item)
    writer.finish()
    reader.close()
    assert audio_packets(tmp_path / 'out.mp4') == audio_packets(source)


def test_an_encoder_error_reaches_the_caller_and_nothing_is_left(tmp_path):
    out = tmp_path / 'out.mp4'
    writer = VideoWriter(str(out), 64, 48, Fraction(25))
    writer.write(frames(1)[0])
    # A four-channel frame fails in the encoder's thread (not BGR); the caller hears of it by its next call but one
    # at the latest.
    writer.write(np.zeros((48, 64, 4), np.uint8))
    with pytest.raises(ValueError):
        for frame in frames(40):
            writer.write(frame)
        writer.finish()
    writer.abort()
    assert os.listdir(tmp_path) == []
