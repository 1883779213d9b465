// Browser end-to-end test of a problem's linked incidents, in real
// headless Chromium.
//
//   node tests/ui/problem.mjs <base-url> <operator-token> <problem-id> <incident-id>...
//
// Signs in as an operator, opens the problem that correlated alerts
// opened, finds each of its incidents in "Related tickets" as "causes"
// with its subject and state, follows one to the incident's page and
// finds the problem there as "caused by". Fails as approve.mjs does on
// foreign requests, page errors or CSP violations.

import { run, fail, log } from './harness.mjs';

const [base, token, problemId, ...incidents] = process.argv.slice(2);
if (!base || !token || !problemId || !incidents.length) {
  console.error('usage: node tests/ui/problem.mjs <base-url> <operator-token> <problem-id> <incident-id>...');
  process.exit(2);
}

await run(`the problem lists its ${incidents.length} incidents and each names it back`, base, token, async ({ page, textOf }) => {
  await page.goto(`${base}/#/tickets/${problemId}`);
  const rows = page.locator('#related-table [data-testid="related-row"]');
  await rows.first().waitFor({ state: 'visible' })
    .catch(async () => fail(`the problem shows no related tickets (page: ${await textOf('main')})`));
  await page.waitForFunction((n) => document.querySelectorAll('#related-table [data-testid="related-row"]').length === n, incidents.length, { timeout: 10_000 })
    .catch(async () => fail(`the problem lists ${await rows.count()} related tickets, not ${incidents.length}`));
  const listed = await rows.evaluateAll((els) => els.map((e) => [e.dataset.rel, e.dataset.id, e.textContent]));
  for (const id of incidents) {
    const row = listed.find(([, x]) => x === id);
    if (!row) fail(`incident ${id} is not among the related tickets: ${JSON.stringify(listed)}`);
    if (row[0] !== 'causes') fail(`incident ${id} is related as ${row[0]}, not causes`);
    if (!row[2].includes('ws-')) fail(`incident ${id}'s row does not show its workstation: ${row[2]}`);
  }
  log(`the problem lists ${listed.length} incidents as "causes"`);

  // Follow one: the incident names the problem as its cause.
  await page.locator(`#related-table [data-id="${incidents[0]}"] a`).click();
  await page.waitForURL((u) => u.hash === `#/tickets/${incidents[0]}`);
  const back = page.locator(`#related-table [data-testid="related-row"][data-id="${problemId}"]`);
  await back.waitFor({ state: 'visible' })
    .catch(async () => fail(`the incident does not name its problem (page: ${await textOf('main')})`));
  if ((await back.getAttribute('data-rel')) !== 'caused_by') fail(`the incident relates to the problem as ${await back.getAttribute('data-rel')}`);
  const text = (await back.textContent()) || '';
  if (!text.includes('caused by')) fail(`the row reads ${JSON.stringify(text)}`);
  const event = page.locator('[data-testid="trail-event"][data-kind="linked"]');
  await event.first().waitFor({ state: 'visible' }).catch(() => fail('the incident\'s trail lists no linked event'));
  log(`incident ${incidents[0]} names ${problemId} as "caused by", and its trail has the link`);
});
