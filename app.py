"""Entry point of the comparison tool (Hugging Face Spaces runs this file).

Until the Gradio UI lands, `python app.py "a prompt" --seed 0` runs the side-by-side command-line
comparison: one image per architecture and a table of each stage's seconds and peak memory.
"""

import sys

from comparisons.compare import main

if __name__ == "__main__":
    sys.exit(main())
