"""The app's backend and views: what `app.py` wires to its widgets, without gradio."""
