"""What image processing costs: starting the worker pool, and `describe`/`clean` of a 12-megapixel JPEG
(a smooth picture, as photos mostly are, and noise, the worst case for the decoder).

    .venv/bin/python bench/images.py
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from PIL import Image

from satellite.image_worker import ImageWorker
from satellite.imaging import ImageLimits, describe

RESULTS: dict[str, float] = {}


def ms(start: float, key: str) -> str:
    RESULTS[key] = round(1000 * (time.perf_counter() - start), 1)
    return f"{RESULTS[key]:.0f} ms"


async def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        d = Path(directory)
        Image.new("RGB", (8, 8), "red").save(d / "tiny.png")
        Image.linear_gradient("L").resize((4000, 3000)).convert("RGB").save(d / "smooth.jpg", quality=90)
        Image.effect_noise((4000, 3000), 40).convert("RGB").save(d / "noise.jpg", quality=90)
        limits = ImageLimits()

        images = ImageWorker(limits)
        start = time.perf_counter()
        await images.describe(d / "tiny.png")
        print(f"first job, fork server and worker started: {ms(start, 'first_job_ms')}")
        start = time.perf_counter()
        await images.describe(d / "tiny.png")
        print(f"a job on a running worker (round trip): {ms(start, 'round_trip_ms')}")
        await images.aclose()

        images = ImageWorker(limits)
        start = time.perf_counter()
        await images.describe(d / "tiny.png")
        print(f"first job of a new worker, fork server running: {ms(start, 'new_worker_ms')}")
        for name in ("smooth.jpg", "noise.jpg"):
            runs = []
            for _ in range(5):
                start = time.perf_counter()
                await images.describe(d / name)
                runs.append(time.perf_counter() - start)
            start = time.perf_counter()
            describe(d / name, limits)
            stem = name.split(".")[0]
            RESULTS[f"describe_{stem}_worker_ms"] = round(1000 * statistics.median(runs), 1)
            print(
                f"describe {name} 4000 x 3000: {RESULTS[f'describe_{stem}_worker_ms']:.0f} ms in a worker "
                f"(median of 5), {ms(start, f'describe_{stem}_inline_ms')} in this process"
            )
            start = time.perf_counter()
            await images.clean(d / name, d / "clean.jpg")
            print(f"clean {name} to 2560 x 1920: {ms(start, f'clean_{stem}_ms')}")
        await images.aclose()
    print(json.dumps(RESULTS))


if __name__ == "__main__":
    asyncio.run(main())
