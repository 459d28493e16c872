"""aitk.tui"""
