"""The report as one document model, rendered to Markdown, to HTML and, in short, to a terminal.

:func:`build_document` writes the report's prose and tables once, as a list
of blocks (headings, paragraphs, lists, tables, figures); :func:`to_markdown`
and :func:`to_html` only lay those blocks out, so the two files cannot say
different things.  :func:`summary_text` is the terminal summary of
``fer-bench compare``.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from datetime import datetime, timezone

from .analysis import (ALPHA, FAMILY_NAMES, ModelResult, RunAnalysis, ci_text, compare_models, describe_cost,
                       mb_text, memory_text, ms_text, p_text, pct, provenance, seconds_text, verdict)
from .plots import Plot

MEMORY_NOTE = (
    "Peak memory: the process's resident high-water mark while the cell ran (kernel VmHWM, reset at the "
    "cell's start), in brackets its growth over the cell's starting size; it includes the loaded dataset "
    "and every library imported so far (TensorFlow for CNN cells). Worker processes (feature extraction, "
    "parallel grid search) are not in it; records.csv has their sampled total as peak_tree_rss_bytes."
)
"""How to read the leaderboard's memory column (shown under it)."""

VALENCE_TEXT = "negative: angry, disgust, fear, sad; neutral; positive: happy, surprise."


# --------------------------------------------------------------------------- tables


def leaderboard_rows(analysis: RunAnalysis) -> list:
    """The leaderboard as rows of text cells (header first)."""
    header = ["#", "model", "family", "accuracy [95% CI]", "macro F1 [95% CI]", "macro AUC", "valence acc.",
              "fit", "ms/face batched", "ms/face single", "model size", "peak memory"]
    rows = [header]
    best_names = {m.name: f for f, m in analysis.best.items()}
    for rank, m in enumerate(analysis.models, start=1):
        ci = m.metrics.get("ci") or {}
        roc = m.metrics.get("roc") or {}
        grouped = m.metrics.get("grouped") or {}
        name = m.name + (f" (best {FAMILY_NAMES[best_names[m.name]]})" if m.name in best_names else "")
        rows.append([
            str(rank), name, FAMILY_NAMES.get(m.family, m.family),
            f"{pct(m.accuracy)} {ci_text(ci.get('accuracy'))}",
            f"{pct(m.metrics.get('f1_macro'))} {ci_text(ci.get('f1_macro'))}",
            "–" if roc.get("auc_macro") is None else f"{roc['auc_macro']:.3f}",
            pct(grouped.get("accuracy")),
            seconds_text(m.cost("fit_seconds")), ms_text(m.cost("predict_ms_per_face")),
            ms_text(m.cost("predict_ms_single")), mb_text(m.cost("model_bytes")), memory_text(m),
        ])
    return rows


def valence_rows(analysis: RunAnalysis) -> list:
    """Valence (negative / neutral / positive) metrics per model, header first; [] if not FER-like."""
    models = [m for m in analysis.models if m.metrics.get("grouped")]
    if not models:
        return []
    groups = list(models[0].metrics["grouped"]["per_class"])
    rows = [["model", "accuracy [95% CI]", "macro F1 [95% CI]", *(f"F1 {g}" for g in groups), "macro AUC"]]
    for m in models:
        g = m.metrics["grouped"]
        auc = (g.get("roc") or {}).get("auc_macro")
        rows.append([m.name, f"{pct(g['accuracy'])} {ci_text(g['ci']['accuracy'])}",
                     f"{pct(g['f1_macro'])} {ci_text(g['ci']['f1_macro'])}",
                     *(f"{g['per_class'][name]['f1']:.3f}" for name in groups),
                     "–" if auc is None else f"{auc:.3f}"])
    return rows


def confusion_rows(model: ModelResult, grouped: bool = False) -> list:
    """A confusion matrix as rows of text (true classes down, predicted across), header first."""
    metrics = model.metrics.get("grouped") if grouped else model.metrics
    if not metrics or not metrics.get("confusion_matrix"):
        return []
    names = list(metrics["per_class"])
    rows = [["true \\ predicted", *names]]
    rows += [[name, *(f"{count:,}" for count in counts)] for name, counts in zip(names, metrics["confusion_matrix"])]
    return rows


