"""Image sequences encoded for real (libx264 through PyAV) and decoded back to compare
every frame with the image it came from."""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from encfs.media import sequence
from encfs.media.probe import probe
from encfs.media.sequence import SequenceRefused, encode_sequence, group_by_size, size_of
from encfs.model import Kind

CLOSE = 6.0  # mean absolute difference per channel, on 0-255, between a frame and its image


def pixels(index: int, size: tuple[int, int] = (64, 48), seed: int = 0) -> np.ndarray:
    """A natural-ish RGB image: gradients that move with the index, a brightness that
    rises with it, and a little noise."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = 30 + 15 * index
    wave = 40 * np.sin((x + y + 3 * index) / 9)
    rgb = np.stack([base + x * 1.5, base + y * 1.5 + 2 * index, base + wave], -1)
    rgb += np.random.default_rng(seed + index).normal(0, 2, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def encoded(img: Image.Image | np.ndarray, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    (Image.fromarray(img) if isinstance(img, np.ndarray) else img).save(out, format=fmt)
    return out.getvalue()


def decode(video: bytes | Path) -> tuple[list[np.ndarray], av.video.stream.VideoStream]:
    """Every frame as RGB (converted as the file's colour tags say), and the stream."""
    source = io.BytesIO(video) if isinstance(video, bytes) else str(video)
    with av.open(source) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    return frames, stream


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def test_frames_come_back_in_order_close_to_their_images() -> None:
    sources = [pixels(i) for i in range(10)]
    out = io.BytesIO()
    info = encode_sequence([encoded(s) for s in sources], out)
    assert info == sequence.SequenceInfo(width=64, height=48, frames=10, fps=25.0, duration=0.4,
                                         codec=sequence.SEQUENCE_CODEC, mime="video/mp4")
    frames, stream = decode(out.getvalue())
    assert len(frames) == stream.frames == 10
    assert stream.average_rate == 25 and stream.codec_context.name == sequence.SEQUENCE_CODEC == "h264"
    assert float(stream.duration * stream.time_base) == pytest.approx(0.4)
    for index, frame in enumerate(frames):
        assert frame.shape == (48, 64, 3)
        distances = [mad(frame, source) for source in sources]
        assert distances[index] < CLOSE
        assert min(range(len(sources)), key=distances.__getitem__) == index  # its own image
    brightness = [frame.mean() for frame in frames]
    assert brightness == sorted(brightness)


def test_probe_reads_what_encode_sequence_reports() -> None:
    out = io.BytesIO()
    info = encode_sequence([encoded(pixels(i)) for i in range(6)], out)
    media = probe(out.getvalue())
    assert (media.kind, media.mime) == (Kind.VIDEO, info.mime)
    assert (media.width, media.height, media.frames) == (info.width, info.height, info.frames)
    assert (media.fps, media.duration) == (pytest.approx(info.fps), pytest.approx(info.duration))


def test_frame_rate_is_kept_as_a_fraction() -> None:
    out = io.BytesIO()
    info = encode_sequence([encoded(pixels(i)) for i in range(4)], out, fps=30000 / 1001)
    _, stream = decode(out.getvalue())
    assert stream.average_rate == Fraction(30000, 1001)
    assert info.fps == pytest.approx(29.97003)
    assert info.duration == pytest.approx(4 * 1001 / 30000)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="fps"):
            encode_sequence([encoded(pixels(0))], io.BytesIO(), fps=bad)


def test_encoder_chooses_its_frame_types() -> None:
    """A decoded PNG is flagged as a key frame; passed on, every frame would be one."""
    out = io.BytesIO()
    encode_sequence([encoded(pixels(0, seed=i)) for i in range(12)], out)
    with av.open(io.BytesIO(out.getvalue())) as container:
        keys = [packet.is_keyframe for packet in container.demux(video=0) if packet.size]
    assert len(keys) == 12 and sum(keys) == 1


