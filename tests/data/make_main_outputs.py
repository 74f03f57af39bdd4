"""Writes bundled_outputs_main_<commit>.npz: every bundled model's output on a 32x48 view of chelsea.jpg,
made by another commit's code (test_backbones checks that this branch's code reproduces them).

    git archive main | tar -x -C /tmp/main && cd /tmp && \
        PYTHONPATH=/tmp/main python /path/to/tests/data/make_main_outputs.py /tmp/main OUT.npz
"""

import sys
from pathlib import Path

import numpy as np

from recon import Reconstructor, load_image
from recon.imageio import resize, to_float

checkout, out = Path(sys.argv[1]), Path(sys.argv[2])
result = {"input": to_float(resize(load_image(checkout / "examples" / "chelsea.jpg"), 32, 48))[None]}
for folder in sorted((checkout / "models").iterdir()):
    result[folder.name] = Reconstructor.from_pretrained(folder).reconstruct_batch(result["input"])[0]
np.savez_compressed(out, **result)
