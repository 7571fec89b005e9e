"""The report of a run folder, rendered from its records and predictions alone."""

from .document import *  # noqa: F401,F403
from .document import CSV_COLUMNS, ReportError, analyse_run, load_records, resolve_path, summary_text, verdict, write_report  # noqa: F401