def test_colours_survive_with_their_tags() -> None:
    """Saturated colours come back only if the matrix used to encode is the one the file
    is tagged with (BT.709 here); a BT.601/709 mix-up is off by far more than CLOSE."""
    bars = np.zeros((48, 64, 3), dtype=np.uint8)
    for column, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]):
        bars[:, column * 16:(column + 1) * 16] = colour
    out = io.BytesIO()
    encode_sequence([encoded(bars)], out)
    frames, stream = decode(out.getvalue())
    assert stream.codec_context.colorspace == 1 and stream.codec_context.color_range == 1  # BT.709, tv
    assert mad(frames[0][:, 2:14], bars[:, 2:14]) < CLOSE  # away from the edges chroma is shared across


@pytest.mark.parametrize("size", [(33, 17), (1, 1), (40, 21)])
def test_odd_sizes_are_padded_by_repeating_the_edge(size: tuple[int, int]) -> None:
    width, height = size
    source = pixels(3, size)
    out = io.BytesIO()
    info = encode_sequence([encoded(source)] * 2, out)
    assert (info.width, info.height) == (width + width % 2, height + height % 2)
    frames, _ = decode(out.getvalue())
    assert len(frames) == 2
    frame = frames[0]
    assert frame.shape == (info.height, info.width, 3)
    assert mad(frame[:height, :width], source) < CLOSE
    expected = np.pad(source, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
    assert mad(frame, expected) < CLOSE


@pytest.mark.parametrize(("mode", "fmt"), [
    ("RGBA", "PNG"), ("RGBA", "WEBP"), ("L", "PNG"), ("L", "JPEG"), ("P", "PNG"), ("P", "GIF"),
    ("LA", "PNG"), ("I;16", "PNG"), ("1", "PNG"), ("RGB", "BMP"), ("CMYK", "JPEG"),
])
def test_any_mode_is_read_as_rgb(mode: str, fmt: str) -> None:
    rgb = pixels(2)
    if mode == "I;16":
        grey = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.uint16)
        img = Image.fromarray(grey * 257)
        expected = np.repeat(grey[..., None], 3, axis=2)
    else:
        # an adaptive palette: a dithered one is noise that no 4:2:0 video keeps within CLOSE
        img = Image.fromarray(rgb).convert(mode, palette=Image.Palette.ADAPTIVE)
        if mode == "RGBA":
            img.putalpha(Image.linear_gradient("L").resize(img.size))
        expected = np.asarray(img.convert("RGB"))
        if fmt == "JPEG":  # lossy already: compare with what the JPEG holds
            expected = np.asarray(Image.open(io.BytesIO(encoded(img, fmt))).convert("RGB"))
    assert img.mode == mode
    out = io.BytesIO()
    encode_sequence([encoded(img, fmt)] * 2, out)
    frames, _ = decode(out.getvalue())
    assert len(frames) == 2
    assert mad(frames[0], expected) < CLOSE


def test_tiff_is_refused_by_its_content_not_its_name(tmp_path: Path) -> None:
    disguised = tmp_path / "frame.png"
    disguised.write_bytes(encoded(pixels(0), "TIFF"))
    fine = tmp_path / "fine.png"
    fine.write_bytes(encoded(pixels(1)))
    out = tmp_path / "out.mp4"
    with pytest.raises(SequenceRefused, match="TIFF") as refused:
        encode_sequence([fine, disguised], out)
    assert "'frame.png'" in str(refused.value)
    assert not out.exists()


def test_mixed_sizes_are_refused_and_grouped() -> None:
    images = {"a": encoded(pixels(0)), "b": encoded(pixels(1, (32, 32))), "c": encoded(pixels(2)),
              "d": encoded(pixels(3, (32, 32))), "e": encoded(pixels(4, (48, 64)))}
    out = io.BytesIO()
    with pytest.raises(SequenceRefused, match=r"32x32.*64x48") as refused:
        encode_sequence(list(images.values()), out)
    assert "image 2" in str(refused.value) and "image 1" in str(refused.value)
    assert out.getvalue() == b""
    groups = group_by_size([(name, *size_of(data)) for name, data in images.items()])
    assert groups == {(64, 48): ["a", "c"], (32, 32): ["b", "d"], (48, 64): ["e"]}
    assert list(groups) == [(64, 48), (32, 32), (48, 64)]
    for members in groups.values():
        info = encode_sequence([images[name] for name in members], io.BytesIO())
        assert info.frames == len(members)


