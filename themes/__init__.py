"""aitk.themes"""
