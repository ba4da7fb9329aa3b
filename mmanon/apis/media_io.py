"""The media of the video tool: videos read and written with PyAV (FFmpeg), their audio, and image files.

Every output is first written to a hidden temporary file (or folder) beside its target, checked, and only
then renamed into place, so that a failure or an interruption never leaves a partial output.
"""
import os
import os.path as osp
import queue
import shutil
import tempfile
import threading
from fractions import Fraction
from typing import Iterable, Iterator, List, Optional, Tuple

import cv2
import numpy as np

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')
# The containers a video can be written to; any file FFmpeg reads can be an input.
VIDEO_OUTPUT_EXTENSIONS = ('.mp4', '.mov', '.mkv', '.avi')
# Frames written back as JPEG lose a little more on top of the input's compression; 95 keeps that invisible.
JPEG_QUALITY = 95
# x264's constant-quality mode at 18 is visually lossless; 'veryfast' encodes several times faster than the
# default 'medium' for a somewhat larger file, which keeps encoding from dominating the tool's time.
H264_OPTIONS = dict(crf='18', preset='veryfast')
# Frames decoded ahead of the detector and waiting behind it to be encoded: enough to ride out a frame with a
# detector run, few enough that a 4K video holds little memory.
QUEUED_FRAMES = 8
# How often a worker thread blocked on a full queue looks whether it was told to stop, in seconds.
STOP_POLL = 0.1


def is_image_file(path: str) -> bool:
    """Whether a path names an image by its extension."""
    return path.lower().endswith(IMAGE_EXTENSIONS)


def temporary_path(path: str, folder: bool = False) -> str:
    """A new hidden file (or folder) beside ``path``, named after it and marked ``.partial``.

    Args:
        path (str): The final output.
        folder (bool): Make a folder instead of a file. Defaults to False.

    Returns:
        str: The temporary path; the file or folder exists and is empty.
    """
    parent = osp.dirname(osp.abspath(path))
    name = osp.basename(osp.abspath(path))
    ext = '' if folder else osp.splitext(name)[1]
    try:
        if folder:
            return tempfile.mkdtemp(prefix=f'.{name}.', suffix='.partial', dir=parent)
        fd, temp = tempfile.mkstemp(prefix=f'.{name}.', suffix=f'.partial{ext}', dir=parent)
        os.close(fd)
        return temp
    except OSError as e:
        raise PermissionError(f'cannot write beside the output {path} in {parent}: {e.strerror}') from e


def remove_path(path: str) -> None:
    """Remove a file or a folder tree, if it exists."""
    if osp.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif osp.lexists(path):
        os.remove(path)


def move_into_place(temp: str, path: str) -> None:
    """Rename a finished temporary file or folder to ``path``, with the mode a normally created one gets.

    ``tempfile`` creates them private (0o600 / 0o700); the output should be as readable as any other.

    Args:
        temp (str): The temporary file or folder, in the folder of ``path``.
        path (str): The final name; an existing file (or, for a folder, an empty folder) is replaced.
    """
    umask = os.umask(0)
    os.umask(umask)
    is_dir = osp.isdir(temp)
    os.chmod(temp, (0o777 if is_dir else 0o666) & ~umask)
    if is_dir and osp.isdir(path):
        os.rmdir(path)
    os.replace(temp, path)


def read_ahead(items: Iterable, depth: int = QUEUED_FRAMES) -> Iterator:
    """Iterate in a background thread, up to ``depth`` items ahead of the consumer.

    FFmpeg decodes and converts frames without holding Python's GIL, so decoding the next frames overlaps the
    caller's detection and anonymization of this one. An exception of the iteration is raised to the consumer
    where it happened, after the items before it. Close the generator (``contextlib.closing``) when the
    consumer may stop early: closing stops the thread, closes the underlying iterator and waits for both.

    Args:
        items (Iterable): What to iterate, e.g. a :class:`VideoReader`.
        depth (int): Items that may wait for the consumer. Defaults to ``QUEUED_FRAMES``.

    Yields:
        The items of ``items``, in order.
    """
    buffer = queue.Queue(depth)
    stop = threading.Event()
    end = object()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                buffer.put(entry, timeout=STOP_POLL)
                return True
            except queue.Full:
                pass
        return False

    def produce(iterator):
        try:
            for item in iterator:
                if not put((None, item)):
                    return
            put((None, end))
        except BaseException as e:  # raised again in the consumer, in order
            put((e, None))
        finally:
            close = getattr(iterator, 'close', None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, args=(iter(items), ), name='read_ahead', daemon=True)
    thread.start()
    try:
        while True:
            error, item = buffer.get()
            if error is not None:
                raise error
            if item is end:
                return
            yield item
    finally:
        stop.set()
        thread.join()


