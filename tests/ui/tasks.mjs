// Browser end-to-end test of the task inbox, in real headless Chromium.
//
//   node tests/ui/tasks.mjs <base-url> <manager-token> <ticket-id> <other-ticket-id>
//
// Signs in as the leaver's manager, opens "My tasks", finds the ticket's
// collection task with its instructions and checklist, ticks the items,
// writes a note, marks it done, follows the link to the ticket and waits
// until it succeeds with the task's completion (by the manager) in its
// steps and trail. "Tickets" lists that ticket alone, shown as the task
// only; another manager's ticket is neither listed nor shown ("not
// found"). Fails as approve.mjs does on foreign requests, page errors or
// CSP violations.

import { run, fail, log } from './harness.mjs';

const [base, token, ticketId, otherId] = process.argv.slice(2);
if (!base || !token || !ticketId || !otherId) {
  console.error('usage: node tests/ui/tasks.mjs <base-url> <manager-token> <ticket-id> <other-ticket-id>');
  process.exit(2);
}

await run('the manager completed the task from the inbox and the ticket moved on', base, token, async ({ page, me, textOf }) => {
  await page.locator('#nav-tasks').click();
  await page.waitForURL((u) => u.hash === '#/tasks');
  const task = page.locator(`[data-testid="task"][data-ticket="${ticketId}"]`);
  await task.waitFor({ state: 'visible' })
    .catch(async () => fail(`ticket ${ticketId}'s task is not in the inbox (page: ${await textOf('main')})`));
  const text = (await task.textContent()) || '';
  if (!text.includes('Collect the leaver')) fail(`the task shows no instructions: ${JSON.stringify(text)}`);
  const items = task.locator('[data-testid="task-item"]');
  const names = await items.evaluateAll((els) => els.map((e) => e.dataset.item));
  if (names.join(',') !== 'laptop,badge') fail(`the checklist is ${JSON.stringify(names)}, not laptop, badge`);
  log(`inbox shows the task for ${ticketId} with checklist ${names.join(', ')}`);

  // Leaving an item unticked without a note is refused, and says why.
  await task.getByLabel('laptop').check();
  await task.locator('[data-testid="task-complete"]').click();
  const error = task.locator('[data-testid="task-error"]');
  await error.waitFor({ state: 'visible' }).catch(() => fail('marking done with badge unticked and no note was not refused'));
  if (!((await error.textContent()) || '').includes('badge')) fail(`the refusal does not name badge: ${await error.textContent()}`);
  log(`refused: ${(await error.textContent()).trim()}`);

  // Tick everything, say something, mark done.
  await task.getByLabel('badge').check();
  const note = `All returned <i>in person</i> ${Date.now()}`;
  await task.getByLabel('Note').fill(note);
  await task.locator('[data-testid="task-complete"]').click();
  const sent = page.locator('[data-testid="task-sent"]');
  await sent.waitFor({ state: 'visible' }).catch(async () => fail(`no confirmation: ${await error.textContent()}`));
  await task.waitFor({ state: 'detached' }).catch(() => fail('the done task stays in the inbox'));
  log('task done and gone from the inbox');

  // Follow the link: the ticket moves on, and shows who did the task.
  await sent.getByRole('link').click();
  await page.waitForURL((u) => u.hash === `#/tickets/${ticketId}`);
  await page.waitForSelector('#ticket-state[data-state="succeeded"]', { timeout: 15_000 })
    .catch(async () => fail(`the ticket did not succeed (state: ${await page.locator('#ticket-state').getAttribute('data-state')})`));
  const done = page.locator('[data-testid="step"][data-step="collect"] [data-testid="task-done"]');
  await done.waitFor({ state: 'visible' }).catch(() => fail('the collect step does not show who did it'));
  const doneText = (await done.textContent()) || '';
  if (!doneText.includes(me.name) || !doneText.includes(note)) fail(`the step shows ${JSON.stringify(doneText)}`);
  if (await done.locator('i').count()) fail('the note was rendered as HTML, not text');
  const event = page.locator(`[data-testid="trail-event"][data-kind="task_completed"][data-principal="${me.name}"]`);
  await event.first().waitFor({ state: 'visible' }).catch(() => fail(`the trail lists no task_completed by ${me.name}`));
  if ((await page.locator('#trail-status').getAttribute('data-verified')) !== 'true') fail('the trail does not verify');
  log(`ticket succeeded; the trail lists the task done by ${me.name}`);
  await page.locator('[data-testid="task-view"]').waitFor({ state: 'visible' })
    .catch(() => fail('the ticket page does not say it shows the task only'));
  if (await page.locator('[data-testid="step"][data-step="disable"]').count()) fail('another step is shown to the manager');

  // "Tickets" lists this manager's leaver alone; the other manager's is not there.
  await page.locator('#nav-tickets').click();
  await page.waitForURL((u) => u.hash.startsWith('#/tickets'));
  const rows = page.locator('[data-testid="ticket-row"]');
  await rows.first().waitFor({ state: 'visible' }).catch(async () => fail(`no ticket listed (page: ${await textOf('main')})`));
  const listed = await rows.evaluateAll((els) => els.map((e) => e.dataset.id));
  if (listed.join(',') !== ticketId) fail(`"Tickets" lists ${JSON.stringify(listed)}, not only ${ticketId}`);
  log(`"Tickets" lists ${listed.length} ticket: the manager's own`);

  // Opening the other manager's ticket by its address: not found.
  await page.goto(`${base}/#/tickets/${otherId}`);
  await page.getByText('Ticket not found').waitFor({ state: 'visible' })
    .catch(async () => fail(`another manager's ticket was not refused (page: ${await textOf('main')})`));
  log(`${otherId} (another manager's) answers "Ticket not found"`);
});
