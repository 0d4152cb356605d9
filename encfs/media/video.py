"""Videos through PyAV: size, duration, frame rate and frame count from the container."""

from __future__ import annotations

from typing import BinaryIO

from encfs.model import Kind, Media

FORMAT_MIME = {
    "mov": "video/mp4", "mp4": "video/mp4", "matroska": "video/x-matroska", "webm": "video/webm",
    "avi": "video/x-msvideo", "flv": "video/x-flv", "mpegts": "video/mp2t", "mpeg": "video/mpeg",
    "ogg": "video/ogg",
}


def _mime(format_name: str) -> str:
    for name in format_name.split(","):
        if name in FORMAT_MIME:
            return FORMAT_MIME[name]
    return "video/" + format_name.split(",")[0]


def probe_video(source: BinaryIO) -> Media:
    """A Media of kind video, or of kind other with the reason it could not be read."""
    import av

    try:
        with av.open(source) as container:
            if not container.streams.video:
                return Media(note="no video stream in the container")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0) or None
            duration = None
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / 1_000_000
            frames = stream.frames or (round(duration * fps) if duration and fps else None)
            return Media(
                kind=Kind.VIDEO, mime=_mime(container.format.name),
                width=stream.codec_context.width, height=stream.codec_context.height,
                duration=round(duration, 6) if duration is not None else None,
                fps=round(fps, 6) if fps else None, frames=frames,
            )
    except (av.FFmpegError, OSError, ValueError) as exc:
        return Media(note=f"looks like a video but could not be parsed: {exc}")
