"""Prompt sets shipped with lorasel (TOML files in this folder)."""