class ImageFile:
    """An image file, read for anonymization and written back in its own layout.

    Colour images are read as OpenCV reads them for display (their EXIF orientation applied; the output, which
    carries no EXIF, then shows the same way). Grayscale images come back grayscale and the alpha channel of
    an image with one is kept as it was. Only 8-bit images are supported.

    Args:
        path (str): The image file.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        raw = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise ValueError(f'cannot read the image {path} (not an image, or a format OpenCV lacks)')
        if raw.dtype != np.uint8:
            raise ValueError(f'{path} has {raw.dtype} pixels; only 8-bit images are supported')
        if raw.ndim == 3 and raw.shape[2] not in (3, 4):
            raise ValueError(f'{path} has {raw.shape[2]} channels; expected 1, 3 or 4')
        self.layout = 'gray' if raw.ndim == 2 else 'bgra' if raw.shape[2] == 4 else 'bgr'
        if self.layout == 'gray':
            self.bgr = cv2.cvtColor(raw, cv2.COLOR_GRAY2BGR)
        elif self.layout == 'bgra':
            self.bgr, self.alpha = np.ascontiguousarray(raw[..., :3]), raw[..., 3:]
        else:
            self.bgr = cv2.imread(path, cv2.IMREAD_COLOR)

    def restore(self, bgr: np.ndarray) -> np.ndarray:
        """An anonymized BGR copy of the image in the image's own layout (grayscale, BGR or BGRA)."""
        if self.layout == 'gray':
            return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        if self.layout == 'bgra':
            return np.concatenate([bgr, self.alpha], axis=2)
        return bgr


def write_image(path: str, image: np.ndarray) -> None:
    """Write an image file in the format its extension names, JPEG at quality 95.

    Args:
        path (str): The file, written as is (callers write to a temporary name and rename).
        image (np.ndarray): (H, W), (H, W, 3) BGR or (H, W, 4) BGRA uint8.
    """
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if path.lower().endswith(('.jpg', '.jpeg')) else []
    # The temporary name ends in '.partial.<ext>'; OpenCV picks the encoder by the last extension.
    ok, encoded = cv2.imencode(osp.splitext(path)[1] or '.png', image, params)
    if not ok:
        raise OSError(f'cannot encode the image {path}')
    with open(path, 'wb') as f:
        f.write(encoded.tobytes())


