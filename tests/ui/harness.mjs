// What every browser test of the itsm web UI shares: real headless
// Chromium held to the server's origin, sign-in through the form, and a
// verdict that fails on a foreign request, a page error or a CSP violation.
//
//   import { run, fail, log } from './harness.mjs';
//   await run('what passed', base, token, async ({ page, me, textOf }) => { ... });
//
// With `token` null, `options.signIn({ page, log })` signs in instead (the
// identity provider's pages); `options.allowOrigins` are the origins the
// browser may reach beside the server's (the provider's). `me` is then
// read with the token the page keeps, and `token` passed to the body.

import { chromium } from 'playwright-core';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const CHROMIUM = '/usr/bin/chromium';
const OVERALL_MS = 30_000;
const STEP_MS = 10_000;
const started = Date.now();

export function log(message) {
  console.log(`[${((Date.now() - started) / 1000).toFixed(1)} s] ${message}`);
}

class Failure extends Error {}
export function fail(message) {
  throw new Failure(message);
}

/** Sign in with `token` at `base`, run `body`, print PASS or FAIL, exit. */
export async function run(passed, baseArg, tokenArg, body, options = {}) {
  let token = tokenArg;
  const base = baseArg.replace(/\/+$/, '');
  const origin = new URL(base).origin;
  // A hung browser must not hang the caller.
  const watchdog = setTimeout(() => {
    console.error(`FAIL: the UI test did not finish within ${OVERALL_MS / 1000} s`);
    process.exit(1);
  }, OVERALL_MS);
  watchdog.unref();
  const foreign = [];
  const pageErrors = [];
  const cspViolations = [];
  const consoleErrors = [];
  let browser;
  let page;

  async function textOf(selector) {
    try {
      const el = page.locator(selector);
      if (!(await el.count())) return '';
      return ((await el.first().textContent()) || '').trim();
    } catch (_) {
      return '';
    }
  }

  // Who the token belongs to, straight from the API (not through the page).
  async function whoIs(t) {
    const meResp = await fetch(`${base}/v1/me`, { headers: { authorization: `Bearer ${t}` } })
      .catch((e) => fail(`cannot reach the server at ${base}: ${e.cause ? e.cause.message || e.cause : e.message}`));
    if (!meResp.ok) fail(`GET /v1/me: HTTP ${meResp.status} ${await meResp.text()}`);
    return meResp.json();
  }

  async function main() {
    let me = null;
    if (token) {
      me = await whoIs(token);
      log(`signing in as ${me.name} (${me.roles.join(', ') || 'no roles'}${me.email ? `, ${me.email}` : ''})`);
    }
    const allowed = new Set([origin, ...(options.allowOrigins || [])]);

    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    context.setDefaultTimeout(STEP_MS);
    // Record every request of every page and worker; stop any that leaves the server.
    // Origins the pages of others (the provider's) reach for, which the
    // test machine cannot: refused like any other, and not held against the UI.
    const ignored = new Set(options.ignoreOrigins || []);
    context.on('request', (req) => {
      const url = req.url();
      if (process.env.ITSM_UI_TRACE) log(`request ${req.method()} ${url}`);
      if (url.startsWith('data:') || url === 'about:blank') return;
      let reqOrigin;
      try {
        reqOrigin = new URL(url).origin;
      } catch (_) {
        reqOrigin = url;
      }
      if (!allowed.has(reqOrigin) && !ignored.has(reqOrigin)) foreign.push(`${req.method()} ${url}`);
    });
    await context.route('**/*', (route) => {
      const url = route.request().url();
      if (url.startsWith('data:') || allowed.has(new URL(url).origin)) return route.continue();
      return route.abort('blockedbyclient');
    });

    page = await context.newPage();
    if (process.env.ITSM_UI_TRACE) {
      page.on('requestfailed', (req) => log(`failed ${req.method()} ${req.url()}: ${req.failure()?.errorText}`));
      page.on('response', (resp) => log(`response ${resp.status()} ${resp.url()}`));
    }
    page.on('pageerror', (err) => pageErrors.push(String(err && err.stack ? err.stack : err)));
    page.on('console', (msg) => {
      const text = msg.text();
      if (/Content[- ]Security[- ]Policy/i.test(text)) cspViolations.push(text);
      else if (msg.type() === 'error') consoleErrors.push(text);
    });

    // Sign in through the form.
    const resp = await page.goto(`${base}/`, { waitUntil: 'domcontentloaded' });
    if (!resp || !resp.ok()) fail(`GET / answered ${resp ? resp.status() : 'nothing'}`);
    const csp = resp.headers()['content-security-policy'] || '';
    if (!csp.includes("default-src 'self'")) fail(`GET / has no strict Content-Security-Policy (got ${JSON.stringify(csp)})`);
    await page.locator('#signin-form').waitFor({ state: 'visible' })
      .catch(() => fail('the sign-in form did not show'));
    if (token) {
      await page.getByLabel('API token').fill(token);
      await page.locator('#signin-submit').click();
    } else {
      await options.signIn({ page, log, textOf });
    }
    await page.locator('#whoami').waitFor({ state: 'visible' })
      .catch(async () => fail(`sign-in did not complete: ${await textOf('#signin-error') || await textOf('body') || 'no error shown'}`));
    if (!token) {
      token = await page.evaluate(() => sessionStorage.getItem('itsm.token'));
      if (!token) fail('signed in, but the page keeps no token');
      me = await whoIs(token);
      log(`signed in through the provider as ${me.name} (${me.roles.join(', ') || 'no roles'}${me.email ? `, ${me.email}` : ''})`);
    }
    const whoami = (await page.locator('#whoami').textContent()) || '';
    if (!whoami.includes(me.name)) fail(`the header shows ${JSON.stringify(whoami)}, not ${me.name}`);
    const stored = await page.evaluate(() => sessionStorage.getItem('itsm.token'));
    if (stored !== token) fail('the token is not kept in sessionStorage after sign-in');
    log(`signed in; header shows ${JSON.stringify(whoami.trim())}`);

    await body({ page, me, textOf, token });

    if (foreign.length) fail(`the page made requests to other origins than ${origin}:\n  ${foreign.join('\n  ')}`);
    if (cspViolations.length) fail(`Content-Security-Policy violations:\n  ${cspViolations.join('\n  ')}`);
    if (pageErrors.length) fail(`uncaught errors in the page:\n  ${pageErrors.join('\n  ')}`);
    if (consoleErrors.length) log(`note: console errors: ${consoleErrors.join(' | ')}`);
  }

  let code = 0;
  try {
    await main();
    log(`PASS: ${passed}`);
  } catch (err) {
    code = 1;
    console.error(`FAIL: ${err instanceof Failure ? err.message : (err && err.stack) || err}`);
    if (foreign.length) console.error(`requests to other origins: ${foreign.join(', ')}`);
    if (pageErrors.length) console.error(`page errors: ${pageErrors.join(' | ')}`);
    if (cspViolations.length) console.error(`CSP violations: ${cspViolations.join(' | ')}`);
    if (consoleErrors.length) console.error(`console errors: ${consoleErrors.join(' | ')}`);
    if (page) {
      try {
        console.error(`page URL: ${page.url()}`);
        const text = await page.locator('main').innerText({ timeout: 2000 }).catch(() => '');
        if (text) console.error(`page text (start):\n${text.slice(0, 1500)}`);
        const shot = join(tmpdir(), `itsm-ui-failure-${Date.now()}.png`);
        await page.screenshot({ path: shot, fullPage: true, timeout: 5000 });
        console.error(`screenshot: ${shot}`);
      } catch (_) { /* best effort */ }
    }
  } finally {
    if (browser) await browser.close().catch(() => {});
  }
  clearTimeout(watchdog);
  process.exit(code);
}
