// Browser end-to-end test of the itsm web UI, in real headless Chromium.
//
//   node tests/ui/approve.mjs <base-url> <approver-token> <ticket-id>
//
// Signs in through the form, opens a ticket that waits for approval, checks
// the approve button and the verified trail, approves with a comment, and
// waits until the ticket succeeds and the trail lists the approval by the
// approver. Fails if the page talks to any origin but the server, throws,
// or trips the Content-Security-Policy. Exits 0 on success, 1 on failure.

import { chromium } from 'playwright-core';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const CHROMIUM = '/usr/bin/chromium';
const OVERALL_MS = 30_000;
const STEP_MS = 10_000;

const [baseArg, token, ticketId] = process.argv.slice(2);
if (!baseArg || !token || !ticketId) {
  console.error('usage: node tests/ui/approve.mjs <base-url> <approver-token> <ticket-id>');
  process.exit(2);
}
const base = baseArg.replace(/\/+$/, '');
const origin = new URL(base).origin;
const started = Date.now();

function log(message) {
  console.log(`[${((Date.now() - started) / 1000).toFixed(1)} s] ${message}`);
}

class Failure extends Error {}
function fail(message) {
  throw new Failure(message);
}

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

async function main() {
  // Who the token belongs to, straight from the API (not through the page).
  const meResp = await fetch(`${base}/v1/me`, { headers: { authorization: `Bearer ${token}` } })
    .catch((e) => fail(`cannot reach the server at ${base}: ${e.cause ? e.cause.message || e.cause : e.message}`));
  if (!meResp.ok) fail(`GET /v1/me with the approver token: HTTP ${meResp.status} ${await meResp.text()}`);
  const me = await meResp.json();
  if (!me.roles.includes('approver')) fail(`the token of ${me.name} lacks the approver role (roles: ${me.roles.join(', ')})`);
  log(`approver is ${me.name} (${me.roles.join(', ')})`);

  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  context.setDefaultTimeout(STEP_MS);
  // Record every request of every page and worker; stop any that leaves the server.
  context.on('request', (req) => {
    const url = req.url();
    if (url.startsWith('data:') || url === 'about:blank') return;
    let reqOrigin;
    try {
      reqOrigin = new URL(url).origin;
    } catch (_) {
      reqOrigin = url;
    }
    if (reqOrigin !== origin) foreign.push(`${req.method()} ${url}`);
  });
  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (url.startsWith('data:') || new URL(url).origin === origin) return route.continue();
    return route.abort('blockedbyclient');
  });

  page = await context.newPage();
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
  await page.getByLabel('API token').fill(token);
  await page.locator('#signin-submit').click();
  await page.locator('#whoami').waitFor({ state: 'visible' })
    .catch(async () => fail(`sign-in did not complete: ${await textOf('#signin-error') || 'no error shown'}`));
  const whoami = (await page.locator('#whoami').textContent()) || '';
  if (!whoami.includes(me.name)) fail(`the header shows ${JSON.stringify(whoami)}, not ${me.name}`);
  const stored = await page.evaluate(() => sessionStorage.getItem('itsm.token'));
  if (stored !== token) fail('the token is not kept in sessionStorage after sign-in');
  log(`signed in; header shows ${JSON.stringify(whoami.trim())}`);

  // Find the ticket in the list and open it.
  const row = page.locator(`[data-testid="ticket-row"][data-id="${ticketId}"]`);
  await row.waitFor({ state: 'visible' }).catch(async () =>
    fail(`ticket ${ticketId} is not in the ticket list (${await textOf('#list-error') || 'no error shown'})`));
  await row.getByRole('link', { name: ticketId }).click();
  await page.waitForURL((u) => u.hash === `#/tickets/${ticketId}`);
  log(`opened ${page.url()}`);

  const state = page.locator('#ticket-state');
  await state.waitFor({ state: 'visible' }).catch(async () =>
    fail(`the ticket page did not load: ${await textOf('#ticket-error') || 'no error shown'}`));
  await page.waitForSelector('#ticket-state[data-state="waiting_approval"]')
    .catch(async () => fail(`the ticket does not wait for approval (state: ${await state.getAttribute('data-state')})`));
  log('ticket waits for approval');

  // The trail shows as verified.
  const trailStatus = page.locator('#trail-status');
  await page.waitForSelector('#trail-status[data-verified]');
  if ((await trailStatus.getAttribute('data-verified')) !== 'true') {
    fail(`the trail does not show as verified: ${await trailStatus.textContent()}`);
  }
  if (!/verified/i.test((await trailStatus.textContent()) || '')) fail('the trail status does not say "verified"');
  log(`trail: ${(await trailStatus.textContent()).trim()}`);

  // The approval panel offers approve to this approver.
  const panel = page.locator('#approval-panel');
  await panel.waitFor({ state: 'visible' }).catch(() => fail('no approval panel on a ticket that waits for approval'));
  const steps = ((await panel.getAttribute('data-steps')) || '').split(',').filter(Boolean);
  if (!steps.length) fail('the approval panel names no step');
  const approve = page.getByRole('button', { name: 'Approve', exact: true });
  if (!(await approve.isVisible()) || !(await approve.isEnabled())) fail('the Approve button is missing or disabled');
  if (!(await page.locator('#reject-btn').isVisible())) fail('the Reject button is missing');
  log(`approve button shown for step ${steps.join(', ')}`);

  // Approve with a comment; the markup in it must come back as plain text.
  const comment = `Laptop returned <b>wiped</b> ${Date.now()}`;
  await page.getByLabel('Comment').fill(comment);
  await approve.click();
  const approvalError = page.locator('#approval-error');
  const outcome = await Promise.race([
    page.waitForSelector('#ticket-state[data-state="succeeded"]', { timeout: 15_000 }).then(() => 'succeeded'),
    approvalError.waitFor({ state: 'visible', timeout: 15_000 }).then(() => 'error'),
  ]).catch(async () => `timeout (state: ${await state.getAttribute('data-state')})`);
  if (outcome === 'error') fail(`approving failed: ${await approvalError.textContent()}`);
  if (outcome !== 'succeeded') fail(`the ticket did not reach succeeded after approval: ${outcome}`);
  log('ticket succeeded');

  // The approved step moved on, with the decision on it.
  for (const step of steps) {
    const s = page.locator(`[data-testid="step"][data-step="${step}"]`);
    await page.waitForSelector(`[data-testid="step"][data-step="${step}"][data-status="succeeded"]`)
      .catch(async () => fail(`step ${step} did not move on to succeeded (status: ${await s.getAttribute('data-status')})`));
    const decision = s.locator('[data-testid="step-decision"]');
    await decision.waitFor({ state: 'visible' }).catch(() => fail(`step ${step} shows no decision`));
    if ((await decision.getAttribute('data-by')) !== me.name) fail(`step ${step} decision is not by ${me.name}`);
    const text = (await decision.textContent()) || '';
    if (!text.includes(comment)) fail(`step ${step} decision does not show the comment verbatim: ${JSON.stringify(text)}`);
    if (await decision.locator('b').count()) fail('the comment was rendered as HTML, not text');
  }
  if (await panel.count()) fail('the approval panel is still shown after the ticket succeeded');

  // The trail lists the approval by the approver, and still verifies.
  const approved = page.locator(`[data-testid="trail-event"][data-kind="approved"][data-principal="${me.name}"]`);
  await approved.first().waitFor({ state: 'visible' })
    .catch(() => fail(`the trail lists no approved event by ${me.name}`));
  if (!((await approved.first().textContent()) || '').includes(comment)) fail('the approved trail event does not show the comment');
  await page.waitForSelector('[data-testid="trail-event"][data-kind="ticket_succeeded"]')
    .catch(() => fail('the trail lists no ticket_succeeded event'));
  if ((await trailStatus.getAttribute('data-verified')) !== 'true') fail(`the trail no longer verifies: ${await trailStatus.textContent()}`);
  log(`trail lists approved by ${me.name} and still verifies`);

  if (foreign.length) fail(`the page made requests to other origins than ${origin}:\n  ${foreign.join('\n  ')}`);
  if (cspViolations.length) fail(`Content-Security-Policy violations:\n  ${cspViolations.join('\n  ')}`);
  if (pageErrors.length) fail(`uncaught errors in the page:\n  ${pageErrors.join('\n  ')}`);
  if (consoleErrors.length) log(`note: console errors: ${consoleErrors.join(' | ')}`);
}

async function textOf(selector) {
  try {
    const el = page.locator(selector);
    if (!(await el.count())) return '';
    return ((await el.first().textContent()) || '').trim();
  } catch (_) {
    return '';
  }
}

let code = 0;
try {
  await main();
  log('PASS: signed in, approved, the ticket succeeded and the trail shows the approval');
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