class VideoReader:
    """The frames (BGR) and audio packets of a video file, in the file's order, decoded with PyAV.

    After the iteration, :attr:`frames` counts the decoded frames, and :attr:`truncated` tells whether the
    file held fewer than it declared or ended in a decoding error (:attr:`error`).

    Args:
        path (str): A video file FFmpeg can read.
    """

    def __init__(self, path: str) -> None:
        import av
        self._av = av
        self.path = path
        try:
            self.container = av.open(path)
        except (av.FFmpegError, UnicodeDecodeError) as e:
            raise ValueError(f'cannot open {path} as a video (not a video, or cut off before its index): '
                             f'{e}') from e
        if not self.container.streams.video:
            self.container.close()
            raise ValueError(f'{path} has no video stream')
        self.stream = self.container.streams.video[0]
        # Frame threads decode several frames at once: decoding is several times faster on more cores.
        self.stream.thread_type = 'AUTO'
        self.audio_streams = list(self.container.streams.audio)
        rate = self.stream.average_rate or self.stream.guessed_rate
        self.rate: Optional[Fraction] = Fraction(rate) if rate and rate > 0 else None
        self.time_base = self.stream.time_base
        self.declared_frames = self.stream.frames or None
        self.width, self.height = self.stream.codec_context.width, self.stream.codec_context.height
        self.frames = 0
        self.error: Optional[str] = None

    @property
    def truncated(self) -> bool:
        """Whether the video ended early: a decoding error, or fewer frames than it declared."""
        return self.error is not None or (self.declared_frames is not None and self.frames < self.declared_frames)

    def __iter__(self) -> Iterator[Tuple[str, object]]:
        """Yield ``('frame', (bgr, pts))`` for every decoded frame and ``('audio', packet)`` for every audio
        packet, in file order. A packet that does not decode is skipped (and recorded in :attr:`error`), as
        FFmpeg's players do; a frame of another size than the first raises ``ValueError``. The file stays open
        until :meth:`close`: a writer may copy the audio packets after the iteration ended, and they need it."""
        av = self._av
        try:
            for packet in self.container.demux(self.stream, *self.audio_streams):
                if packet.stream.type == 'audio':
                    if packet.dts is not None:
                        yield 'audio', packet
                    continue
                try:
                    frames = packet.decode()
                except av.FFmpegError as e:
                    self.error = self.error or f'a packet after frame {self.frames} did not decode: {e}'
                    continue
                for frame in frames:
                    if (frame.width, frame.height) != (self.width, self.height):
                        raise ValueError(f'{self.path}: frame {self.frames} is {frame.width}x{frame.height}, but '
                                         f'the video is {self.width}x{self.height}; videos that change size are '
                                         'not supported')
                    self.frames += 1
                    yield 'frame', (frame.to_ndarray(format='bgr24'), frame.pts)
        except av.FFmpegError as e:
            self.error = f'reading stopped after {self.frames} frames: {e}'

    def close(self) -> None:
        """Release the file (also when done already)."""
        self.container.close()


