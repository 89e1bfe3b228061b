"""Stage report: every method's numbers side by side -> reports/summary.md and a self-contained reports/index.html.

The page reads only what the evaluate and train stages wrote (reports/metrics/<method>.json,
reports/eval/<method>/*.png, reports/train/<method>/{losses.csv,samples}) and reports/data_quality.json,
and links each row to the MLflow run that logged those very numbers: the newest finished
`evaluate@<method>` run whose logged metrics equal the JSON file's (and the newest `train@<method>` run
that finished before it). Images are inlined as data: URIs and loss curves as inline SVG, so the one
file can be mailed or archived.
"""
from __future__ import annotations

import base64
import csv
import html
import io
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from facegan.methods import REGISTRY
from facegan.methods.base import Metric
from facegan.reports import format_value

log = logging.getLogger(__name__)

def table_columns() -> list[tuple[str, dict[str, Metric]]]:
    """The comparison table: (column title, {method: its Metric}) from the methods' declared headline
    figures (Metric.column), columns in the order the registry first names them."""
    columns: dict[str, dict[str, Metric]] = {}
    for name, cls in REGISTRY.items():
        for metric in cls.headline:
            if metric.column:
                columns.setdefault(metric.column, {})[name] = metric
    return [(title + next(iter(specs.values())).arrow, specs) for title, specs in columns.items()]


TABLE_COLUMNS = table_columns()


PAPERS = {
    "cgan": "Mirza & Osindero 2014, arXiv 1411.1784",
    "beholder": "Diamant et al. 2019, arXiv 1902.02593",
    "fader": "Lample et al. 2017, arXiv 1706.00409",
    "dtn": "Taigman et al. 2017, arXiv 1611.02200",
    "tpgan": "Huang et al. 2017, arXiv 1704.04086",
    "geogan": "Yin et al. 2019, arXiv 1811.12670",
}


@dataclass(frozen=True)
class PaperFigure:
    """One figure a paper gives, and what stands beside it here (`ours`: a metric key or None)."""
    what: str
    paper: str
    ours: str | None
    differs: str


# Transcribed by hand from the papers; where a paper gives no number that measures what we measure, the
# entry says what it gives instead, so a reader knows the gap is the paper's and not ours.
PAPER_FIGURES: dict[str, list[PaperFigure]] = {
    "cgan": [PaperFigure(
        "Parzen-window log-likelihood on MNIST (Table 1)", "132 ± 1.8", None,
        "The paper has no face experiment: nothing comparable. Our cGAN is conditioned on 6 CelebA "
        "attributes at 64×64 and judged by an attribute classifier trained on real CelebA.")],
    "beholder": [PaperFigure(
        "beauty control and beautification", "shown in figures only (strips of rising β, beautified photos)",
        "beauty_spearman",
        "The paper gives no number; our beauty_spearman and beautify_rise_rate measure what its figures "
        "show. It trains on SCUT-FBP5500 (60 raters) at up to 256×256; we train on CelebA pseudo-labelled "
        "by 60 London raters' predictors at 64×64.")],
    "fader": [PaperFigure(
        "attribute swaps judged by people and by a classifier (Tables 1–2)",
        "human naturalness/accuracy and classifier swap accuracy for Mouth_Slightly_Open, Smiling, Eyeglasses",
        "swap_acc_recommended",
        "Different attributes (ours: Male and Young, at the README's slider values), 256×256 there and 64×64 here, "
        "and people judge there: the numbers are not set side by side.")],
    "dtn": [PaperFigure(
        "face → emoji identity: retrieval of the source face from f(G(x)) among a large gallery",
        "reported as a median rank over ~100k CelebA faces (not rank-1)", "retrieval_rank1",
        "Our retrieval is rank-1 among 100 test faces (10 seeded sets); the paper's f is a DeepFace-class "
        "network trained on its own data, ours the converted FaceNet; its targets are emoji, ours "
        "python-avatars renderings at 64×64.")],
    "tpgan": [
        PaperFigure("rank-1, Multi-PIE setting 2, ±90° (Table 1)", "64.03 %", "rank1_facenet_frontalized_with_distractors",
                    "Ours at 90°. 337 people there (gallery: the frontal image of each), 30 people here "
                    "(24 train, 6 test + 24 distractors in the gallery); Light-CNN there, FaceNet here; "
                    "128×128 there, 64×64 here by default."),
        PaperFigure("rank-1, Multi-PIE setting 2, ±45° (Table 1)", "98.58 %", "rank1_facenet_frontalized_with_distractors",
                    "Ours at 45°; the same differences."),
    ],
    "geogan": [PaperFigure(
        "instance-level transfer", "judged by a user study and shown in figures (no FID or classifier table)",
        "transfer_success",
        "We judge with our attribute classifier, dlib identity and landmark alignment instead; CelebA at "
        "64×64 here, higher resolution there.")],
}

