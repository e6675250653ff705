"""The Range header of a download (RFC 9110): one range served as asked, anything else as the whole file,
and a range past the end refused (416), so a video player can seek and no request can ask for more."""

from __future__ import annotations

import pytest

from assets.byte_ranges import ByteRange, RangeNotSatisfiable, requested_range


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-99", ByteRange(0, 99)),
        ("bytes=100-", ByteRange(100, 999)),
        ("bytes=-100", ByteRange(900, 999)),
        ("bytes=-5000", ByteRange(0, 999)),  # more than the file: all of it
        ("bytes=900-5000", ByteRange(900, 999)),  # cut at the end
        ("BYTES = 5-5", ByteRange(5, 5)),
    ],
)
def test_one_range_is_served_as_asked(header, expected):
    assert requested_range(header, 1000) == expected


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "items=0-5",
        "bytes=0-1,5-6",  # several ranges: the whole file, once
        "bytes=" + ",".join(f"{i}-{i}" for i in range(500)),
        "bytes=5-2",  # last before first: invalid, ignored
        "bytes=-",
        "bytes=a-b",
        "bytes=0x10-",
        "bytes=²-",
        "bytes=" + "9" * 200 + "-",  # over the header bound
    ],
)
def test_anything_else_is_the_whole_file(header):
    assert requested_range(header, 1000) is None


@pytest.mark.parametrize(
    ("header", "size"), [("bytes=1000-", 1000), ("bytes=5000-6000", 1000), ("bytes=-0", 1000), ("bytes=0-", 0)]
)
def test_a_range_past_the_end_is_not_satisfiable(header, size):
    with pytest.raises(RangeNotSatisfiable):
        requested_range(header, size)


def test_content_range_names_the_part_and_the_whole():
    assert ByteRange(10, 19).content_range(1000) == "bytes 10-19/1000"
    assert ByteRange(10, 19).length == 10
