"""The report of a run folder, rendered from its records and test predictions alone (no model is loaded).

- :mod:`~fer_bench.report.analysis`: records and predictions -> figures, comparisons, the verdict;
- :mod:`~fer_bench.report.plots`: the figures as PNG;
- :mod:`~fer_bench.report.document`: one document model, rendered to Markdown and to HTML, and the terminal summary;
- :mod:`~fer_bench.report.export`: records.json, records.csv and :func:`write_report`, which writes every file.
"""

from .analysis import ReportError, RunAnalysis, analyse_run, load_records, resolve_path, verdict
from .document import build_document, render_html, render_markdown, summary_text
from .export import CSV_COLUMNS, write_records, write_report

__all__ = ["CSV_COLUMNS", "ReportError", "RunAnalysis", "analyse_run", "build_document", "load_records",
           "render_html", "render_markdown", "resolve_path", "summary_text", "verdict", "write_records",
           "write_report"]