# For a per-yaw metric, the yaw the paper's figure refers to.
PAPER_YAW = {"±90°": "90", "±45°": "45"}


@dataclass
class MethodReport:
    name: str
    metrics: dict | None
    evaluate_run: str | None = None
    train_run: str | None = None
    grids: list[Path] = field(default_factory=list)
    losses: Path | None = None
    progress: Path | None = None   # reports/train/<method>/progress.csv: the quality figure against steps
    training: dict | None = None   # models/<method>/model.json: steps, minutes_this_run, stopped_by


# ------------------------------------------------------------------ MLflow lookups

def _same_numbers(logged: dict, expected: dict) -> bool:
    if not expected or set(expected) - set(logged):
        return False
    return all(math.isclose(logged[k], v, rel_tol=1e-6, abs_tol=1e-9) for k, v in expected.items())


def mlflow_runs(tracking_uri: str, experiment: str, methods: list[str], metrics: dict[str, dict]) -> dict:
    """{method: (evaluate run id, train run id)}: the newest finished evaluate run that logged exactly the
    numbers in the method's JSON, and the newest finished train run before it. None where there is none."""
    from facegan.tracking import numeric_metrics

    found = {m: (None, None) for m in methods}
    try:
        import mlflow
        mlflow.set_tracking_uri(tracking_uri)
        client = mlflow.MlflowClient()
        exp = client.get_experiment_by_name(experiment)
    except Exception as err:  # a missing or unreadable store: the report says "not found" for every row
        log.warning("MLflow store %s unreadable: %s", tracking_uri, err)
        return found
    if exp is None:
        return found
    for method in methods:
        if metrics.get(method) is None:
            continue
        expected = numeric_metrics(metrics[method])
        evaluate = next((r for r in client.search_runs(
            [exp.experiment_id], f"tags.dvc_stage = 'evaluate@{method}' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"], max_results=50) if _same_numbers(r.data.metrics, expected)),
            None)
        if evaluate is None:
            continue
        train = client.search_runs(
            [exp.experiment_id], f"tags.dvc_stage = 'train@{method}' and attributes.status = 'FINISHED' "
            f"and attributes.start_time < {evaluate.info.start_time}",
            order_by=["attributes.start_time DESC"], max_results=1)
        found[method] = (evaluate.info.run_id, train[0].info.run_id if train else None)
    return found


# ------------------------------------------------------------------ collecting

def collect(root: Path, methods: list[str], tracking_uri: str | None, experiment: str) -> list[MethodReport]:
    root = Path(root)
    reports = []
    for name in methods:
        path = root / "reports" / "metrics" / f"{name}.json"
        metrics = json.loads(path.read_text()) if path.exists() else None
        samples = sorted((root / "reports" / "train" / name / "samples").glob("step_*.png"))
        grids = sorted((root / "reports" / "eval" / name).glob("*.png")) + samples[-1:]
        losses = root / "reports" / "train" / name / "losses.csv"
        progress = root / "reports" / "train" / name / "progress.csv"
        model = root / "models" / name / "model.json"
        reports.append(MethodReport(name, metrics, grids=grids, losses=losses if losses.exists() else None,
                                    progress=progress if progress.exists() else None,
                                    training=json.loads(model.read_text()) if model.exists() else None))
    if tracking_uri:
        runs = mlflow_runs(tracking_uri, experiment, methods, {r.name: r.metrics for r in reports})
        for r in reports:
            r.evaluate_run, r.train_run = runs[r.name]
    return reports


