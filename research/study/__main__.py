"""`python -m research.study`: see research.study.cli."""

import os

# Before torch starts OpenMP, as lab.train: idle threads sleep instead of spinning, so a busy machine stays
# predictable (a U-Net call at batch 48 beside a training run: 5.8 s spinning, 0.18 s sleeping).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from research.study.cli import main  # noqa: E402

main()
