// Drives xpod pods with Inrupt's Solid client libraries, logged in at a Community Solid Server
// (the identity provider) with client credentials and DPoP-bound tokens — what a Solid app does.
//
//   node solid-oidc.mjs <css base URL> <owner center URL> <other center URL>
//
// Prints one JSON object of observations on stdout (the Rust test asserts on them) and exits
// non-zero with a message on stderr when a step fails outright.
import { Session } from '@inrupt/solid-client-authn-node';
import {
  buildThing,
  createSolidDataset,
  getContainedResourceUrlAll,
  getSolidDataset,
  getStringNoLocale,
  getThing,
  saveSolidDatasetAt,
  setThing,
} from '@inrupt/solid-client';

const [css, owner, other] = process.argv.slice(2);
const NAME = 'http://schema.org/name';

async function json(r) {
  const t = await r.text();
  try { return JSON.parse(t); } catch { return t; }
}

// The CSS account API: log in, make client credentials for the WebID, log a Session in.
async function login(name) {
  const webId = new URL(`${name}/profile/card#me`, css).href;
  let r = await fetch(new URL('.account/login/password/', css), {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: `${name}@example.test`, password: `${name}-pass-123` }),
  });
  const { authorization } = await json(r);
  const auth = { authorization: `CSS-Account-Token ${authorization}` };
  const { controls } = await json(await fetch(new URL('.account/', css), { headers: auth }));
  r = await fetch(controls.account.clientCredentials, {
    method: 'POST',
    headers: { ...auth, 'content-type': 'application/json' },
    body: JSON.stringify({ name: `xpod-test-${name}`, webId }),
  });
  const cred = await json(r);
  const session = new Session();
  await session.login({ clientId: cred.id, clientSecret: cred.secret, oidcIssuer: css, tokenType: 'DPoP' });
  if (!session.info.isLoggedIn) throw new Error(`${name} is not logged in`);
  return { session, webId };
}

// The headers of the last request a session sends (to replay it from the test).
const sent = [];
const realFetch = globalThis.fetch;
globalThis.fetch = async (input, init = {}) => {
  const h = new Headers(init.headers || (input instanceof Request ? input.headers : undefined));
  if (h.get('dpop')) sent.push({ url: String(input instanceof Request ? input.url : input), method: init.method || 'GET', authorization: h.get('authorization'), dpop: h.get('dpop') });
  return realFetch(input, init);
};

const out = {};
const alice = await login('alice');
const bob = await login('bob');
out.aliceWebId = alice.webId;

const doc = `${owner}/alice/notes/first`;
const it = `${doc}#it`;
// 1. Alice creates a document through the center that owns the pod (solid-client PUTs Turtle).
let ds = setThing(createSolidDataset(), buildThing({ url: it }).addStringNoLocale(NAME, 'hello').build());
await saveSolidDatasetAt(doc, ds, { fetch: alice.session.fetch });
out.created = true;

// 2. She reads it back through the other center.
const viaOther = `${other}/alice/notes/first`;
ds = await getSolidDataset(viaOther, { fetch: alice.session.fetch });
out.readViaOther = getStringNoLocale(getThing(ds, it), NAME);

// 3. She changes it through the other center: solid-client sends a SPARQL Update PATCH.
ds = setThing(ds, buildThing(getThing(ds, it)).setStringNoLocale(NAME, 'changed').build());
await saveSolidDatasetAt(viaOther, ds, { fetch: alice.session.fetch });
ds = await getSolidDataset(doc, { fetch: alice.session.fetch });
out.afterPatch = getStringNoLocale(getThing(ds, it), NAME);
const patch = sent.find((s) => s.method.toUpperCase() === 'PATCH');
out.patchSent = !!patch;

// 4. She lists the container through the other center.
const container = await getSolidDataset(`${other}/alice/notes/`, { fetch: alice.session.fetch });
out.listed = getContainedResourceUrlAll(container).map((u) => u.replace(other, ''));

// 5. Bob, signed in but not in the pod's ACL: 403 and WAC-Allow.
let r = await bob.session.fetch(doc);
out.bob = { status: r.status, wacAllow: r.headers.get('wac-allow'), body: await json(r) };

// 5b. Bob reads what a group he is in (a group document on another server) may read.
r = await bob.session.fetch(`${owner}/alice/shared/note`);
out.bobShared = { status: r.status, wacAllow: r.headers.get('wac-allow') };

// 6. Nobody: 401 with a DPoP challenge.
r = await realFetch(doc);
out.anonymous = { status: r.status, challenge: r.headers.get('www-authenticate') };

// 7. One more GET of Alice's, whose headers the test replays.
sent.length = 0;
r = await alice.session.fetch(doc);
out.lastGet = { status: r.status, wacAllow: r.headers.get('wac-allow'), ...sent[sent.length - 1] };

console.log(JSON.stringify(out));
await alice.session.logout().catch(() => {});
await bob.session.logout().catch(() => {});
process.exit(0);
