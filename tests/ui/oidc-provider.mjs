// An independent OpenID provider for the browser tests: panva's
// `oidc-provider` (certified OpenID Connect), on loopback.
//
//   node tests/ui/oidc-provider.mjs <port> <redirect-uri>
//
// One public client, `itsm-ui` (authorization code, PKCE required, no
// secret), whose only redirect URI is the itsm server's callback. Access
// tokens for the resource `urn:itsm:api` are JWTs (RS256) with audience
// `itsm`, carrying the account's e-mail and groups. The provider has no
// user admin, so its accounts are configured here; its own development
// login and consent pages (any password) stand in for the organisation's.
// Prints `issuer <url>` once it listens.

import Provider from 'oidc-provider';

const [port, redirectUri] = process.argv.slice(2);
if (!port || !redirectUri) {
  console.error('usage: node tests/ui/oidc-provider.mjs <port> <redirect-uri>');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;

// The organisation's people: login -> claims.
const ACCOUNTS = {
  'mgr.a@example.com': { email: 'mgr.a@example.com', groups: ['managers'] },
  'sec.lead@example.com': { email: 'sec.lead@example.com', groups: ['security-team'] },
};

const provider = new Provider(issuer, {
  clients: [{
    client_id: 'itsm-ui',
    token_endpoint_auth_method: 'none',
    redirect_uris: [redirectUri],
    grant_types: ['authorization_code'],
    response_types: ['code'],
  }],
  cookies: { keys: ['itsm-tests-only-not-a-secret'] },
  scopes: ['openid', 'email', 'itsm'],
  claims: { openid: ['sub'], email: ['email'] },
  async findAccount(_ctx, id) {
    const account = ACCOUNTS[id];
    if (!account) return undefined;
    return { accountId: id, claims: async () => ({ sub: id, email: account.email }) };
  },
  features: {
    devInteractions: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => 'urn:itsm:api',
      useGrantedResource: async () => true,
      getResourceServerInfo: async () => ({
        scope: 'itsm',
        audience: 'itsm',
        accessTokenTTL: 600,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  async extraTokenClaims(_ctx, token) {
    const account = ACCOUNTS[token.accountId];
    return account ? { email: account.email, groups: account.groups } : undefined;
  },
});
provider.on('server_error', (_ctx, err) => console.error(`provider error: ${err.stack || err}`));

provider.listen(Number(port), '127.0.0.1', () => console.log(`issuer ${issuer}`));
