"""`factory report`: the loop in pictures, a static HTML page with PNG plots read from the warehouse."""

from factory_dagster.report.write import ReportResult, write_report

__all__ = ["ReportResult", "write_report"]
