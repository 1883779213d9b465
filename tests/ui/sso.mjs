// Browser end-to-end test of sign-in through the organisation's identity
// provider, in real headless Chromium against an independent provider
// (oidc-provider.mjs).
//
//   node tests/ui/sso.mjs <base-url> <issuer> <login> <ticket-id>
//
// Opens the UI signed out, chooses "Sign in with your organisation", signs
// in on the provider's own login page as <login> and consents; back at
// the UI (authorization code + PKCE, exchanged by the server), it reaches
// "My tasks", completes the ticket's task, and prints the provider's
// access token the page keeps (`access-token <jwt>`) for the caller to use
// on the API. Fails on requests to origins other than the server's and the
// provider's, page errors or CSP violations.

import { run, fail, log } from './harness.mjs';

const [base, issuer, login, ticketId] = process.argv.slice(2);
if (!base || !issuer || !login || !ticketId) {
  console.error('usage: node tests/ui/sso.mjs <base-url> <issuer> <login> <ticket-id>');
  process.exit(2);
}
const providerOrigin = new URL(issuer).origin;

async function signIn({ page }) {
  const sso = page.locator('[data-testid="sso-signin"]');
  await sso.waitFor({ state: 'visible' }).catch(() => fail('the sign-in page offers no sign-in through the organisation'));
  await sso.click();
  // The provider's own login page.
  await page.waitForURL((u) => u.origin === providerOrigin)
    .catch(() => fail(`the browser did not reach the provider at ${providerOrigin}`));
  const authorize = page.url();
  log(`at the provider: ${new URL(authorize).pathname}`);
  await page.locator('input[name="login"]').fill(login);
  await page.locator('input[name="password"]').fill('any password: the provider is in development mode');
  await page.locator('button[type="submit"]').click();
  // Its consent page, then back to the UI.
  const consent = page.locator('button[type="submit"]');
  await consent.waitFor({ state: 'visible' }).catch(() => fail(`no consent page (at ${page.url()})`));
  await consent.click();
  await page.waitForURL((u) => u.origin === new URL(base).origin && u.hash.startsWith('#/'))
    .catch(() => fail(`not back at the UI (at ${page.url()})`));
  if (page.url().includes('sso=')) fail('the access token stays in the address bar');
  log(`back at the UI: ${page.url()}`);
}

await run('signed in through the provider, the manager completed the task', base, null, async ({ page, me, token, textOf }) => {
  if (me.email !== login) fail(`signed in as ${JSON.stringify(me)}, not ${login}`);
  await page.waitForURL((u) => u.hash === '#/tasks');
  const task = page.locator(`[data-testid="task"][data-ticket="${ticketId}"]`);
  await task.waitFor({ state: 'visible' })
    .catch(async () => fail(`ticket ${ticketId}'s task is not in the inbox (page: ${await textOf('main')})`));
  await task.getByLabel('laptop').check();
  await task.getByLabel('Note').fill('Returned at the desk.');
  await task.locator('[data-testid="task-complete"]').click();
  await page.locator('[data-testid="task-sent"]').waitFor({ state: 'visible' })
    .catch(async () => fail(`no confirmation: ${await textOf('[data-testid="task-error"]')}`));
  log(`task of ${ticketId} done by ${me.name}`);
  console.log(`access-token ${token}`);
}, {
  signIn,
  allowOrigins: [providerOrigin],
  // The provider's development login page asks Google for a web font.
  ignoreOrigins: ['https://fonts.googleapis.com'],
});
