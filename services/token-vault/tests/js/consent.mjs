// Drives headless Chromium through the consent flow: opens the authorization link (argv[2]),
// clicks Allow on the sandbox's consent page, follows the redirect to token-vault's callback,
// and prints the landing page's URL, title and #message text as one JSON line.
// Needs playwright-core in .tools/node (make tools) and /usr/bin/chromium.
import { createRequire } from 'node:module';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const require = createRequire(join(process.env.NODE_TOOLS_DIR, 'package.json'));
const { chromium } = require('playwright-core');

const link = process.argv[2];
const profile = mkdtempSync(join(tmpdir(), 'agentauth-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});
try {
  const page = context.pages()[0] ?? await context.newPage();
  await page.goto(link, { timeout: 20000 });
  const consent = { url: page.url(), title: await page.title() };
  await Promise.all([
    page.waitForURL(/\/oauth\/callback/, { timeout: 20000 }),
    page.click('#allow'),
  ]);
  await page.waitForLoadState('load');
  const message = await page.locator('#message').textContent({ timeout: 10000 });
  console.log(JSON.stringify({ consent, url: page.url(), title: await page.title(), message }));
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
