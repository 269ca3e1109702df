"""Measure what reading a decompression bomb costs: peak RSS and the longest loop gap.

Each codec runs in a fresh process (peak RSS is per process): one value that decompresses to
SIZE bytes of zeros is stored raw, then read through a compressed coder while a 1 ms ticker
runs on the loop. Usage: python tools/bombs.py [SIZE_MIB]   (default 1024)
"""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
import zlib

# "-stream": a frame that does not say its size in its header (only streaming finds it out).
CODECS = ("zlib", "zstd", "lz4", "zstd-stream", "lz4-stream")


def bomb(codec: str, size: int) -> bytes:
    """A value of ``size`` zero bytes, compressed by ``codec`` in a stored form."""
    zeros = bytes(size)
    if codec == "zstd-stream":
        from backports import zstd

        # Fed in pieces, the compressor cannot write the size in the header.
        out = zstd.ZstdCompressor(level=19)
        piece = bytes(1 << 20)
        frame = b"".join(out.compress(piece, out.CONTINUE) for _ in range(size >> 20))
        return bytes(frame + out.flush(out.FLUSH_FRAME))
    if codec == "lz4-stream":
        import lz4.frame

        return bytes(lz4.frame.compress(zeros, store_size=False))
    if codec == "zstd":
        from backports import zstd

        return zstd.compress(zeros, level=19)
    if codec == "lz4":
        import lz4.frame

        return bytes(lz4.frame.compress(zeros, store_size=True))
    return zlib.compress(zeros, 9)


async def measure(codec: str, size: int) -> dict[str, object]:
    """Store the bomb, read it through ``JSONCoder().compressed(codec=...)`` beside a ticker."""
    import aiolmdb

    stored = bomb(codec, size)
    with tempfile.TemporaryDirectory() as tmp:
        async with aiolmdb.open(tmp, map_size=1 << 30) as env:
            raw = env.open_db("bombs")
            await raw.put(b"bomb", stored)
            name = codec.partition("-")[0]
            coder = aiolmdb.JSONCoder().compressed(codec=name, threshold=1)  # type: ignore[arg-type]
            db = env.open_db("bombs", value_coder=coder)
            longest = 0.0
            stop = False

            async def ticker() -> None:
                nonlocal longest
                last = time.perf_counter()
                while not stop:
                    await asyncio.sleep(0.001)
                    now = time.perf_counter()
                    longest = max(longest, now - last)
                    last = now

            tick = asyncio.create_task(ticker())
            await asyncio.sleep(0.01)
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            started = time.perf_counter()
            try:
                await db.get(b"bomb")
                outcome = "decoded"
            except ValueError as exc:
                outcome = f"ValueError: {str(exc)[:160]}"
            except MemoryError:
                outcome = "MemoryError"
            elapsed = time.perf_counter() - started
            stop = True
            await tick
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "codec": codec,
        "stored_bytes": len(stored),
        "decompresses_to": size,
        "outcome": outcome,
        "seconds": round(elapsed, 3),
        "longest_loop_gap_ms": round(longest * 1000, 1),
        "peak_rss_growth_mib": round((peak - rss_before) / 1024, 1),
    }


def main() -> None:
    """Run each codec in its own process and print one JSON line per codec."""
    if len(sys.argv) > 2 and sys.argv[1] == "--one":
        print(json.dumps(asyncio.run(measure(sys.argv[2], int(sys.argv[3])))))
        return
    size = (int(sys.argv[1]) if len(sys.argv) > 1 else 1024) << 20
    for codec in CODECS:
        out = subprocess.run(
            [sys.executable, __file__, "--one", codec, str(size)],
            capture_output=True,
            text=True,
            check=False,
        )
        print(out.stdout.strip() or out.stderr.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
