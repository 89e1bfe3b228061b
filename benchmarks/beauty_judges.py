"""Which beauty judge: London's (102 faces, 2,513 raters) or SCUT-FBP5500's (60 raters), each on the
other's held-out faces beside that set's own held-out judge (facegan.beauty.compare).

    python benchmarks/beauty_judges.py [--out reports/beauty/judges.json]
Needs both sets ingested, aligned and in the feature cache, e.g.
    dvc exp run -S 'ingest.sets=[celeba,london,umist,emoji,scut]' -S 'align.sets=[celeba,london,scut]' \\
                -S 'features.sets=[celeba,london,avatars,scut]'
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from facegan.beauty.compare import compare_judges
from facegan.config import load_params
from facegan.paths import project_root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="also write the figures here as JSON")
    args = parser.parse_args()
    root = project_root()
    params = load_params(root / "params.yaml")
    figures = compare_judges(params.beauty, params.align, root)
    print(f"{'judge':>8} {'faces of':>9} {'n':>5} | {'rho':>6} {'women':>6} {'men':>6} | own judge: "
          f"{'rho':>6} {'women':>6} {'men':>6}")
    for row in figures.values():
        cells = [f"{row[side].get(key, float('nan')):6.3f}" for side in ("cross", "own")
                 for key in ("spearman", "spearman_female", "spearman_male")]
        print(f"{row['judge']:>8} {row['faces_of']:>9} {row['cross']['faces']:5d} | {' '.join(cells[:3])} | "
              f"{'':10} {' '.join(cells[3:])}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
