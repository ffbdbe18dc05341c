"""The Shapes lab as a research instrument: `python -m research.study [--quick]` tests what the DALL·E 2 and LDM papers
claim about each other against the lab's ground truth and writes research/findings/ (REPORT.md, a plot per claim,
findings.json). See research.study.cli."""
