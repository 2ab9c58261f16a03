"""Screens shown over the main view: help, terminal too small, no results yet."""
