"""The project's settings with another channel layer, for `progress_latency --layer redis` only.

The product chooses its layer in anime_production/settings.py; this module lets the benchmark put
the alternative next to it without touching that choice.
"""

import os

from anime_production.settings import *  # noqa: F403

CHANNEL_LAYERS["default"]["BACKEND"] = os.environ["BENCH_CHANNEL_LAYER"]  # noqa: F405
