"""aitk.providers"""
