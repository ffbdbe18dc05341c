"""The lab's programs, on top of the comparisons like the app: `research.evaluate` scores the shipped weights on the
Shapes checker, `research.study` tests the papers' claims and writes research/findings/. Both make every image
through the comparisons harness, so they sit above it; nothing below imports them."""