def per_class_rows(model: ModelResult) -> list:
    rows = [["class", "precision", "recall", "F1", "support"]]
    for name, values in (model.metrics.get("per_class") or {}).items():
        rows.append([name, f"{values['precision']:.3f}", f"{values['recall']:.3f}", f"{values['f1']:.3f}",
                     f"{values['support']:,}"])
    return rows


def comparison_rows(comparison: dict) -> list:
    rows = [["grouping", "b (only first right)", "c (only second right)", "method", "statistic", "p"]]
    for label, key in (("all classes", "mcnemar"), ("valence", "valence_mcnemar")):
        test = comparison.get(key)
        if test:
            statistic = "–" if test["statistic"] is None else f"{test['statistic']:.2f}"
            rows.append([label, str(test["b"]), str(test["c"]), test["method"], statistic, p_text(test["p_value"])])
    return rows


def ensemble_rows(analysis: RunAnalysis) -> list:
    """Each ensemble cell beside its members, with McNemar's test against its best member; [] if none."""
    ensembles = [m for m in analysis.models if m.record.get("members")]
    if not ensembles:
        return []
    accuracy = {m.name: m.accuracy for m in analysis.models}
    rows = [["ensemble", "test accuracy", "members (weight, test accuracy)", "best member", "b / c", "McNemar p"]]
    for model in ensembles:
        record = model.record
        member_accuracy = {**accuracy, **(record.get("member_accuracies") or {})}
        members = ", ".join(f"{cell} ({weight:.2f}, {pct(member_accuracy.get(cell))})"
                            for cell, weight in zip(record["members"], record.get("weights") or []))
        test = record.get("mcnemar_vs_best_member") or {}
        rows.append([model.name, pct(model.accuracy), members, record.get("best_member", "–"),
                     f"{test.get('b', '–')} / {test.get('c', '–')}",
                     p_text(test["p_value"]) if test.get("p_value") is not None else "–"])
    return rows


def _left_out_text(record: dict) -> str:
    """The classes an evaluation left out: the data's (with their images) and the model's."""
    dropped = record.get("classes_dropped") or {}
    data_only = {**(dropped.get("not_in_model") or {}), **(dropped.get("ignored") or {})}
    parts = []
    if data_only:
        parts.append("data: " + ", ".join(f"{name} ({n:,})" for name, n in data_only.items()))
    if dropped.get("not_in_data"):
        parts.append("model: " + ", ".join(dropped["not_in_data"]))
    return "; ".join(parts) or "–"


def evaluation_rows(analysis: RunAnalysis) -> list:
    """The cross-dataset table: one row per model x dataset scored by ``fer-bench evaluate``; [] if none."""
    if not analysis.evaluations:
        return []
    rows = [["model", "trained on", "dataset", "split", "faces", "accuracy [95% CI]", "unrestricted accuracy",
             "macro F1 [95% CI]", "classes scored", "left out (data; model)", "no face"]]
    for result in analysis.evaluations:
        record, ci = result.record, result.metrics.get("ci") or {}
        trained = record.get("model_trained_on") or {}
        rows.append([
            str(record.get("model")), str(trained.get("dataset") or "–"), str(record.get("dataset")),
            str(record.get("split")), f"{record.get('n', 0):,}",
            f"{pct(result.metrics.get('accuracy'))} {ci_text(ci.get('accuracy'))}",
            pct(record.get("accuracy_unrestricted")),
            f"{pct(result.metrics.get('f1_macro'))} {ci_text(ci.get('f1_macro'))}",
            str(len(record.get("classes_scored") or [])), _left_out_text(record),
            f"{record.get('n_no_face', 0):,} ({record['detector']})" if record.get("detector") else "–",
        ])
    return rows


def evaluation_f1_rows(analysis: RunAnalysis) -> list:
    """F1 of each class in each evaluation (classes in the order first met), header first; [] if none."""
    if not analysis.evaluations:
        return []
    classes = list(dict.fromkeys(name for result in analysis.evaluations
                                 for name in (result.metrics.get("per_class") or {})))
    rows = [["model", "dataset", "split", *classes]]
    for result in analysis.evaluations:
        per_class = result.metrics.get("per_class") or {}
        rows.append([str(result.record.get("model")), str(result.record.get("dataset")),
                     str(result.record.get("split")),
                     *(f"{per_class[name]['f1']:.3f}" if name in per_class else "–" for name in classes)])
    return rows


