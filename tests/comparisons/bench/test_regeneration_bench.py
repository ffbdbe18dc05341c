"""The regeneration benchmark's comparison: exact run to run, the ways on one path, each path against the native one
and any against any, on made-up images whose differences are known."""

import numpy as np
import pytest

from comparisons.bench.regeneration import AGAIN, compare, format_regeneration

WAYS = ["batch, 2 threads, eager", "alone, 2 threads, eager"]


def child(offset: int, alone_offset: int = 0, again_offset: int = 0) -> dict:
    base = np.full((2, 4, 4, 3), 100, np.uint8)
    return {
        "ways": {"case": WAYS},
        "again": WAYS[0],
        "images": {
            f"case|unclip|{WAYS[0]}": base + offset,
            f"case|unclip|{WAYS[1]}": base + offset + alone_offset,
            f"case|unclip|{AGAIN}": base + offset + again_offset,
        },
    }


def test_compare_finds_each_difference_where_it_is():
    [result] = compare({"native": child(0, alone_offset=1), "capped": child(3)}).values()
    assert result["exact_run_to_run"] is True
    assert result["one path, any two ways"]["max_levels"] == 1  # batch vs alone, natively
    assert result["per path, against native"]["capped"]["max_levels"] == 3  # capped batch vs native batch
    assert result["any two paths, any two ways"]["max_levels"] == 3
    assert result["any two paths, any two ways"]["min_psnr_db"] == pytest.approx(10 * np.log10(255**2 / 9))
    assert compare({"native": child(0, again_offset=1)})["case|unclip"]["exact_run_to_run"] is False


def test_the_report_reads():
    results = compare({"native": child(0), "capped": child(2)})
    text = format_regeneration({"machine": {"cpu": "a CPU"}, "date": "2026-12-07", "results": list(results.values())})
    assert "case, unclip: run to run exact: True" in text
    assert "capped           vs native: 2 levels, 100.00%, PSNR 42.1 dB" in text
