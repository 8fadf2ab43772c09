"""Loading a local HTML file in headless Chromium (the Debian package `chromium`) for the report tests: a screenshot,
and what a probe script saw once the page had loaded (images loaded or broken, errors, console.error calls).

The probe is added to a copy of the page beside it (same folder, so relative links resolve alike); the page itself
is left as written.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import tempfile

import pytest

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--hide-scrollbars")

# Records every error event (scripts and failed resources: capture phase) and console.error call, then on load
# writes the image census into <body data-probe="...">, which --dump-dom prints.
PROBE = """<script>
window.__probeErrors = [];
window.addEventListener("error", function (e) {
  window.__probeErrors.push(String(e.message || (e.target && (e.target.src || e.target.href)) || "error"));
}, true);
(function () {
  var original = console.error;
  console.error = function () {
    window.__probeErrors.push("console.error: " + Array.prototype.join.call(arguments, " "));
    return original.apply(console, arguments);
  };
})();
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  document.body.setAttribute("data-probe", JSON.stringify({
    images: images.length,
    loaded: images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length,
    errors: window.__probeErrors}));
});
</script>"""


def find_chromium() -> str:
    """The Chromium executable, or a pytest skip saying how to get it."""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("needs headless Chromium (Debian: apt-get install chromium); not found on PATH")


def _run(chromium: str, args: list[str], timeout: float = 120.0) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        return subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                              text=True, timeout=timeout)


def load_page(path: str, screenshot: str, window_size: tuple[int, int] = (1200, 2400)) -> dict:
    """Loads `path` from disk (file://) twice: once with the probe (DOM dump), once as is (screenshot).

    Returns {"probe": {"images", "loaded", "errors"}, "console": [console lines Chromium logged],
    "screenshot": the PNG path}.
    """
    chromium = find_chromium()
    path = os.path.abspath(path)
    with open(path, encoding="utf-8") as f:
        page = f.read()
    probed = os.path.join(os.path.dirname(path), f".probe-{os.path.basename(path)}")
    with open(probed, "w", encoding="utf-8") as f:
        f.write(page.replace("<head>", "<head>" + PROBE, 1))
    try:
        dump = _run(chromium, ["--virtual-time-budget=5000", "--enable-logging=stderr", "--v=0", "--dump-dom",
                               "file://" + probed])
    finally:
        os.remove(probed)
    match = re.search(r'data-probe="([^"]*)"', dump.stdout)
    assert match, f"the probe did not run (page did not load?): rc {dump.returncode}\n{dump.stderr[-2000:]}"
    probe = json.loads(html.unescape(match.group(1)))
    console = [line for line in dump.stderr.splitlines() if "CONSOLE" in line]
    shot = _run(chromium, [f"--screenshot={os.path.abspath(screenshot)}",
                           f"--window-size={window_size[0]},{window_size[1]}", "file://" + path])
    assert os.path.exists(screenshot), f"no screenshot: rc {shot.returncode}\n{shot.stderr[-2000:]}"
    return {"probe": probe, "console": console, "screenshot": screenshot}
