"""Image sequences: images batched into one MP4, in the order given, one frame each.

Encord plays an image sequence as a video, so every image must have the same size and
none may be a TIFF. Input images are checked from their headers before anything is
written, then decoded, converted and encoded as a stream: at most a few frames are
held in memory at once, whatever the length of the sequence.
"""

from __future__ import annotations

import io
import math
from collections import deque
from collections.abc import Collection, Generator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
from av.video.frame import PictureType
from av.video.reformatter import ColorPrimaries, ColorRange, Colorspace, ColorTrc, Interpolation
from PIL import Image, UnidentifiedImageError

# 25 fps is what FFmpeg's image2 demuxer gives a folder of images by default (so tools
# built on FFmpeg make the same video from the same images), and its frame period, 40 ms,
# is a whole number of milliseconds, so frame n starts exactly at n * 40 ms and players
# that seek by time land on the right frame.
SEQUENCE_FPS = 25.0
SEQUENCE_MIME = "video/mp4"
SEQUENCE_PIX_FMT = "yuv420p"  # the only H.264 pixel format that every browser plays

# Decoding the input images (PNG above all) costs as much as encoding them, so it runs
# on worker threads (FFmpeg, Pillow and swscale release the GIL) while the encoder runs.
PREPARE_THREADS = 2
PREPARE_AHEAD = 2 * PREPARE_THREADS + 2  # frames decoded ahead of the encoder, at most

CHROMA_INTERPOLATION = Interpolation.AREA
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HIGH_BIT_DEPTH_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")
REFUSED_FORMATS = {"TIFF": "TIFF"}  # Pillow format -> the name people know it by


class SequenceRefused(ValueError):
    """The images cannot make an image sequence; the message says why, for people."""


@dataclass(frozen=True)
class Encoder:
    """An FFmpeg encoder and the options that keep decoded frames close to the images."""

    name: str  # the FFmpeg encoder, e.g. "libx264"
    codec: str  # the codec as ffprobe reports it, e.g. "h264"
    options: Mapping[str, str] = field(default_factory=dict)


X264 = Encoder("libx264", "h264", {
    # CRF 18 is near visually lossless: decoded frames stay within a few levels of
    # the images. "superfast" keeps a 640x480 sequence above 100 frames/s on two cores,
    # PNG decoding included; slower presets buy a smaller file, not a closer picture.
    "crf": "18",
    "preset": "superfast",
    # No B-frames: decode order is display order, so frame n is at n / fps with no
    # edit list, and a player seeking to a frame decodes nothing after it.
    "bf": "0",
})
MPEG4 = Encoder("mpeg4", "mpeg4", {
    # A fixed quantiser of 2 (the best but one): MPEG-4 Part 2 has no CRF.
    "flags": "+qscale",
    "global_quality": str(2 * 118),  # 2 * FF_QP2LAMBDA
})


def encoder_for(available: Collection[str]) -> Encoder:
    """H.264 through libx264 when this FFmpeg has it, MPEG-4 Part 2 otherwise."""
    return X264 if X264.name in available else MPEG4


SEQUENCE_ENCODER = encoder_for(av.codecs_available)
SEQUENCE_CODEC = SEQUENCE_ENCODER.codec


@dataclass(frozen=True)
class SequenceInfo:
    """What was encoded. Width and height are those of the video, which may be one pixel
    larger than the images' (see `encode_sequence`)."""

    width: int
    height: int
    frames: int
    fps: float
    duration: float
    codec: str
    mime: str = SEQUENCE_MIME


def size_of(image: bytes | Path) -> tuple[int, int]:
    """(width, height) from the image's header: the pixels are not decoded.

    Raises SequenceRefused when the content is not an image Pillow can read.
    """
    return _header(image, 0)[1]


def group_by_size(sizes: Sequence[tuple[str, int, int]]) -> dict[tuple[int, int], list[str]]:
    """Names grouped by (width, height), each group keeping the input order; used to make
    one sequence per size. Groups come in the order their size first appears."""
    groups: dict[tuple[int, int], list[str]] = {}
    for name, width, height in sizes:
        groups.setdefault((width, height), []).append(name)
    return groups


