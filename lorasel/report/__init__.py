"""Reports of a ranking: ``scores.csv`` (:func:`write_csv`) and a self-contained ``report.html``
(:func:`write_html`) with the recommendation, the sortable table, render grids and plots."""

from __future__ import annotations

from lorasel.report.html import render_html, write_html
from lorasel.report.scores_csv import write_csv

__all__ = ["render_html", "write_csv", "write_html"]
