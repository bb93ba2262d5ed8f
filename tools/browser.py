"""Drive headless Chromium (through playwright-core on Node.js) to load a page and screenshot it.

Used by the browser tests of the viewer and the HTML export, and by
``tools/bench/html_export.py``. Needs Debian's ``chromium``, ``node`` and the npm
package ``playwright-core`` (``tools/setup_browser.sh`` installs them; ``GEO_CHROMIUM``
and ``GEO_PLAYWRIGHT_CORE`` override where they are looked for).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

__all__ = ["BrowserMissing", "find_browser", "shoot"]

REPO = Path(__file__).resolve().parents[1]
INSTALL = "bash tools/setup_browser.sh  (apt-get install -y chromium; npm install --prefix .venv/node playwright-core)"

# Flags for a headless browser on a machine with no GPU and no network: software GL,
# no background traffic, a fresh profile per run.
DRIVER_JS = r"""
const { chromium } = require(process.env.GEO_PLAYWRIGHT_CORE);
(async () => {
  const job = JSON.parse(process.argv[2]);
  const context = await chromium.launchPersistentContext(job.profile, {
    executablePath: job.chromium, headless: true,
    viewport: { width: job.width, height: job.height }, deviceScaleFactor: 1,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
           '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic',
           '--use-angle=swiftshader', '--enable-unsafe-swiftshader'],
  });
  const page = context.pages()[0] || await context.newPage();
  const errors = [], logs = [];
  page.on('console', (m) => { logs.push(m.type() + ': ' + m.text()); if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', (e) => errors.push('uncaught: ' + e.message));
  const t0 = Date.now();
  let info = null;
  try {
    await page.goto(job.url, { waitUntil: 'load', timeout: job.timeout_ms });
    await page.waitForFunction(job.ready, null, { timeout: job.timeout_ms, polling: 100 });
    info = await page.evaluate(job.info);
  } catch (e) { errors.push('driver: ' + e.message); }
  const readyMs = Date.now() - t0;
  await page.waitForTimeout(job.settle_ms);
  // content that arrives progressively (a viewer streaming its scene): wait until two captures of
  // the element, stable_interval_ms apart, are identical, or until timeout_ms has passed
  let stable = null;
  if (job.stable_selector) {
    const el = page.locator(job.stable_selector).first();
    const until = Date.now() + job.timeout_ms;
    let prev = await el.screenshot();
    stable = false;
    while (!stable && Date.now() < until) {
      await page.waitForTimeout(job.stable_interval_ms);
      const cur = await el.screenshot();
      stable = cur.equals(prev);
      prev = cur;
    }
  }
  for (const shot of job.shots) {
    if (shot.css) await page.addStyleTag({ content: shot.css });
    await page.screenshot({ path: shot.path });
  }
  await context.close();
  console.log(JSON.stringify({ errors, logs, info, ready_ms: readyMs, stable, total_ms: Date.now() - t0 }));
})().catch((e) => { console.log(JSON.stringify({ errors: ['driver crashed: ' + e.stack], logs: [] })); });
"""


class BrowserMissing(RuntimeError):
    """Chromium, Node.js or playwright-core is not installed."""


def find_browser() -> tuple[str, str, str]:
    """``(chromium, node, playwright-core dir)``; raises :class:`BrowserMissing` saying how to install."""
    chromium = os.environ.get("GEO_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    node = shutil.which("node")
    pw = Path(os.environ.get("GEO_PLAYWRIGHT_CORE", REPO / ".venv" / "node" / "node_modules" / "playwright-core"))
    missing = [what for what, ok in (("chromium", chromium), ("node", node), (f"playwright-core at {pw}", pw.is_dir())) if not ok]
    if missing:
        raise BrowserMissing(f"the browser driver needs {', '.join(missing)}; install with: {INSTALL} "
                             "(or set GEO_CHROMIUM / GEO_PLAYWRIGHT_CORE)")
    return chromium, node, str(pw)


def shoot(work: Path, url: str, ready: str, info: str, shots: list[dict], *, size: tuple[int, int] = (512, 512),
          settle_ms: int = 0, timeout_ms: int = 60000, stable_selector: str | None = None,
          stable_interval_ms: int = 1000) -> dict:
    """Load ``url`` in headless Chromium, wait until the JS expression ``ready`` is true,
    evaluate ``info``, wait ``settle_ms``, and take the screenshots ``shots``
    (``[{"path": ..., "css": optional style injected first}]``).

    With ``stable_selector`` (a CSS selector), it then also waits until two screenshots of
    that element taken ``stable_interval_ms`` apart are identical (at most ``timeout_ms``), for
    pages whose content keeps arriving after they are ready, such as a streaming viewer on a
    busy machine.

    Returns:
        ``{"errors": [...JS errors...], "logs": [...console...], "info": ..., "ready_ms": ms from
        navigation to ready, "stable": whether the element settled (None without a selector),
        "total_ms": ms from navigation to the screenshots}``.
    """
    chromium, node, pw = find_browser()
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    driver = work / "driver.js"
    driver.write_text(DRIVER_JS)
    profile = work / f"profile-{len(list(work.glob('profile-*')))}"  # a fresh --user-data-dir per run
    job = dict(url=url, ready=ready, info=info, shots=shots, settle_ms=settle_ms, timeout_ms=timeout_ms,
               width=size[0], height=size[1], chromium=chromium, profile=str(profile),
               stable_selector=stable_selector, stable_interval_ms=stable_interval_ms)
    r = subprocess.run([node, str(driver), json.dumps(job)], capture_output=True, text=True, timeout=180,
                       env={**os.environ, "GEO_PLAYWRIGHT_CORE": pw})
    if not r.stdout.strip():
        raise RuntimeError(f"browser driver printed nothing; stderr:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])