def encode_sequence(images: Sequence[bytes | Path], out: BinaryIO | Path,
                    fps: float = SEQUENCE_FPS) -> SequenceInfo:
    """Encode the images (all the same size), in the given order, one frame each.

    yuv420p needs an even width and height, so an odd-sized sequence gets one more
    column or row, copied from the edge (never scaled): SequenceInfo reports the size
    of the video, which is then one pixel larger than the images. Images of any mode
    are read as RGB: alpha is dropped (as FFmpeg does), palettes and greyscale are
    expanded, 16-bit samples are scaled to 8 bits. Pixels are taken as stored, without
    EXIF orientation, so that the header's size is the frame's size; an animated image
    gives its first frame. `fps` is kept as a fraction (29.97 -> 2997/100).

    Raises SequenceRefused, before anything is written, when there are no images, one
    is a TIFF (by content, whatever its name), one is not an image, or the sizes
    differ; and, while encoding, when an image's pixels cannot be decoded. Then a
    partly written `out` path is removed; a file object is left as it is.
    """
    rate = Fraction(fps).limit_denominator(1001) if math.isfinite(fps) else Fraction(0)
    if rate <= 0:
        raise ValueError(f"fps must be a positive number, not {fps!r}")
    size = _common_size(images)
    encoder = SEQUENCE_ENCODER
    try:
        frames = _encode(images, out, size, rate, encoder)
    except BaseException:
        if isinstance(out, Path):
            out.unlink(missing_ok=True)
        raise
    width, height = _even(size)
    return SequenceInfo(width=width, height=height, frames=frames, fps=float(rate),
                        duration=frames / float(rate), codec=encoder.codec)


def _common_size(images: Sequence[bytes | Path]) -> tuple[int, int]:
    """The one size of all the images, read from their headers, or SequenceRefused."""
    if len(images) < 1:
        raise SequenceRefused("an image sequence needs at least one image, and none was given")
    first: tuple[int, int] | None = None
    for index, image in enumerate(images):
        fmt, size = _header(image, index)
        if fmt in REFUSED_FORMATS:
            raise SequenceRefused(
                f"{_label(image, index)} is a {REFUSED_FORMATS[fmt]} image, and Encord does not "
                f"accept {REFUSED_FORMATS[fmt]} in image sequences: convert it to PNG or JPEG, "
                "or upload the images as an image group")
        if first is None:
            first = size
        elif size != first:
            raise SequenceRefused(
                f"all the images of a sequence must have the same size, but {_label(image, index)} "
                f"is {size[0]}x{size[1]} and {_label(images[0], 0)} is {first[0]}x{first[1]}: "
                "make one sequence per size")
    assert first is not None
    return first


def _encode(images: Sequence[bytes | Path], out: BinaryIO | Path, size: tuple[int, int],
            rate: Fraction, encoder: Encoder) -> int:
    width, height = _even(size)
    count = 0
    with _output(out) as container:
        stream = container.add_stream(encoder.name, rate=rate, options=dict(encoder.options))
        stream.width, stream.height, stream.pix_fmt = width, height, SEQUENCE_PIX_FMT
        stream.time_base = time_base = 1 / rate  # the muxer may change the stream's later
        # sRGB shares BT.709's primaries; tagging them stops players guessing by frame size.
        context = stream.codec_context
        context.colorspace, context.color_range = Colorspace.ITU709, ColorRange.MPEG
        context.color_primaries, context.color_trc = ColorPrimaries.BT709, ColorTrc.BT709
        with closing(_frames(images, size)) as frames:
            for frame in frames:
                frame.pts, frame.time_base, frame.duration = count, time_base, 1
                # A decoded PNG is marked as a key frame, and libx264 obeys: every frame a
                # key frame and the file grows several times over. Let the encoder choose.
                frame.pict_type, frame.key_frame = PictureType.NONE, False
                container.mux(stream.encode(frame))
                count += 1
        container.mux(stream.encode(None))
    return count


def _output(out: BinaryIO | Path) -> av.container.OutputContainer:
    """An MP4 muxer. A file gets its index first (faststart) so players can start before
    the end has arrived; a file object cannot, as FFmpeg reopens the output by name to
    move the index."""
    if isinstance(out, Path):
        return av.open(str(out), "w", format="mp4", options={"movflags": "+faststart"})
    return av.open(out, "w", format="mp4")


