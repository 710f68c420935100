"""`deepclust demo` measured: its rows (ACC / NMI / ARI / seconds) as JSON for the README.

python benchmarks/demo.py     # -> benchmarks/results/demo_digits.json
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from deepclust.demo import run_demo
from deepclust.engine.machine import cpu_model, load_average

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    load_before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        rows = run_demo(out=Path(tmp), progress=False)
    result = {
        "what": "deepclust demo (configs/kmeans/digits.yaml, configs/imc-swav/digits.yaml)",
        "dataset_copy": "scikit-learn digits, 1,797 images, 10 classes",
        "protocol": "train+test",
        "device": f"CPU ({cpu_model()}, {os.cpu_count()} cores)",
        "load_before": load_before,
        "load_after": load_average(),
        "rows": [{k: v for k, v in r.items() if k != "run_dir"} for r in rows],
    }
    (RESULTS / "demo_digits.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
