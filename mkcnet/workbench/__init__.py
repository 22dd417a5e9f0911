"""The workbench: a Gradio app for quality-aware diagnosis (`python app.py` or `mkcnet app`).

Importing this package makes the process offline-safe before anything imports gradio:
analytics and update checks off, and the Hugging Face hub never contacted.
"""

from __future__ import annotations

import os


def offline_environment() -> None:
    """Set the variables that keep gradio offline. Forced, not defaulted: the app promises to
    work with no network, so a stray GRADIO_ANALYTICS_ENABLED=True must not make it phone home."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"


offline_environment()
