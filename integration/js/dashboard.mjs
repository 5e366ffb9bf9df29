// Drives the dashboard in headless Chromium as an operator would (integration/tests/dashboard.rs).
//
//   node dashboard.mjs '<json>'   with {url, key, centers, edge, pod, target, sandbox, hold, shots}
//
// Signs in with the admin key, waits for both centers and the edge, migrates the pod from the
// pod's menu, sees it syncing (the test holds the copy back with the `hold` file, which this
// script removes once the bar shows), watches the bar reach 100 % through the live event stream
// (the page never polls), opens a terminal on the sandbox and one on the edge from their rows
// (a tab of its own with xterm.js: types a command, reads its output and the exit code), stops
// the sandbox, and saves a screenshot after each step in `shots`.
// Prints one JSON line: what it saw. Exits 1 with the reason on any failure.
import { chromium } from 'playwright-core';
import { rmSync } from 'node:fs';

const args = JSON.parse(process.argv[2]);
const executablePath = process.env.XPOD_TEST_CHROMIUM || '/usr/bin/chromium';
const seen = { progress: [], requests: [] };

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
  page.on('response', (r) => r.status() >= 400 && errors.push(`${r.status()} ${r.url()}`));
  page.on('request', (r) => seen.requests.push(`${r.method()} ${new URL(r.url()).pathname}`));
  const shot = (name) => page.screenshot({ path: `${args.shots}/${name}.png`, fullPage: true });

  await page.goto(`${args.url}/-/dashboard`);
  await page.fill('#key', args.key);
  await page.click('#signin button[type=submit]');
  for (const c of args.centers) await page.waitForSelector(`#nodes tr[data-node="${c}"]`);
  await page.waitForSelector(`#edges tr[data-edge="${args.edge}"]`);
  await page.waitForSelector('#live.online');
  seen.certs = {};
  for (const n of [...args.centers, args.edge]) {
    seen.certs[n] = (await page.textContent(`#nodes tr[data-node="${n}"] td.cert`)).trim();
  }
  seen.key_in_session = await page.evaluate(() => sessionStorage.getItem('xpod.adminKey') !== null);
  seen.key_in_local = await page.evaluate(() => JSON.stringify(localStorage).includes('xp_'));
  await shot('1-signed-in');

  // Migrate from the pod's menu.
  const row = `#pods tr[data-pod="${args.pod}"]`;
  seen.targets = await page.$$eval(`${row} select option`, (os) => os.map((o) => o.value));
  await page.selectOption(`${row} select`, args.target);
  const requestsBefore = seen.requests.length;
  await page.click(`${row} button.migrate`);
  await page.waitForSelector(`${row} .progress[data-status="syncing"]`);
  seen.progress.push(Number(await page.getAttribute(`${row} .progress`, 'aria-valuenow')));
  await shot('2-syncing');
  rmSync(args.hold, { force: true });
  const deadline = Date.now() + 60_000;
  for (;;) {
    const v = Number(await page.getAttribute(`${row} .progress`, 'aria-valuenow'));
    if (seen.progress.at(-1) !== v) seen.progress.push(v);
    if (v === 100) break;
    if (Date.now() > deadline) throw new Error(`the bar stopped at ${v} %`);
    await page.waitForTimeout(100);
  }
  seen.owner = (await page.textContent(`${row} td.owner`)).trim();
  // While it synced, the page fetched pods only when the event stream said they changed.
  seen.pod_fetches = seen.requests.slice(requestsBefore).filter((r) => r === 'GET /.cluster/pods').length;
  await shot('3-migrated');

  // Terminals, each in a tab of its own opened from its row: type, read, exit.
  const terminal = async (rowButton, command, expect, exitCode, name) => {
    const [tab] = await Promise.all([page.waitForEvent('popup'), page.click(rowButton)]);
    tab.on('pageerror', (e) => errors.push(`${name}: ${e}`));
    tab.on('console', (m) => m.type() === 'error' && errors.push(`${name}: ${m.text()}`));
    await tab.waitForSelector('#status[data-state="open"]', { timeout: 20_000 });
    await tab.waitForSelector('.xterm-rows');
    await tab.keyboard.type(command);
    await tab.keyboard.press('Enter');
    await tab.waitForFunction(
      (want) => document.querySelector('.xterm-rows')?.textContent.includes(want),
      expect,
      { timeout: 20_000 },
    );
    const rows = await tab.textContent('.xterm-rows');
    await tab.screenshot({ path: `${args.shots}/${name}.png` });
    await tab.keyboard.type(`exit ${exitCode}`);
    await tab.keyboard.press('Enter');
    await tab.waitForSelector('#status[data-state="exited"]', { timeout: 20_000 });
    const status = (await tab.textContent('#status')).trim();
    await tab.close();
    return { saw: rows.includes(expect), status };
  };
  seen.sandbox_terminal = await terminal(
    `#sandboxes tr[data-sandbox="${args.sandbox}"] button.terminal`,
    'echo in-sandbox-$((6*7)) $(hostname)',
    'in-sandbox-42 sandbox',
    3,
    '4-sandbox-terminal',
  );
  seen.edge_terminal = await terminal(
    `#edges tr[data-edge="${args.edge}"] button.terminal`,
    'echo on-edge-$((40+2)) $XPOD_NODE_ID',
    `on-edge-42 ${args.edge}`,
    4,
    '5-edge-terminal',
  );

  // Stop the sandbox (stopping deletes it: its row goes).
  const sb = `#sandboxes tr[data-sandbox="${args.sandbox}"]`;
  seen.sandbox_shown = (await page.textContent(`${sb} td.status`)).trim();
  await page.click(`${sb} button.stop`);
  await page.waitForSelector(sb, { state: 'detached', timeout: 30_000 });
  seen.sandbox_gone = true;
  await shot('6-sandbox-stopped');
  seen.errors = errors;
  delete seen.requests;
  console.log(JSON.stringify(seen));
} catch (e) {
  console.error(`dashboard: ${e.stack || e}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
