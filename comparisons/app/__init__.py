"""The app: a session that loads the models, one Gradio-free backend per tab (built by `backends.Backends.of`) and
what they share (input checks, progress, views); `ui/` lays each tab out and wires it to its backend."""
