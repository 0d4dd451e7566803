"""Speed, ours vs transformers on the same random weights: decode, time to first token, vision
encoder, SFT step, int8, and the memory-bandwidth limit (the work is in `internvl.bench`; this script
adds the machine line and `--append` to BENCHMARKS.md). Same as `internvl bench`.

    python benchmarks/bench_speed.py --append                 # nano and 1B shapes, fp32 and bf16
    python benchmarks/bench_speed.py --shapes nano --dtypes fp32
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import append_report, machine_line  # noqa: E402

from internvl.bench import main  # noqa: E402

if __name__ == "__main__":
    argv = [a for a in sys.argv[1:] if a != "--append"]
    sys.exit(main(argv, machine=machine_line(), append=append_report if "--append" in sys.argv else None))
