"""The header readers: what real encoders write is read right, and a header that lies or ends early
is an UnreadableHeader (a 400), never an exception of another kind or a long walk."""

from __future__ import annotations

import io
import struct
import time

import pytest

from assets.media_facts import MediaFacts, UnreadableHeader, media_facts
from assets.media_types import FLAC, GIF, JPEG, MP3, MP4, PNG, WEBM, WEBP, sniff
from tests.media_files import animation, flac_header, image_bytes, mp4, png, webm


def facts(data: bytes) -> MediaFacts:
    return media_facts(io.BytesIO(data), sniff(data[:64]))


def test_flac_duration_from_its_streaminfo() -> None:
    assert facts(flac_header(2.5)).seconds == pytest.approx(2.5)
    assert sniff(flac_header(1)[:64]) == FLAC


def test_formats_without_a_trusted_header_field_say_nothing() -> None:
    mp3 = b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x00" * 10
    assert sniff(mp3[:64]) == MP3
    assert facts(mp3) == MediaFacts()


def test_an_mp4_whose_video_track_has_only_a_display_size() -> None:
    data = mp4(300, 200, 10, 1.0)
    # Zero the sample entry's coded size: tkhd's display size is used.
    at = data.index(b"avc1") + 4 + 6 + 2 + 16
    data = data[:at] + b"\x00\x00\x00\x00" + data[at + 4 :]
    assert (facts(data).width, facts(data).height) == (300, 200)


@pytest.mark.parametrize(
    ("data", "media"),
    [
        (png(8, 8)[:16], PNG),  # ends inside IHDR
        (b"\x89PNG\r\n\x1a\n" + struct.pack(">I4s", 13, b"tEXt") + b"\x00" * 40, PNG),  # IHDR not first
        (image_bytes("JPEG")[:2] + b"\xff\xdb\x00\x01", JPEG),  # a segment shorter than its length field
        (b"\xff\xd8\xff" + b"\x00" * 40, JPEG),  # a marker with no length
        (b"GIF89a" + b"\x08\x00\x08\x00\x00\x00\x00" + b"\x99", GIF),  # an unknown block
        (b"RIFF\x00\x00\x00\x00WEBPVP8 \x10\x00\x00\x00" + b"\x00" * 10, WEBP),  # no VP8 start code
        (b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isommp41" + struct.pack(">I4s", 4, b"moov"), MP4),
        (b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isommp41" + struct.pack(">I4s", 0x7FFFFFFF, b"moov"), MP4),
        (webm(64, 64, 1.0)[:30], WEBM),
    ],
)
def test_a_header_that_lies_or_ends_early_is_unreadable(data: bytes, media: object) -> None:
    assert sniff(data[:64]) == media
    with pytest.raises(UnreadableHeader):
        facts(data)


def test_a_gif_of_many_tiny_frames_is_counted_quickly() -> None:
    data = animation("GIF", 300, 2, 2)
    started = time.monotonic()
    assert facts(data).frames == 300
    assert time.monotonic() - started < 2.0


def test_an_mp4_with_its_index_at_the_end_is_found_by_seeking() -> None:
    data = mp4(128, 72, 5, 0.2, moov_last=True)
    assert data.index(b"moov") > data.index(b"mdat")
    read = facts(data)
    assert (read.width, read.height, read.frames) == (128, 72, 5) and read.seconds == pytest.approx(0.2)
    assert facts(animation("WEBP", 2, 3, 3, lossless=True)).frames == 2
