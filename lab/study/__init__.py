"""The Shapes lab as a research instrument: `python -m lab.study [--quick]` tests what the DALL·E 2 and LDM papers
claim about each other against the lab's ground truth and writes lab/findings/ (REPORT.md, a plot per claim,
findings.json). See lab.study.cli."""
