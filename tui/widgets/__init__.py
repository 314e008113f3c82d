"""Widgets of the runctl UI, one module each."""
