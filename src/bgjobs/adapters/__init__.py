"""Bundled adapters: console and memory for development and tests, SMTP and local files for real use."""
