// Browser end-to-end test of the service catalog, in real headless
// Chromium.
//
//   node tests/ui/catalog.mjs <base-url> <person-token> <other-ticket-id>
//
// Signs in as a person of the staff group, opens "Request", finds the two
// items their group may request, fills Slack's form with no team (refused,
// naming the field), picks a team, requests it, lands on their ticket and
// watches it succeed with the access granted in its steps and trail.
// "Tickets" then lists their request alone (another person's ticket is
// not there). Fails as approve.mjs does on foreign requests, page errors
// or CSP violations.

import { run, fail, log } from './harness.mjs';

const [base, token, otherId] = process.argv.slice(2);
if (!base || !token || !otherId) {
  console.error('usage: node tests/ui/catalog.mjs <base-url> <person-token> <other-ticket-id>');
  process.exit(2);
}

await run('the person requested Slack from the catalog and followed it to done', base, token, async ({ page, me, textOf }) => {
  await page.locator('#nav-catalog').click();
  await page.waitForURL((u) => u.hash === '#/catalog');
  const items = page.locator('[data-testid="catalog-item"]');
  await items.first().waitFor({ state: 'visible' })
    .catch(async () => fail(`the catalog shows no item (page: ${await textOf('main')})`));
  const names = await items.evaluateAll((els) => els.map((e) => e.dataset.item));
  if (names.join(',') !== 'zoom-access,slack-access') fail(`the catalog lists ${JSON.stringify(names)}`);
  log(`the catalog offers ${names.join(', ')}`);

  const slack = page.locator('[data-testid="catalog-item"][data-item="slack-access"]');
  // No team chosen: the server refuses, naming the field.
  await slack.locator('[data-testid="request-submit"]').click();
  const error = slack.locator('[data-testid="request-error"]');
  await error.waitFor({ state: 'visible' }).catch(() => fail('a request with no team was not refused'));
  const why = (await error.textContent()) || '';
  if (!why.includes('team')) fail(`the refusal does not name the field: ${why}`);
  log(`refused: ${why.trim()}`);

  await slack.getByLabel('team').selectOption('sales');
  await slack.locator('[data-testid="request-submit"]').click();
  await page.waitForURL((u) => u.hash.startsWith('#/tickets/T-'), { timeout: 10_000 })
    .catch(async () => fail(`the request did not open its ticket (error: ${await error.textContent()})`));
  const id = decodeURIComponent(new URL(page.url()).hash.slice('#/tickets/'.length));
  await page.waitForSelector('#ticket-state[data-state="succeeded"]', { timeout: 15_000 })
    .catch(async () => fail(`the request did not succeed (state: ${await page.locator('#ticket-state').getAttribute('data-state')})`));
  const subject = (await page.locator('[data-testid="ticket-subject"]').textContent()) || '';
  if (subject !== me.email) fail(`the request is for ${subject}, not ${me.email}`);
  const verified = page.locator('[data-testid="trail-event"][data-kind="step_verified"][data-step="grant"]');
  await verified.first().waitFor({ state: 'visible' }).catch(() => fail('the trail shows no verified grant'));
  log(`${id} for ${subject} succeeded, the grant verified`);

  await page.locator('#nav-tickets').click();
  await page.waitForURL((u) => u.hash.startsWith('#/tickets'));
  const rows = page.locator('[data-testid="ticket-row"]');
  await rows.first().waitFor({ state: 'visible' }).catch(async () => fail(`no ticket listed (page: ${await textOf('main')})`));
  const listed = await rows.evaluateAll((els) => els.map((e) => e.dataset.id));
  if (listed.join(',') !== id) fail(`"Tickets" lists ${JSON.stringify(listed)}, not only ${id}`);
  if (listed.includes(otherId)) fail(`another person's ticket ${otherId} is listed`);
  log(`"Tickets" lists the person's request alone`);
});