def _frames(images: Sequence[bytes | Path],
            size: tuple[int, int]) -> Generator[av.VideoFrame, None, None]:
    """Encoder-ready frames, in order, decoded a few at a time on worker threads."""
    pool = ThreadPoolExecutor(max_workers=PREPARE_THREADS, thread_name_prefix="sequence")
    pending: deque[Future[av.VideoFrame]] = deque()
    try:
        for index, image in enumerate(images):
            pending.append(pool.submit(_frame, image, index, size))
            if len(pending) >= PREPARE_AHEAD:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _frame(image: bytes | Path, index: int, size: tuple[int, int]) -> av.VideoFrame:
    """One image as a yuv420p frame of even size, limited-range BT.709."""
    data = _read(image, index)
    frame = None
    if data.startswith(PNG_SIGNATURE) and _even(size) == size:
        frame = _png_frame(data)
    if frame is None:
        frame = _pillow_frame(data, _label(image, index))
    if (frame.width, frame.height) != _even(size):  # the file changed since its header was read
        raise SequenceRefused(f"{_label(image, index)} changed size while the sequence was encoded")
    # AREA averages each 2x2 block for the chroma planes: the closest to the image, and
    # cheaper than the default bilinear. The workers are the threads, so swscale needs none.
    return frame.reformat(format=SEQUENCE_PIX_FMT, src_colorspace=Colorspace.ITU709,
                          dst_colorspace=Colorspace.ITU709, src_color_range=ColorRange.JPEG,
                          dst_color_range=ColorRange.MPEG, interpolation=CHROMA_INTERPOLATION,
                          threads=1)


def _png_frame(data: bytes) -> av.VideoFrame | None:
    """A PNG decoded by FFmpeg, in its own pixel format (rgb24, rgba, gray, pal8, 16-bit...),
    or None to leave it to Pillow.

    FFmpeg's PNG decoder is two to three times faster than Pillow's, and PNG decoding is
    most of the cost of a sequence. It is stricter (it refuses a file without its final
    chunk, which Pillow reads), hence the fallback. A decoder is made per image: one
    that is reused hands back wrong pixels from the second image on.
    """
    decoder = av.CodecContext.create("png", "r")
    try:
        frames = decoder.decode(av.Packet(data)) + decoder.decode(None)
    except av.FFmpegError:
        return None
    return frames[0] if frames else None


def _pillow_frame(data: bytes, label: str) -> av.VideoFrame:
    try:
        with Image.open(io.BytesIO(data)) as img:
            return av.VideoFrame.from_image(_pad_to_even(_rgb(img)))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise SequenceRefused(f"{label} could not be decoded: {exc}") from exc


def _rgb(img: Image.Image) -> Image.Image:
    """The image's pixels as 8-bit RGB, decoded (this is where a corrupt body fails)."""
    img.load()
    if img.mode in HIGH_BIT_DEPTH_MODES:
        # Pillow clips these to 0-255 on conversion; scale them down instead.
        img = img.convert("I").point(lambda v: v * (1 / 256))
    return img.convert("RGB") if img.mode != "RGB" else img


def _pad_to_even(img: Image.Image) -> Image.Image:
    """The image with its last column and/or row repeated once when its size is odd."""
    width, height = img.size
    even_width, even_height = _even(img.size)
    if (even_width, even_height) == (width, height):
        return img
    padded = Image.new("RGB", (even_width, even_height))
    padded.paste(img, (0, 0))
    if even_width != width:
        padded.paste(img.crop((width - 1, 0, width, height)), (width, 0))
    if even_height != height:
        padded.paste(padded.crop((0, height - 1, even_width, height)), (0, height))
    return padded


def _even(size: tuple[int, int]) -> tuple[int, int]:
    return size[0] + size[0] % 2, size[1] + size[1] % 2


def _header(image: bytes | Path, index: int) -> tuple[str, tuple[int, int]]:
    """Pillow's format name and the size, from the header alone."""
    try:
        with Image.open(io.BytesIO(image) if isinstance(image, bytes) else image) as img:
            return img.format or "", img.size
    except (UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise SequenceRefused(f"{_label(image, index)} is not an image that can be read: {exc}") from exc
    except OSError as exc:
        raise SequenceRefused(f"{_label(image, index)} could not be read: {exc}") from exc


def _read(image: bytes | Path, index: int) -> bytes:
    if isinstance(image, bytes):
        return image
    try:
        return image.read_bytes()
    except OSError as exc:
        raise SequenceRefused(f"{_label(image, index)} could not be read: {exc}") from exc


def _label(image: bytes | Path, index: int) -> str:
    """How a message names an image: by its file name, else by its place in the sequence."""
    if isinstance(image, Path):
        return f"'{image.name}'"
    return f"image {index + 1}"
