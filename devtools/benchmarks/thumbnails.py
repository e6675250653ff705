"""How long making one output's thumbnail takes the tracker (jobs.thumbnails.thumbnail_of), per size
and format, and how big the thumbnail is: `python devtools/benchmarks/thumbnails.py`.

Prints figures; asserts nothing. Noisy on a shared machine: read the median of several runs.
"""

from __future__ import annotations

import io
import statistics
import time

import django
from PIL import Image

django.setup()

from jobs.thumbnails import thumbnail_of  # noqa: E402  (needs the apps loaded)

SIZES = [(512, 512), (1024, 1024), (2048, 2048), (4096, 4096), (7680, 4320)]
FORMATS = ["PNG", "JPEG", "WEBP"]
RUNS = 3


def sample(width: int, height: int, image_format: str) -> bytes:
    gradient = Image.linear_gradient("L").resize((width, height))
    image = Image.merge("RGB", (gradient, gradient.transpose(Image.Transpose.FLIP_LEFT_RIGHT), gradient))
    out = io.BytesIO()
    image.save(out, image_format, **({"quality": 90} if image_format != "PNG" else {}))
    return out.getvalue()


def main() -> None:
    print(f"{'size':>11} {'format':>6} {'file':>9} {'median ms':>10} {'thumb bytes':>11}")
    for width, height in SIZES:
        for image_format in FORMATS:
            if image_format == "WEBP" and width > 4096:
                continue
            data = sample(width, height, image_format)
            times, made = [], None
            for _ in range(RUNS):
                start = time.perf_counter()
                made = thumbnail_of(io.BytesIO(data), size=160, max_pixels=40_000_000)
                times.append((time.perf_counter() - start) * 1000)
            assert made is not None
            size = f"{width}x{height}"
            print(f"{size:>11} {image_format:>6} {len(data):>9} {statistics.median(times):>10.1f} {len(made.webp):>11}")


if __name__ == "__main__":
    main()
