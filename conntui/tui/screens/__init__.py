"""Screens: the main screen, help and the export dialog."""
