"""Time to the first screen: a fresh Python process imports the app and renders the home
screen (headless), then exits. Also reports whether torch was imported on the way.

    python bench/startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import print_table, save_result  # noqa: E402

PROBE = """
import asyncio, sys, time
start = time.perf_counter()
from rwkv_tui.app import RwkvTuiApp
imported = time.perf_counter()
async def main():
    app = RwkvTuiApp(runs_root='/nonexistent')
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
asyncio.run(main())
shown = time.perf_counter()
print(f"{imported - start:.4f} {shown - start:.4f} {int('torch' in sys.modules)}")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = []
    for i in range(args.repeats):
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
        process = time.perf_counter() - start
        imported, shown, torch_loaded = out.stdout.split()
        rows.append({"run": i + 1, "import_s": float(imported), "first_screen_s": float(shown),
                     "process_s": process, "torch_imported": bool(int(torch_loaded))})
    print_table(rows, ["run", "import_s", "first_screen_s", "process_s", "torch_imported"])
    summary = {"median_first_screen_s": statistics.median(r["first_screen_s"] for r in rows),
               "median_process_s": statistics.median(r["process_s"] for r in rows)}
    print(summary)
    print(f"saved {save_result('startup', rows, summary)}")


if __name__ == "__main__":
    main()