def cell(metrics: dict | None, spec: Metric | None) -> str:
    """A table cell: one value, or "value / ceiling" (Metric.beside); a per-yaw dict shows 90° and 45°
    (the hard and the easy end the paper discusses) as "first → beside"."""
    if metrics is None or spec is None:
        return "–" if metrics is not None else "not evaluated"
    if spec.beside:
        first, second = metrics.get(spec.key), metrics.get(spec.beside)
        if isinstance(first, dict):
            return " · ".join(f"{yaw}°: {format_value(first[yaw])} → {format_value(second[yaw])}"
                              for yaw in ("90", "45") if yaw in first and yaw in second)
        if first is None:
            return "–"
        return f"{format_value(first)} / {format_value(second)}"
    value, error = metrics.get(spec.key), metrics.get(f"{spec.key}_se")   # <key>_se: its standard error
    if value is None:
        return "–"
    return format_value(value) + (f" ± {format_value(error)}" if isinstance(error, (int, float)) else "")


def headline_keys(method: str) -> list[str]:
    return REGISTRY[method].headline_keys() if method in REGISTRY else []


def training_cell(training: dict | None) -> str:
    """How much training the row's numbers come from: a 4-minute CPU run and a long GPU run differ."""
    if training is None:
        return "not trained"
    return f"{training.get('steps', '?')} steps, {training.get('minutes_this_run', '?')} min last run"


def ours_for(figure: PaperFigure, metrics: dict | None) -> str:
    if figure.ours is None or metrics is None or figure.ours not in metrics:
        return "–"
    value = metrics[figure.ours]
    if isinstance(value, dict):
        yaw = next((y for label, y in PAPER_YAW.items() if label in figure.what), None)
        return f"{100 * value[yaw]:.1f} %" if yaw in value else format_value(value)
    return format_value(value)


def data_quality_rows(root: Path) -> list[tuple[str, str, int, int, int, str]]:
    """(set, stage, read, kept, skipped, reasons) from reports/data_quality.json."""
    path = Path(root) / "reports" / "data_quality.json"
    if not path.exists():
        return []
    rows = []
    for set_name, entry in json.loads(path.read_text())["sets"].items():
        for stage, counts in entry["stages"].items():
            reasons = ", ".join(f"{k}: {v}" for k, v in counts.get("skipped_by_reason", {}).items())
            rows.append((set_name, stage, counts["read"], counts["kept"], counts["skipped"], reasons))
    return rows


# ------------------------------------------------------------------ rendering

def loss_curves_svg(losses: Path, skip: tuple[str, ...] = ("step", "img_per_s")) -> str:
    """A training CSV (losses, or the progress figure) as small multiples against the step, one panel per
    column but `skip`, as inline SVG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(losses, newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns = [c for c in (rows[0].keys() if rows else []) if c not in skip]
    if not columns:
        return "<p>nothing logged yet</p>"
    steps = [float(r["step"]) for r in rows]
    per_row = 4
    n_rows = math.ceil(len(columns) / per_row)
    fig, axes = plt.subplots(n_rows, per_row, figsize=(3.0 * per_row, 2.0 * n_rows), squeeze=False)
    for ax, column in zip(axes.flat, columns):
        values = [float(r[column]) if r[column] not in ("", "nan") else math.nan for r in rows]
        ax.plot(steps, values, linewidth=1)
        ax.set_title(column, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(columns):]:
        ax.axis("off")
    fig.tight_layout()
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg")
    plt.close(fig)
    svg = buffer.getvalue()
    return svg[svg.index("<svg"):]


def progress_line(progress: Path) -> str:
    """The progress figure's first and last values: does more training still help?"""
    with open(progress, newline="") as handle:
        rows = list(csv.DictReader(handle))
    figures = [c for c in (rows[0].keys() if rows else []) if c not in ("step", "minutes")]
    if not figures:
        return "no check ran"
    first, last = rows[0], rows[-1]
    return "; ".join(f"{name} {float(first[name]):.4g} at step {first['step']} -> {float(last[name]):.4g} at step "
                     f"{last['step']} ({len(rows)} checks)" for name in figures)


def data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(png).read_bytes()).decode("ascii")


def run_label(run_id: str | None) -> str:
    return run_id if run_id else "not found in MLflow"


