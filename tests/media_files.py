"""Small media files for tests, made here: images with Pillow, containers (MP4, WebM, WAV, FLAC)
written box by box, so the header readers meet the structures real encoders write."""

from __future__ import annotations

import io
import struct
import wave
from typing import Any

from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from assets.models import Asset
from assets.services import asset_create

HTML_PAGE = b"<!doctype html><html><body><script>alert(document.cookie)</script></body></html>"


def png(width: int = 8, height: int = 8, colour: tuple[int, ...] = (10, 20, 30), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), colour).save(buffer, "PNG")
    return buffer.getvalue()


def image_bytes(image_format: str, width: int = 8, height: int = 8, **options: Any) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 100, 50)).save(buffer, image_format, **options)
    return buffer.getvalue()


def animation(image_format: str, frames: int, width: int = 8, height: int = 8, **options: Any) -> bytes:
    images = [Image.new("RGB", (width, height), (i * 20 % 256, 0, 0)) for i in range(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, image_format, save_all=True, append_images=images[1:], duration=40, **options)
    return buffer.getvalue()


def wav(seconds: float, rate: int = 8000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\x00\x00" * int(seconds * rate))
    return buffer.getvalue()


def flac_header(seconds: float, rate: int = 44100) -> bytes:
    """fLaC and a STREAMINFO block (no audio frames: the header is all that is read)."""
    total = int(seconds * rate)
    bits = (rate << 44) | (1 << 41) | (15 << 36) | total  # rate, 2 channels, 16 bits, samples
    info = struct.pack(">HH", 4096, 4096) + b"\x00" * 6 + bits.to_bytes(8, "big") + b"\x00" * 16
    return b"fLaC" + bytes([0x80]) + len(info).to_bytes(3, "big") + info


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def _full_box(kind: bytes, payload: bytes, version: int = 0) -> bytes:
    return _box(kind, bytes([version, 0, 0, 0]) + payload)


def mp4(
    width: int, height: int, frames: int, seconds: float, *, brand: bytes = b"isom", moov_last: bool = False
) -> bytes:
    """An MP4 (or, with brand b"qt  ", a MOV) with one video track: ftyp, mdat, moov."""
    timescale = 1000
    mvhd = _full_box(b"mvhd", struct.pack(">IIII", 0, 0, timescale, int(seconds * timescale)) + b"\x00" * 80)
    tkhd = _full_box(b"tkhd", b"\x00" * 72 + struct.pack(">II", width << 16, height << 16))
    hdlr = _full_box(b"hdlr", b"\x00" * 4 + b"vide" + b"\x00" * 12 + b"video\x00")
    entry = _box(b"avc1", b"\x00" * 6 + b"\x00\x01" + b"\x00" * 16 + struct.pack(">HH", width, height) + b"\x00" * 50)
    stsd = _full_box(b"stsd", struct.pack(">I", 1) + entry)
    stsz = _full_box(b"stsz", struct.pack(">II", 0, frames) + b"\x00\x00\x01\x00" * frames)
    stbl = _box(b"stbl", stsd + stsz)
    minf = _box(b"minf", stbl)
    mdia = _box(b"mdia", hdlr + minf)
    trak = _box(b"trak", tkhd + mdia)
    moov = _box(b"moov", mvhd + trak)
    ftyp = _box(b"ftyp", brand + b"\x00\x00\x02\x00" + brand + b"mp41")
    mdat = _box(b"mdat", b"\x00" * 256)
    return ftyp + (mdat + moov if moov_last else moov + mdat)


def _ebml(element: int, payload: bytes) -> bytes:
    element_id = element.to_bytes((element.bit_length() + 7) // 8, "big")
    size = len(payload) | (1 << 56)  # an 8-byte size, as muxers often write
    return element_id + size.to_bytes(8, "big") + payload


def webm(width: int, height: int, seconds: float) -> bytes:
    header = _ebml(0x1A45DFA3, _ebml(0x4282, b"webm"))
    info = _ebml(
        0x1549A966, _ebml(0x2AD7B1, (1_000_000).to_bytes(3, "big")) + _ebml(0x4489, struct.pack(">d", seconds * 1000))
    )
    video = _ebml(0xE0, _ebml(0xB0, width.to_bytes(2, "big")) + _ebml(0xBA, height.to_bytes(2, "big")))
    tracks = _ebml(0x1654AE6B, _ebml(0xAE, _ebml(0xD7, b"\x01") + _ebml(0x83, b"\x01") + video))
    cluster = _ebml(0x1F43B675, b"\x00" * 64)
    return header + _ebml(0x18538067, info + tracks + cluster)


def upload(data: bytes, name: str = "file.bin") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="application/octet-stream")


def asset_of(owner: Any, data: bytes, name: str = "upload.png") -> Asset:
    asset, _ = asset_create(owner=owner, upload=upload(data, name), name=name)
    return asset
