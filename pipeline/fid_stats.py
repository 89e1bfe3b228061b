"""Stage fid_stats: cached FID/KID statistics of the real test splits -> data/fid_stats/."""
from facegan.metrics.fid import run_fid_stats
from facegan.paths import project_root
from facegan.reports import write_metrics
from facegan.stage import run_stage

if __name__ == "__main__":
    root = project_root()
    run_stage("fid_stats", ["fid_stats"],
              lambda params, run: write_metrics(root, "fid_stats", run_fid_stats(params.fid_stats, root)))