def test_group_by_size_keeps_the_input_order() -> None:
    sizes = [("z", 2, 2), ("y", 4, 2), ("x", 2, 2), ("w", 4, 2), ("v", 2, 2)]
    assert group_by_size(sizes) == {(2, 2): ["z", "x", "v"], (4, 2): ["y", "w"]}
    assert group_by_size([]) == {}


def test_size_of_reads_the_header_of_bytes_and_files(tmp_path: Path) -> None:
    png = encoded(pixels(0, (31, 7)))
    (tmp_path / "p.png").write_bytes(png)
    assert size_of(png) == size_of(tmp_path / "p.png") == (31, 7)
    # a header alone is enough: the pixels are never decoded
    assert size_of(encoded(pixels(0, (300, 200)))[:64]) == (300, 200)
    with pytest.raises(SequenceRefused, match="not an image"):
        size_of(b"plain text, not an image")


def test_nothing_to_encode_is_refused() -> None:
    with pytest.raises(SequenceRefused, match="at least one image"):
        encode_sequence([], io.BytesIO())


def test_undecodable_images_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SequenceRefused, match="image 2 is not an image"):
        encode_sequence([encoded(pixels(0)), b"\x00" * 100], io.BytesIO())
    # a header that reads but a body that does not: refused while encoding
    truncated = encoded(pixels(1))
    truncated = truncated[: len(truncated) // 2]
    out = tmp_path / "partial.mp4"
    with pytest.raises(SequenceRefused, match="image 8 could not be decoded"):
        encode_sequence([encoded(pixels(0))] * 7 + [truncated], out)
    assert not out.exists()


def test_a_png_without_its_last_chunk_is_still_read() -> None:
    """FFmpeg's PNG decoder refuses it, Pillow reads it: the encoder falls back."""
    png = encoded(pixels(5))
    assert png.endswith(b"IEND\xaeB`\x82")
    out = io.BytesIO()
    encode_sequence([png[:-12], png], out)
    frames, _ = decode(out.getvalue())
    assert all(mad(frame, pixels(5)) < CLOSE for frame in frames)


def test_paths_in_and_a_file_out(tmp_path: Path) -> None:
    paths = []
    for index in range(5):
        paths.append(tmp_path / f"{index:03}.jpg")
        paths[-1].write_bytes(encoded(pixels(index), "JPEG"))
    out = tmp_path / "seq.mp4"
    info = encode_sequence(paths, out)
    frames, stream = decode(out)
    assert len(frames) == info.frames == stream.frames == 5
    data = out.read_bytes()
    assert data[4:8] == b"ftyp"
    assert data.index(b"moov") < data.index(b"mdat")  # faststart: the index comes first
    for frame, index in zip(frames, range(5), strict=True):
        assert mad(frame, pixels(index)) < CLOSE + 2  # JPEG's own loss on top


def test_writes_to_a_file_object() -> None:
    out = io.BytesIO()
    info = encode_sequence([encoded(pixels(i)) for i in range(3)], out)
    assert not out.closed
    data = out.getvalue()
    assert data[4:8] == b"ftyp"
    frames, _ = decode(data)
    assert len(frames) == info.frames == 3


def test_mpeg4_when_libx264_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    assert sequence.encoder_for({"libx264", "mpeg4"}).name == "libx264"
    fallback = sequence.encoder_for({"mpeg4"})
    monkeypatch.setattr(sequence, "SEQUENCE_ENCODER", fallback)
    sources = [pixels(i) for i in range(4)]
    out = io.BytesIO()
    info = encode_sequence([encoded(s) for s in sources], out)
    assert info.codec == "mpeg4"
    frames, stream = decode(out.getvalue())
    assert stream.codec_context.name == "mpeg4" and stream.average_rate == 25
    assert [mad(f, s) < CLOSE for f, s in zip(frames, sources, strict=True)] == [True] * 4
