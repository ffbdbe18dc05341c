"""The app's screens, one module per tab (plus the header): layout and wiring only, each calling its tab's backend in
`comparisons.app` (built by `comparisons.app.backends.Backends.of`; the header calls the session). `app.py` puts
them on one page."""