def evaluation_details(analysis: RunAnalysis, shown: int = 10) -> list:
    """What each evaluation left out and where no face was found, one sentence each."""
    lines = []
    for result in analysis.evaluations:
        record = result.record
        heading = f"{record.get('model')} on {record.get('dataset')} ({record.get('split')})"
        dropped = record.get("classes_dropped") or {}
        if dropped.get("not_in_model"):
            lines.append(f"{heading}: data classes the model lacks, not scored: "
                         + ", ".join(f"{name} ({n:,} images)" for name, n in dropped["not_in_model"].items()) + ".")
        if dropped.get("ignored"):
            lines.append(f"{heading}: ignored by --label-map: "
                         + ", ".join(f"{name} ({n:,} images)" for name, n in dropped["ignored"].items()) + ".")
        if dropped.get("not_in_data"):
            lines.append(f"{heading}: model classes the data lacks: {', '.join(dropped['not_in_data'])}; the "
                         f"model's answers were restricted to the {len(record.get('classes_scored') or [])} "
                         "shared classes.")
        if record.get("n_no_face"):
            files = record.get("no_face") or []
            more = f" and {len(files) - shown:,} more (in the record)" if len(files) > shown else ""
            lines.append(f"{heading}: no face found by {record.get('detector')} in {record['n_no_face']:,} images, "
                         f"not scored: {', '.join(files[:shown])}{more}.")
        lines.extend(f"{heading}: {note}." for note in record.get("notes") or [])
    return lines


EVALUATION_TEXT = (
    "Saved models scored with fer-bench evaluate. Scoring covers the classes the model and the data share, "
    "with the model's answer restricted to them; the unrestricted accuracy takes the model's own answer over all "
    "its classes. Intervals: 95% bootstrap ({:,} resamples)."
)


def failed_rows(analysis: RunAnalysis) -> list:
    if not analysis.failed:
        return []
    rows = [["cell", "family", "error"]]
    for record in analysis.failed:
        rows.append([record.get("cell", "?"), FAMILY_NAMES.get(record.get("family"), record.get("family") or "?"),
                     str(record.get("error") or record.get("status"))])
    return rows

# --------------------------------------------------------------------------- the document model


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    text: str
    style: str = ""  # an HTML class: "note"


@dataclass
class Box:
    """Several sentences set apart: one paragraph in Markdown, one ``<p>`` each in HTML."""

    sentences: list
    style: str = "verdict"


@dataclass
class Bullets:
    items: list
    style: str = ""  # an HTML class for each item: "warn"


@dataclass
class Table:
    rows: list  # header first
    row_styles: list | None = None  # an HTML class per body row
    style: str = ""  # an HTML class of the table: "error"


@dataclass
class Figures:
    plots: list
    grid: bool = False  # small multiples side by side


@dataclass
class Document:
    title: str
    blocks: list = field(default_factory=list)


def _split_text(info) -> str:
    split = info.get("split") or {}
    if not split:
        return "unknown split"
    return (f"fit on {split.get('train')}, select on {split.get('validation')}, score on {split.get('test')}"
            + (f" ({split.get('method')})" if split.get("method") else ""))


def _machine_text(machine: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in machine.items() if v is not None)


PLOT_SECTIONS = (("overview", "Accuracy, cost and per-class F1", False), ("roc", "ROC curves", False),
                 ("training", "CNN training curves", False),
                 ("confusion", "Confusion matrices (row-normalised; counts below)", True))


