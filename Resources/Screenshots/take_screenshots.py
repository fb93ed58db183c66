"""Take the README screenshots of the web viewer in headless Chromium on the bundled sample.

    PYTHONPATH=JCSDiagnosis:. python Resources/Screenshots/take_screenshots.py OUT_DIR [--device cpu]

Starts `jcs-viewer --sample` on a free loopback port, opens it in Debian's Chromium, takes the page
before Diagnose, after Diagnose (heatmap on the hottest slice), the summary and lesion tables and the
3-D lesion surfaces. Look at every picture before it goes into the README.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
ADDRESS = re.compile(r"JCS Diagnosis viewer: (http://127\.0\.0\.1:\d+/)")


def start_viewer(device: str) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ)
    env.pop("DISPLAY", None)
    command = [sys.executable, "-m", "JCSDiagnosisViewer.app", "--sample", "--port", "0", "--device", device]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.monotonic() + 180
    for line in process.stdout:
        print(line, end="", file=sys.stderr)
        match = ADDRESS.search(line)
        if match:
            return process, match.group(1)
        if time.monotonic() > deadline:
            break
    process.kill()
    raise SystemExit("jcs-viewer printed no address")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    process, url = start_viewer(args.device)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1600, "height": 950})
            page.set_default_timeout(60_000)
            page.goto(url)
            expect(page.locator("#jcs-rule")).to_be_visible()
            page.wait_for_timeout(3000)
            page.screenshot(path=args.out / "viewer-1-before-diagnose.png")
            page.click("#jcs-diagnose")
            expect(page.locator("#jcs-decision")).to_be_visible(timeout=300_000)
            page.wait_for_timeout(2000)
            # the slice with the largest opacified share: click its bar in the chart
            bars = page.locator("#jcs-chart rect")
            heights = [float(bars.nth(i).get_attribute("height")) for i in range(bars.count())]
            hottest = max(range(len(heights)), key=heights.__getitem__)
            box = page.locator("#jcs-chart").bounding_box()
            page.locator("#jcs-chart").click(
                position={"x": (hottest + 0.5) / len(heights) * box["width"], "y": box["height"] / 2}
            )
            page.wait_for_timeout(3000)
            page.screenshot(path=args.out / "viewer-2-diagnosed-heatmap.png")
            page.click("#jcs-tab-lesions")
            page.wait_for_timeout(1000)
            page.locator(".v-navigation-drawer--right").screenshot(path=args.out / "viewer-3-lesions.png")
            page.click("#jcs-tab-slices")
            page.wait_for_timeout(1000)
            page.locator(".v-navigation-drawer--right").screenshot(path=args.out / "viewer-3-slices.png")
            page.click("#jcs-tab-summary")
            page.wait_for_timeout(1000)
            page.locator(".v-navigation-drawer--right").screenshot(path=args.out / "viewer-3-summary.png")
            threed = page.locator("div:has(> #jcs-view-threed)").first
            threed.screenshot(path=args.out / "viewer-4-3d.png")
            page.click("#jcs-tool-editor")
            page.locator(".v-navigation-drawer .v-card-item button:has(i.mdi-brush)").click()
            page.wait_for_timeout(1500)
            page.screenshot(path=args.out / "viewer-5-editor.png")
            browser.close()
    finally:
        process.terminate()
        process.wait(timeout=20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
