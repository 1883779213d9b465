// Browser end-to-end test of the itsm web UI, in real headless Chromium.
//
//   node tests/ui/approve.mjs <base-url> <approver-token> <ticket-id>
//
// Signs in through the form, opens a ticket that waits for approval, checks
// the approve button and the verified trail, approves with a comment, and
// waits until the ticket succeeds and the trail lists the approval by the
// approver. Fails if the page talks to any origin but the server, throws,
// or trips the Content-Security-Policy. Exits 0 on success, 1 on failure.

import { run, fail, log } from './harness.mjs';

const [base, token, ticketId] = process.argv.slice(2);
if (!base || !token || !ticketId) {
  console.error('usage: node tests/ui/approve.mjs <base-url> <approver-token> <ticket-id>');
  process.exit(2);
}

await run('signed in, approved, the ticket succeeded and the trail shows the approval', base, token, async ({ page, me, textOf }) => {
  if (!me.roles.includes('approver')) fail(`the token of ${me.name} lacks the approver role (roles: ${me.roles.join(', ')})`);
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

});
