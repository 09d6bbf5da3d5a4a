"""Report statistics and rendering: report.json (core.reports) to md/html/csv/svg.

Torch-free (DESIGN §4), so the service, the CI gate and `robustlab render` read and draw reports
without the science stack.
"""