def render_markdown(reports: list[MethodReport], quality_rows: list, root: Path) -> str:
    lines = ["# facegan: every method on one page", "",
             "Generated by the `report` stage from `reports/metrics/*.json`; the self-contained page with the "
             "grids and loss curves is `reports/index.html`. `–`: the method does not produce this measure.", "",
             "| method | " + " | ".join(c for c, _ in TABLE_COLUMNS) + " | trained | MLflow evaluate run |",
             "|---" * (len(TABLE_COLUMNS) + 3) + "|"]
    for r in reports:
        cells = [cell(r.metrics, specs.get(r.name)) for _, specs in TABLE_COLUMNS]
        lines.append(f"| {r.name} | " + " | ".join(cells) + f" | {training_cell(r.training)} | "
                     f"{run_label(r.evaluate_run)} |")
    lines += ["", "## The papers' own figures beside ours", "",
              "| method | paper | figure | paper's value | ours | what differs |", "|---|---|---|---|---|---|"]
    for r in reports:
        for fig in PAPER_FIGURES.get(r.name, []):
            lines.append(f"| {r.name} | {PAPERS[r.name]} | {fig.what} | {fig.paper} | {ours_for(fig, r.metrics)} "
                         f"| {fig.differs} |")
    lines += ["", "## Per method", ""]
    for r in reports:
        lines += [f"### {r.name}", "",
                  f"MLflow: evaluate run `{run_label(r.evaluate_run)}`, train run `{run_label(r.train_run)}`.", ""]
        if r.metrics is None:
            lines += [f"Not evaluated yet: `dvc repro evaluate@{r.name}`.", ""]
            continue
        for key in headline_keys(r.name):
            if key in r.metrics:
                lines.append(f"- {key}: {format_value(r.metrics[key])}")
        lines.append("")
        for grid in r.grids:
            lines.append(f"![{r.name} {grid.stem}]({grid.relative_to(root / 'reports').as_posix()})")
        if r.losses:
            lines.append(f"\nLoss curves: `{r.losses.relative_to(root).as_posix()}` (`dvc plots show`).")
        if r.progress:
            lines.append(f"\nQuality while training: {progress_line(r.progress)}")
        lines.append("")
    lines += ["## Data quality", "", "| set | stage | read | kept | skipped | reasons |", "|---|---|---|---|---|---|"]
    lines += [f"| {s} | {st} | {read} | {kept} | {skipped} | {reasons} |"
              for s, st, read, kept, skipped, reasons in quality_rows]
    return "\n".join(lines) + "\n"


STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:92%}td,th{border:1px solid #bbb;padding:4px 8px;vertical-align:top}
th{background:#eee}td.num{text-align:right}.note{color:#666;font-size:85%}.run{font-size:80%;word-break:break-all}
img{max-width:100%;border:1px solid #ddd;margin:4px 0}
code{background:#f4f4f4;padding:0 3px}section{margin-top:2.5em}
"""


def render_html(reports: list[MethodReport], quality_rows: list) -> str:
    e = html.escape
    out = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>facegan report</title>",
           f"<style>{STYLE}</style></head><body>",
           "<h1>facegan: every method on one page</h1>",
           "<p>From the <code>report</code> stage. Every number comes from <code>reports/metrics/&lt;method&gt;.json"
           "</code> and was logged by the MLflow run named in its row (<code>mlflow ui --backend-store-uri "
           "sqlite:///mlflow.db</code>). – : the method does not produce this measure.</p>",
           "<table id='comparison'><thead><tr><th>method</th>"]
    out += [f"<th>{e(c)}</th>" for c, _ in TABLE_COLUMNS]
    out.append("<th>trained</th><th>MLflow runs</th></tr></thead><tbody>")
    for r in reports:
        out.append(f"<tr data-method='{e(r.name)}'><th><a href='#{e(r.name)}'>{e(r.name)}</a></th>")
        for column, specs in TABLE_COLUMNS:
            spec = specs.get(r.name)
            note = spec.note if spec is not None and r.metrics is not None else None
            text = e(cell(r.metrics, specs.get(r.name)))
            out.append(f"<td class='num'>{text}" + (f"<div class='note'>{e(note)}</div>" if note else "") + "</td>")
        out.append(f"<td class='note'>{e(training_cell(r.training))}</td>")
        out.append(f"<td class='note run'>evaluate: <code>{e(run_label(r.evaluate_run))}</code><br>"
                   f"train: <code>{e(run_label(r.train_run))}</code></td></tr>")
    out.append("</tbody></table>")
    out += ["<section><h2>The papers' own figures beside ours</h2><table id='papers'><thead><tr><th>method</th>"
            "<th>paper</th><th>figure</th><th>paper's value</th><th>ours</th><th>what differs</th></tr></thead>"
            "<tbody>"]
    for r in reports:
        for fig in PAPER_FIGURES.get(r.name, []):
            out.append(f"<tr><td>{e(r.name)}</td><td>{e(PAPERS[r.name])}</td><td>{e(fig.what)}</td>"
                       f"<td>{e(fig.paper)}</td><td class='num'>{e(ours_for(fig, r.metrics))}</td>"
                       f"<td class='note'>{e(fig.differs)}</td></tr>")
    out.append("</tbody></table></section>")
    for r in reports:
        out.append(f"<section id='{e(r.name)}'><h2>{e(r.name)} <span class='note'>{e(PAPERS.get(r.name, ''))}"
                   "</span></h2>")
        if r.metrics is None:
            out.append(f"<p>Not evaluated yet: <code>dvc repro evaluate@{e(r.name)}</code>.</p></section>")
            continue
        out.append("<ul>" + "".join(f"<li>{e(k)}: {e(format_value(r.metrics[k]))}</li>"
                                    for k in headline_keys(r.name) if k in r.metrics) + "</ul>")
        for grid in r.grids:
            out.append(f"<figure><img alt='{e(r.name)} {e(grid.stem)}' src='{data_uri(grid)}'>"
                       f"<figcaption class='note'>{e(grid.parent.name)}/{e(grid.name)}</figcaption></figure>")
        if r.losses:
            out.append(f"<h3>Loss curves</h3><div class='losses'>{loss_curves_svg(r.losses)}</div>")
        if r.progress:
            out.append(f"<h3>Quality while training</h3><p class='note'>{e(progress_line(r.progress))}</p>"
                       f"<div class='losses'>{loss_curves_svg(r.progress, ('step', 'minutes'))}</div>")
        out.append("</section>")
    out += ["<section><h2>Data quality</h2><table id='data-quality'><thead><tr><th>set</th><th>stage</th>"
            "<th>read</th><th>kept</th><th>skipped</th><th>reasons</th></tr></thead><tbody>"]
    out += [f"<tr><td>{e(s)}</td><td>{e(st)}</td><td class='num'>{read}</td><td class='num'>{kept}</td>"
            f"<td class='num'>{skipped}</td><td class='note'>{e(reasons)}</td></tr>"
            for s, st, read, kept, skipped, reasons in quality_rows]
    out.append("</tbody></table></section></body></html>")
    return "\n".join(out) + "\n"


def headline_metrics(reports: list[MethodReport]) -> dict:
    """{method: {metric: value}} for reports/headline.json, the one metrics file `dvc exp show` needs to
    compare experiments at a glance; a per-yaw figure keeps its hard (90°) and easy (45°) ends."""
    table = {}
    for r in reports:
        if r.metrics is None:
            continue
        table[r.name] = {k: ({yaw: v for yaw, v in r.metrics[k].items() if yaw in ("45", "90")}
                             if isinstance(r.metrics[k], dict) else r.metrics[k])
                         for k in headline_keys(r.name) if k in r.metrics}
    return table


def write_report(root: Path, methods: list[str], tracking_uri: str | None, experiment: str) -> dict:
    """Write reports/summary.md, reports/index.html and reports/headline.json; return counts for MLflow."""
    root = Path(root)
    reports = collect(root, methods, tracking_uri, experiment)
    quality = data_quality_rows(root)
    (root / "reports").mkdir(exist_ok=True)
    (root / "reports" / "headline.json").write_text(json.dumps(headline_metrics(reports), indent=2) + "\n")
    (root / "reports" / "summary.md").write_text(render_markdown(reports, quality, root))
    (root / "reports" / "index.html").write_text(render_html(reports, quality))
    return {"methods_evaluated": sum(r.metrics is not None for r in reports),
            "methods_linked_to_mlflow": sum(r.evaluate_run is not None for r in reports),
            "images": sum(len(r.grids) for r in reports)}
