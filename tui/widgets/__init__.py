"""Widgets of aitk-tui that are not panes: chart, histogram, status bar, form fields."""
