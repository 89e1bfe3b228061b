"""Stage data_quality: merge every stage's counts into reports/data_quality.json."""
import json
import sys

from facegan.data.quality import merge_parts
from facegan.paths import project_root

if __name__ == "__main__":
    root = project_root()
    parts = [root / p for p in sys.argv[1:]]
    merged = merge_parts(parts)
    (root / "reports/data_quality.json").write_text(json.dumps(merged, indent=2) + "\n")
    for name, counts in merged["sets"].items():
        print(f"{name}: skipped {counts['skipped_total']} in all; " +
              ", ".join(f"{stage} kept {c['kept']}/{c['read']}" for stage, c in counts["stages"].items()))
