"""Screenshot every figure of a Snakemake HTML report as the report itself shows it.

    python tools/report_screenshots.py report.html OUTDIR

The report is a single-page app; this writes a copy that, on load, opens the result named by
the URL's #index in the report's own viewer (what clicking its button does), and has headless
Chromium screenshot each one. Prints one line per figure: its path, the screenshot, and
whether the image decoded in the page (naturalWidth > 0, checked with --dump-dom).
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

VIEWER = """
<script>
window.addEventListener("load", () => setTimeout(() => {
  const keys = Object.keys(results);
  const index = parseInt(location.hash.slice(1));
  const path = keys[index];
  const entry = results[path];
  app.setView({navbarMode: "resultinfo", content: "img", contentPath: entry.data_uri, resultPath: path});
  setTimeout(() => {
    const img = document.querySelector("#app img[src^='data:image']");
    document.body.setAttribute("data-figure", path);
    document.body.setAttribute("data-rendered", img && img.complete && img.naturalWidth > 0 ? "yes" : "no");
  }, 500);
}, 300));
</script>
"""


def figure_paths(html: str) -> list[str]:
    match = re.search(r"var results = (\{.*?\});?\n", html)
    if not match:
        raise SystemExit("error: no `var results = {...}` in the report; is it a Snakemake HTML report?")
    return list(json.loads(match.group(1)))


def main(report: str, outdir: str) -> int:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        raise SystemExit("error: no chromium on PATH; install it (apt-get install chromium)")
    html = Path(report).read_text()
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    view = out / "view.html"
    head, tag, tail = html.rpartition("</body>")  # the last one: scripts hold the string too
    view.write_text(head + VIEWER + tag + tail)
    paths = figure_paths(html)
    failures = 0
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=4000"]
    for index, path in enumerate(paths):
        if not path.endswith((".png", ".svg", ".jpg")):
            print(f"{path}: not an image (offered as a download by the report)")
            continue
        url = f"file://{view.resolve()}#{index}"
        shot = out / f"{index:02d}_{Path(path).parent.parent.name}_{Path(path).stem}.png"
        subprocess.run([browser, *flags, "--window-size=1400,1000", f"--screenshot={shot}", url],
                       capture_output=True, timeout=120, check=True)
        dom = subprocess.run([browser, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
        rendered = 'data-rendered="yes"' in dom and f'data-figure="{path}"' in dom
        failures += not rendered
        print(f"{path}: {shot} rendered={'yes' if rendered else 'NO'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