def build_document(analysis: RunAnalysis, plots: dict) -> Document:
    """The whole report as blocks, in reading order; ``plots`` by section as :func:`make_plots` returns them."""
    info = provenance(analysis)
    document = Document(f"fer-bench report: {info['dataset'] or analysis.run_dir.name}")
    add = document.blocks.extend
    if analysis.records:
        add([Heading(document.title, 1),
             Paragraph(f"{_split_text(info)}; preset {', '.join(info['preset']) or 'unknown'}.")])
        if info["notes"]:
            add([Bullets(list(info["notes"]))])
        add([Heading("Verdict"), Box(verdict(analysis))])
    else:  # a folder of fer-bench evaluate records alone
        add([Heading(document.title, 1), Paragraph("No cell was trained in this folder; it holds evaluations of "
                                                   "saved models.")])
    if analysis.models:
        add([Heading("Leaderboard"),
             Paragraph(f"Test accuracy and macro F1 with 95% bootstrap intervals ({analysis.n_resamples:,} "
                       "resamples); valence accuracy after pooling the classes into negative / neutral / positive."),
             Table(leaderboard_rows(analysis), [m.family for m in analysis.models]),
             Paragraph(MEMORY_NOTE, "note")])
    if analysis.comparison and analysis.comparison["mcnemar"]:
        c = analysis.comparison
        add([Heading(f"McNemar: {c['a']} vs {c['b']}"), Table(comparison_rows(c))])
    if analysis.evaluations:
        details = evaluation_details(analysis)
        add([Heading("Cross-dataset evaluation"), Paragraph(EVALUATION_TEXT.format(analysis.n_resamples)),
             Table(evaluation_rows(analysis))] + ([Bullets(details)] if details else [])
            + [Paragraph("F1 per class:"), Table(evaluation_f1_rows(analysis))])
    ensembles = ensemble_rows(analysis)
    if ensembles:
        add([Heading("Ensembles and fusion"),
             Paragraph("Each ensemble averages its members' probabilities with weights chosen on the validation "
                       "split; b counts test faces only the ensemble got right, c those only its best member "
                       "(by validation accuracy) got right."),
             Table(ensembles)])
    if analysis.problems:
        add([Heading("Warnings"), Bullets(list(analysis.problems), "warn")])
    failed = failed_rows(analysis)
    if failed:
        add([Heading("Failed cells"), Table(failed, style="error")])
    for section, title, grid in PLOT_SECTIONS:
        if plots.get(section):
            add([Heading(title), Figures(plots[section], grid)])
    valence = valence_rows(analysis)
    if valence:
        add([Heading("Valence"), Paragraph(VALENCE_TEXT), Table(valence)])
        for family, model in analysis.best.items():
            add([Paragraph(f"Valence confusion of {model.name} (best {FAMILY_NAMES[family]}):"),
                 Table(confusion_rows(model, grouped=True))])
    for family, model in analysis.best.items():
        add([Heading(f"Per class: {model.name} (best {FAMILY_NAMES[family]})"), Table(per_class_rows(model))])
    versions = ", ".join(f"{k} {v}" for k, v in sorted(info["versions"].items()))
    add([Heading("Provenance"), Bullets([
        f"machine: {_machine_text(info['machine'])}",
        f"git commit: {', '.join(info['git_commit']) or 'unknown'}",
        f"versions: {versions}",
        f"generated {datetime.now(timezone.utc).isoformat(timespec='seconds')} from {len(analysis.records)} records"
        + (f" and {len(analysis.evaluations)} evaluations" if analysis.evaluations else ""),
    ])])
    return document


# --------------------------------------------------------------------------- Markdown


def _md_table(rows) -> str:
    escape = lambda text: str(text).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(escape(c) for c in rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(escape(c) for c in row) + " |" for row in rows[1:]]
    return "\n".join(lines)


def _md_block(block) -> str:
    if isinstance(block, Heading):
        return "#" * block.level + " " + block.text
    if isinstance(block, Paragraph):
        return block.text
    if isinstance(block, Box):
        return " ".join(block.sentences)
    if isinstance(block, Bullets):
        return "\n".join(f"- {item}" for item in block.items)
    if isinstance(block, Table):
        return _md_table(block.rows) if block.rows else ""
    if isinstance(block, Figures):
        return "\n".join(f"![{p.caption}](plots/{p.name})" for p in block.plots)
    raise TypeError(f"no Markdown for {type(block).__name__}")


def to_markdown(document: Document) -> str:
    """The document as Markdown; plots are linked as ``plots/<name>.png``."""
    return "\n\n".join(text for text in map(_md_block, document.blocks) if text) + "\n"


def render_markdown(analysis: RunAnalysis, plots: dict) -> str:
    """The report of ``analysis`` as Markdown."""
    return to_markdown(build_document(analysis, plots))