class VideoWriter:
    """Writes BGR frames (and remuxed audio packets) to a video file, through a temporary file.

    ``.mp4``, ``.mov`` and ``.mkv`` get H.264 (libx264, which PyAV's wheels ship) in yuv420p, the format
    browsers play; frames of an odd width or height, which yuv420p cannot hold, get yuv444p, which many
    browsers cannot play; without libx264 the video falls back to MPEG-4 part 2. ``.avi`` gets Motion JPEG.
    :attr:`codec` says which. MP4 and MOV files get their index at the front (``faststart``), so they play
    while downloading. Audio packets are copied as they are (no re-encoding) when the container can hold
    their codec, and dropped with a note in :attr:`audio` otherwise.

    Frames and packets are converted, encoded and written by a background thread, in the order given, up to
    ``QUEUED_FRAMES`` behind the caller: FFmpeg encodes without holding Python's GIL, so encoding overlaps the
    caller's work on the next frames. An error of that thread is raised by the next :meth:`write`,
    :meth:`write_audio` or :meth:`finish`.

    Args:
        path (str): The output file.
        width (int): Frame width.
        height (int): Frame height.
        rate (Fraction): Frame rate.
        time_base (Fraction, optional): Time base of the frames' ``pts`` (the input stream's), so that the
            input's frame timing is kept. Defaults to None: ``1 / rate``, and frames are numbered (always in
            ``.avi``, whose frames have one duration).
        audio_streams (list, optional): Input audio streams whose packets will be copied. Defaults to None.
    """

    def __init__(self,
                 path: str,
                 width: int,
                 height: int,
                 rate: Fraction,
                 time_base: Optional[Fraction] = None,
                 audio_streams: Optional[List] = None) -> None:
        import av
        self._av = av
        self.path, self.width, self.height, self.rate = path, width, height, Fraction(rate)
        self.ext = osp.splitext(path)[1].lower()
        self.temp = temporary_path(path)
        self.count = 0
        self.last_pts = None
        self.time_base = Fraction(time_base) if time_base and self.ext != '.avi' else 1 / self.rate
        self._jobs = queue.Queue(QUEUED_FRAMES)
        self._error: Optional[BaseException] = None
        self._dropping = False
        self._thread = None
        try:
            options = dict(movflags='+faststart') if self.ext in ('.mp4', '.mov') else {}
            self.container = av.open(self.temp, 'w', options=options)
            self.video = self._add_video_stream()
            self.audio_map = {}
            notes = []
            for stream in audio_streams or []:
                name = stream.codec_context.name
                if name in self.container.supported_codecs:
                    self.audio_map[stream.index] = self.container.add_stream_from_template(stream)
                    notes.append(f'{name} copied')
                else:
                    notes.append(f'{name} dropped ({self.ext} cannot hold it)')
            self.audio = ', '.join(notes) or 'none'
            self._thread = threading.Thread(target=self._run_jobs, name='VideoWriter', daemon=True)
            self._thread.start()
        except BaseException:
            self.abort()
            raise

    def _run_jobs(self) -> None:
        """The background thread: run the queued jobs in order until ``None``; after an error (or once told to
        drop them) the rest are only taken off the queue, so the caller never blocks on a full one."""
        while True:
            job = self._jobs.get()
            if job is None:
                return
            if self._error is None and not self._dropping:
                try:
                    job()
                except BaseException as e:  # raised again in the caller's thread
                    self._error = e

    def _submit(self, job) -> None:
        if self._error is not None:
            raise self._error
        self._jobs.put(job)

    def _stop_thread(self) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()
            self._thread = None

    def _add_video_stream(self):
        av = self._av
        if self.ext == '.avi':
            stream = self.container.add_stream('mjpeg', rate=self.rate)
            stream.pix_fmt, self.codec = 'yuvj420p', 'Motion JPEG'
        elif 'libx264' in av.codecs_available:
            stream = self.container.add_stream('libx264', rate=self.rate, options=dict(H264_OPTIONS))
            if self.width % 2 or self.height % 2:
                stream.pix_fmt = 'yuv444p'
                self.codec = ('H.264 (libx264) in yuv444p, as the frame size is odd; many browsers cannot play '
                              'it')
            else:
                stream.pix_fmt, self.codec = 'yuv420p', 'H.264 (libx264)'
        else:
            stream = self.container.add_stream('mpeg4', rate=self.rate)
            stream.pix_fmt, self.codec = 'yuv420p', 'MPEG-4 part 2 (this FFmpeg has no H.264 encoder)'
        stream.width, stream.height = self.width, self.height
        stream.time_base = self.time_base
        stream.codec_context.time_base = self.time_base
        return stream

    def write(self, frame: np.ndarray, pts: Optional[int] = None) -> None:
        """Append one BGR frame at ``pts`` (in ``time_base``); frames without one, or whose ``pts`` does not
        increase, are placed one frame duration after the previous one."""
        av = self._av
        if pts is None or self.ext == '.avi' or (self.last_pts is not None and pts <= self.last_pts):
            step = max(1, round(1 / (self.rate * self.time_base)))
            pts = 0 if self.last_pts is None else self.last_pts + step
        self.last_pts = pts
        self.count += 1

        def encode():
            video_frame = av.VideoFrame.from_ndarray(frame, format='bgr24')
            video_frame.pts, video_frame.time_base = pts, self.time_base
            self.container.mux(self.video.encode(video_frame))

        self._submit(encode)

    def write_audio(self, packet) -> None:
        """Copy one audio packet of an input stream given to the constructor (others are ignored)."""
        stream = self.audio_map.get(packet.stream.index)
        if stream is not None:

            def mux():
                packet.stream = stream
                self.container.mux(packet)

            self._submit(mux)

    def finish(self) -> None:
        """Flush the encoder, check the written file (frame count and size) and move it into place."""
        self._stop_thread()
        if self._error is not None:
            raise self._error
        self.container.mux(self.video.encode(None))
        self.container.close()
        written = video_properties(self.temp)
        expected = dict(frames=self.count, width=self.width, height=self.height)
        if any(written[k] != v for k, v in expected.items()):
            raise OSError(f'the video written for {self.path} does not match its input: wrote {expected}, '
                          f'read back {written}')
        move_into_place(self.temp, self.path)

    def abort(self) -> None:
        """Drop the frames still queued, close and remove the temporary file."""
        self._dropping = True
        self._stop_thread()
        container = getattr(self, 'container', None)
        if container is not None:
            try:
                container.close()
            except Exception:  # the file is removed anyway; an encoder that fails to flush must not mask why
                pass
        remove_path(self.temp)


def video_properties(path: str) -> dict:
    """Frame count, width and height of a video file, the count by decoding when the container lacks it."""
    import av
    with av.open(path) as container:
        stream = container.streams.video[0]
        frames = stream.frames or sum(1 for _ in container.decode(stream))
        return dict(frames=frames, width=stream.codec_context.width, height=stream.codec_context.height)
