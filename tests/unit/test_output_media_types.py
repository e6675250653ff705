"""An output's media type comes from its bytes; only inert media are ever inline."""

from __future__ import annotations

import pytest

from assets.media_types import INLINE_MEDIA_TYPES, RASTER_IMAGE_TYPES, sniff
from jobs.output_files import download_name, fitted
from tests.hostile_comfyui import HTML_WITH_SCRIPT, PNG_1PX, SVG_WITH_SCRIPT

HEADS = {
    "image/png": PNG_1PX,
    "image/jpeg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
    "image/gif": b"GIF89a\x01\x00\x01\x00",
    "image/webp": b"RIFF\x24\x00\x00\x00WEBPVP8 ",
    "video/mp4": b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2",
    "video/quicktime": b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00",
    "audio/mp4": b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00",
    "video/webm": b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01\x42\x82\x84webm",
    "video/x-matroska": b"\x1a\x45\xdf\xa3\xa3\x42\x86\x81\x01\x42\x82\x88matroska",
    "audio/wav": b"RIFF\x24\x00\x00\x00WAVEfmt ",
    "audio/flac": b"fLaC\x00\x00\x00\x22",
    "audio/ogg": b"OggS\x00\x02\x00\x00",
    "audio/mpeg": b"ID3\x04\x00\x00\x00\x00\x00\x00",
}


@pytest.mark.parametrize("media_type", sorted(HEADS))
def test_media_is_recognised_by_its_bytes_and_is_inline(media_type):
    sniffed = sniff(HEADS[media_type])
    assert sniffed.media_type == media_type
    assert sniffed.inline


def test_mp3_without_a_tag_is_recognised_by_its_frame_header():
    assert sniff(b"\xff\xfb\x90\x64\x00").media_type == "audio/mpeg"
    assert sniff(b"\xff\xf1\x50\x80").media_type == "application/octet-stream"  # AAC ADTS: no layer III


@pytest.mark.parametrize(
    "head",
    [HTML_WITH_SCRIPT, SVG_WITH_SCRIPT, b"<?xml version='1.0'?><x/>", b"%PDF-1.7", b"", b"\x00" * 64, b"RIFF....AVI "],
)
def test_anything_else_is_an_inert_download(head):
    sniffed = sniff(head)
    assert sniffed.media_type == "application/octet-stream" and sniffed.extension == "bin"
    assert not sniffed.inline and not sniffed.raster_image


def test_only_raster_images_get_thumbnails_and_no_active_type_is_inline():
    assert {"image/png", "image/jpeg", "image/gif", "image/webp"} == RASTER_IMAGE_TYPES
    active = {"text/html", "image/svg+xml", "application/xhtml+xml", "text/xml", "application/xml", "application/pdf"}
    assert not active & INLINE_MEDIA_TYPES


def test_download_names_keep_comfyuis_stem_with_the_real_extension():
    assert download_name("render_00001_.png", sniff(PNG_1PX)) == "render_00001_.png"
    assert download_name("x.html", sniff(HTML_WITH_SCRIPT)) == "x.bin"
    assert download_name('../../evil"; name=.svg', sniff(SVG_WITH_SCRIPT)) == "evil___name_.bin"
    assert download_name("", sniff(PNG_1PX)) == "output.png"


def test_names_too_long_for_their_column_stay_distinct():
    a, b = "a" * 300 + "1.png", "a" * 300 + "2.png"
    assert len(fitted(a, 255)) <= 255 and fitted(a, 255) != fitted(b, 255)
    assert fitted("short.png", 255) == "short.png"