# --------------------------------------------------------------------------- HTML

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.5em; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; } td:nth-child(2), td:first-child { text-align: left; }
tr.classic td:nth-child(2) { color: #1f77b4; } tr.deep td:nth-child(2) { color: #d62728; }
.verdict { background: #f6f8fa; border-left: 4px solid #1f77b4; padding: 0.6em 1em; }
.warn { color: #8a5a00; } .note { font-size: 0.8em; color: #555; } .error td { color: #a00; white-space: normal; text-align: left; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figure img { max-width: 100%; } figcaption { font-size: 0.8em; color: #555; }
.grid figure img { width: 360px; }
"""


def _class(style) -> str:
    return f' class="{style}"' if style else ""


def _html_table(table: Table) -> str:
    rows = table.rows
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in rows[0])
    body = []
    for index, row in enumerate(rows[1:]):
        style = table.row_styles[index] if table.row_styles else ""
        body.append(f"<tr{_class(style)}>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>")
    return f"<table{_class(table.style)}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _html_figure(plot: Plot) -> str:
    data = base64.b64encode(plot.png).decode("ascii")
    return (f'<figure><img alt="{html.escape(plot.caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(plot.caption)}</figcaption></figure>")


def _html_block(block) -> str:
    if isinstance(block, Heading):
        return f"<h{block.level}>{html.escape(block.text)}</h{block.level}>"
    if isinstance(block, Paragraph):
        return f"<p{_class(block.style)}>{html.escape(block.text)}</p>"
    if isinstance(block, Box):
        return f"<div{_class(block.style)}>" + "".join(f"<p>{html.escape(s)}</p>" for s in block.sentences) + "</div>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li{_class(block.style)}>{html.escape(item)}</li>" for item in block.items) + "</ul>"
    if isinstance(block, Table):
        return _html_table(block)
    if isinstance(block, Figures):
        return f'<div{_class("grid" if block.grid else "")}>' + "".join(map(_html_figure, block.plots)) + "</div>"
    raise TypeError(f"no HTML for {type(block).__name__}")


def to_html(document: Document) -> str:
    """The document as one HTML page: inline CSS, plots embedded as base64 PNG, no external resources."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(document.title)}</title><style>{CSS}</style></head><body>\n"
            + "\n".join(text for text in map(_html_block, document.blocks) if text) + "\n</body></html>\n")


def render_html(analysis: RunAnalysis, plots: dict) -> str:
    """The report of ``analysis`` as a self-contained HTML page."""
    return to_html(build_document(analysis, plots))


# --------------------------------------------------------------------------- terminal summary


def _text_table(rows) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).ljust(w) if i in (1, 2) else str(c).rjust(w) for i, (c, w) in
                       enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def summary_text(analysis: RunAnalysis, models: tuple | None = None) -> str:
    """The classical-vs-deep summary for a terminal; with ``models=(A, B)``, that pair's comparison."""
    out = []
    if analysis.models:
        rows = leaderboard_rows(analysis)
        out += [_text_table([row[:7] + row[8:10] for row in rows]), ""]
    if models:
        a, b = (analysis.model(name) for name in models)
        comparison = compare_models(a, b)
        out.append(f"{a.name} vs {b.name}: {pct(a.accuracy)} vs {pct(b.accuracy)} test accuracy, "
                   f"{comparison['difference_points']:+.1f} points")
        if comparison["mcnemar"] is None:
            out.append("  no McNemar test: the two were not scored on the same test faces")
        for label, key in (("all classes", "mcnemar"), ("valence", "valence_mcnemar")):
            test = comparison.get(key)
            if test:
                verdict_word = "significant" if test["p_value"] < ALPHA else "not significant"
                out.append(f"  McNemar ({label}): b={test['b']} only {a.name} right, c={test['c']} only {b.name} "
                           f"right; {test['method']}, p = {p_text(test['p_value'])} ({verdict_word} at "
                           f"{ALPHA:.0%})")
        for model in (a, b):
            out.append(f"  {model.name}: {describe_cost(model)}")
    else:
        out += verdict(analysis)
    if analysis.failed:
        out.append("")
        out += [f"failed: {r.get('cell')}: {r.get('error')}" for r in analysis.failed]
    for problem in analysis.problems:
        out.append(f"warning: {problem}")
    return "\n".join(out)
