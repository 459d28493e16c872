"""aitk.cli"""
