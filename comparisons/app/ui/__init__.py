"""The app's screens, one module per tab (plus the header): layout and wiring only, each calling
`comparisons.app.session.Session`. `app.py` puts them on one page."""
