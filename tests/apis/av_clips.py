"""Videos with audio for the tests, written with PyAV from frames the test gives."""
import av
import numpy as np

AUDIO_RATE = 16000


def write_clip(path, frames, fps=25, audio_seconds=None):
    """Write BGR frames as H.264 (``faststart``, index first) with, optionally, a 440 Hz AAC tone.

    Returns:
        int: Audio packets written (0 without audio).
    """
    options = dict(movflags='+faststart') if str(path).endswith('.mp4') else {}
    with av.open(str(path), 'w', options=options) as container:
        video = container.add_stream('libx264', rate=fps)
        video.width, video.height, video.pix_fmt = frames[0].shape[1], frames[0].shape[0], 'yuv420p'
        audio = None
        if audio_seconds:
            audio = container.add_stream('aac', rate=AUDIO_RATE)
            audio.layout = 'mono'
        for frame in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(frame, format='bgr24')))
        container.mux(video.encode(None))
        if audio is None:
            return 0
        t = np.arange(int(AUDIO_RATE * audio_seconds)) / AUDIO_RATE
        samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
        packets = 0
        for start in range(0, samples.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, start:start + 1024]), format='fltp',
                                               layout='mono')
            frame.sample_rate, frame.pts = AUDIO_RATE, start
            encoded = audio.encode(frame)
            packets += len(encoded)
            container.mux(encoded)
        encoded = audio.encode(None)
        container.mux(encoded)
        return packets + len(encoded)


def audio_packets(path):
    """The audio packets of a file, as (pts, bytes)."""
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return []
        return [(p.pts, bytes(p)) for p in container.demux(container.streams.audio[0]) if p.dts is not None]

