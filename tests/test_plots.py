"""Figures that compare lotteries draw every lottery: one panel each (R_p vs p, error vs
alpha), and the stability line sits at the configured threshold."""
import struct

import numpy as np
import pandas as pd

from lth.report import plots


def png_size(path) -> tuple[int, int]:
    raw = path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", raw[16:24])


def rp_frame(runs):
    return pd.DataFrame([{"run": run, "level": level, "layer": "all", "p": p, "r_p": p + 0.1,
                          "weights_remaining_pct": remaining}
                         for run in runs for level, remaining in ((0, 100.0), (3, 51.2)) for p in (0.1, 0.2, 0.3)])


def path_frame(lotteries):
    return pd.DataFrame([{"lottery": lottery, "split": split, "level": 0, "variant": "ticket", "k": "0it",
                          "alpha": a, "error": 0.1 + 0.05 * np.sin(np.pi * a), "pair": 0,
                          "weights_remaining_pct": 100.0}
                         for lottery in lotteries for split in ("test", "train") for a in np.linspace(0, 1, 5)])


def test_rp_vs_p_has_one_panel_per_lottery(tmp_path):
    plots.rp_vs_p(rp_frame(["lr=0.0003"]), tmp_path / "one.png")
    plots.rp_vs_p(rp_frame(["lr=0.0003", "lr=0.0012", "lr=0.005"]), tmp_path / "three.png")
    (w1, h1), (w3, h3) = png_size(tmp_path / "one.png"), png_size(tmp_path / "three.png")
    assert h1 == h3 and w3 == 3 * w1


def test_error_vs_alpha_has_a_column_per_lottery(tmp_path):
    plots.error_vs_alpha(path_frame(["a"]), tmp_path / "one.png")
    plots.error_vs_alpha(path_frame(["a", "b"]), tmp_path / "two.png")
    (w1, h1), (w2, h2) = png_size(tmp_path / "one.png"), png_size(tmp_path / "two.png")
    assert h1 == h2 and w2 == 2 * w1


def test_stability_line_is_the_configured_threshold(tmp_path, monkeypatch):
    import matplotlib.axes
    drawn = []
    original = matplotlib.axes.Axes.axhline
    monkeypatch.setattr(matplotlib.axes.Axes, "axhline",
                        lambda self, y=0, *a, **k: drawn.append((y, k.get("label"))) or original(self, y, *a, **k))
    result = pd.DataFrame([{"lottery": "imp", "level": 0, "variant": "ticket", "k": "0it",
                            "instability_test": 0.03, "weights_remaining_pct": 100.0}])
    plots.instability_vs_k(result, tmp_path / "k.png", 0.05)
    plots.instability_vs_remaining(result, tmp_path / "r.png", 0.05)
    assert drawn == [(5.0, "stable below 5 %")] * 2
