// End-to-end tests of XMPP over WebSocket (RFC 7395, `/xmpp-websocket`) and BOSH (XEP-0124/0206,
// `/http-bind`) with strophe.js, a browser XMPP library written by others, in Debian's Chromium
// (never a downloaded browser), against the real server binary. Run: node --test tests/browser/
//
// Strophe runs in a tiny page served by this test from another origin than the server (the
// messenger's strict CSP forbids injected scripts, and BOSH from another origin needs the
// server's CORS headers). The page is on 127.0.0.1, a secure context, so SCRAM can use
// WebCrypto.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const { PASSWORD, until, startServer, launchChromium } = require('./support');

// strophe.js's browser bundle (its package.json "browser" entry), a UMD script that defines
// the globals Strophe, $iq, $msg, $pres.
const STROPHE = path.join(__dirname, 'node_modules', 'strophe.js', 'dist', 'strophe.umd.cjs');
const DOMAIN = 'localhost';

let server;
let base;
let pageServer;
let pageBase;
let browser;

before(async () => {
  assert.ok(fs.existsSync(STROPHE), `install the test's packages: npm ci in tests/browser (${STROPHE})`);
  server = await startServer({
    users: ['alice', 'bob', 'carol', 'dave', 'erin'],
    // Strophe refuses SCRAM with fewer than 4096 iterations (it then answers the challenge
    // with an empty <response/>), so this test keeps the default work factor.
    extraEnv: { SWITCHBOARD_AUTH_SCRAM_ITERATIONS: '4096' },
  });
  base = server.base;

  // The page strophe runs in: another origin than the server's (another port).
  pageServer = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end('<!doctype html><meta charset="utf-8"><title>strophe.js</title>');
  });
  await new Promise((resolve) => pageServer.listen(0, '127.0.0.1', resolve));
  pageBase = `http://127.0.0.1:${pageServer.address().port}`;

  browser = await launchChromium();
});

after(async () => {
  if (browser) await browser.close();
  if (pageServer) await new Promise((r) => pageServer.close(r));
  if (server) await server.stop();
});

// Runs in the page, after strophe: small helpers over Strophe.Connection, one client per name
// in `xt.clients`, recording statuses, the raw traffic and the stanzas received.
function pageHelpers() {
  const { Strophe, $iq, $msg, $pres } = window;
  const FINAL = ['CONNECTED', 'AUTHFAIL', 'CONNFAIL', 'ERROR', 'DISCONNECTED'];
  const statusName = (s) => Object.keys(Strophe.Status).find((k) => Strophe.Status[k] === s) || String(s);
  const child = (el, name) => Array.from(el.children).find((e) => e.tagName === name);
  const text = (el, name) => { const c = child(el, name); return c ? c.textContent : null; };
  const clients = {};

  function install(c) {
    const { conn } = c;
    conn.addHandler((m) => {
      c.messages.push({ from: m.getAttribute('from'), type: m.getAttribute('type'), body: text(m, 'body') });
      return true;
    }, null, 'message');
    conn.addHandler((p) => {
      const from = p.getAttribute('from');
      const type = p.getAttribute('type');
      c.presences.push({ from, type, show: text(p, 'show') });
      if (type === 'subscribe' && c.onSubscribe) {
        const to = Strophe.getBareJidFromJid(from);
        conn.send($pres({ to, type: 'subscribed' }));
        if (c.onSubscribe === 'subscribe back') conn.send($pres({ to, type: 'subscribe' }));
      }
      return true;
    }, null, 'presence');
    // Roster pushes (RFC 6121 §2.1.6): recorded, and answered with a result.
    conn.addHandler((iq) => {
      for (const item of iq.getElementsByTagName('item')) {
        c.rosterPushes.push({
          from: iq.getAttribute('from'), jid: item.getAttribute('jid'),
          subscription: item.getAttribute('subscription'), ask: item.getAttribute('ask'),
        });
      }
      conn.send($iq({ type: 'result', id: iq.getAttribute('id') }));
      return true;
    }, 'jabber:iq:roster', 'iq', 'set');
  }

  window.xt = {
    clients,
    // Whether `from` is the person `bare`: Switchboard combines presence per person, so
    // presence comes from the bare JID; a full JID of theirs is accepted too.
    isFrom: (from, bare) => !!from && (from === bare || from.startsWith(`${bare}/`)),
    // Starts logging in `who`; statuses are recorded in order ("NAME" or "NAME:condition").
    connect(who, service, jid, password, { onSubscribe = null, streamManagement = false } = {}) {
      const options = streamManagement ? { enableStreamManagement: true } : {};
      const conn = new Strophe.Connection(service, options);
      const c = { conn, statuses: [], raw: [], messages: [], presences: [], rosterPushes: [], onSubscribe };
      clients[who] = c;
      conn.rawInput = (d) => c.raw.push(`<- ${d}`);
      conn.rawOutput = (d) => c.raw.push(`-> ${d}`);
      conn.connect(jid, password, (status, condition) => {
        const name = statusName(status);
        c.statuses.push(condition ? `${name}:${condition}` : name);
        if (status === Strophe.Status.CONNECTED) install(c);
      });
    },
    // The first final status of `who`'s login, or null while it is still going on.
    loginResult(who) {
      const c = clients[who];
      return (c && c.statuses.find((s) => FINAL.includes(s.split(':')[0]))) || null;
    },
    statuses: (who) => clients[who].statuses,
    jid: (who) => clients[who].conn.jid,
    smEnabled: (who) => clients[who].conn.isStreamManagementEnabled(),
    smState(who) {
      const { state } = clients[who].conn.sm;
      return { hOutAcked: state.hOutAcked, unacked: state.unacked.length };
    },
    requestAck: (who) => clients[who].conn.sm.requestAck(),
    raw: (who, last = 40) => (clients[who] ? clients[who].raw.slice(-last) : []),
    messages: (who) => clients[who].messages,
    presences: (who) => clients[who].presences,
    rosterPushes: (who) => clients[who].rosterPushes,
    presence(who) { clients[who].conn.send($pres()); },
    subscribe(who, to) { clients[who].conn.send($pres({ to, type: 'subscribe' })); },
    message(who, to, body) {
      const { conn } = clients[who];
      conn.send($msg({ to, type: 'chat', id: conn.getUniqueId('msg') }).c('body').t(body));
    },
    // Several messages handed to strophe in one go (one BOSH request, back-to-back frames).
    burst(who, to, bodies) {
      const { conn } = clients[who];
      for (const body of bodies) conn.send($msg({ to, type: 'chat', id: conn.getUniqueId('msg') }).c('body').t(body));
      conn.flush();
    },
    // The roster, or { error } with the error stanza or "timeout".
    roster(who) {
      const { conn } = clients[who];
      return new Promise((resolve) => {
        conn.sendIQ($iq({ type: 'get' }).c('query', { xmlns: 'jabber:iq:roster' }), (iq) => {
          const items = Array.from(iq.getElementsByTagName('item')).map((i) => ({
            jid: i.getAttribute('jid'), subscription: i.getAttribute('subscription'), ask: i.getAttribute('ask'),
          }));
          resolve({ items });
        }, (err) => resolve({ error: err ? new XMLSerializer().serializeToString(err) : 'timeout' }), 10000);
      });
    },
    disconnect(who) { clients[who].conn.disconnect('done'); },
  };
}

// A fresh browser context on the test's page, with strophe and the helpers loaded.
async function stropheClient() {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e));
  await page.goto(`${pageBase}/`);
  await page.addScriptTag({ path: STROPHE });
  await page.addScriptTag({ content: `(${pageHelpers})();` });
  assert.ok(await page.evaluate(() => window.isSecureContext && !!crypto.subtle), 'WebCrypto for SCRAM');
  return { context, page, errors };
}

const WEBSOCKET = () => `${base.replace(/^http/, 'ws')}/xmpp-websocket`;
const BOSH = () => `${base}/http-bind`;

// The last of `who`'s raw traffic, for failure messages.
async function traffic(page, who) {
  const raw = await page.evaluate((w) => window.xt.raw(w), who).catch((e) => [`(no traffic: ${e})`]);
  return `\n--- ${who}'s last traffic:\n${raw.join('\n')}`;
}

// Waits until `fn(who, arg)` evaluated in the page is truthy; a timeout shows `who`'s traffic.
async function waitIn(page, who, what, fn, arg) {
  try {
    return await until(what, () => page.evaluate(fn, [who, arg]));
  } catch (e) {
    e.message += await traffic(page, who);
    throw e;
  }
}

// Logs `who` in over `service` and returns the first final status.
async function login(page, who, service, { password = PASSWORD, ...options } = {}) {
  await page.evaluate(([w, s, j, p, o]) => window.xt.connect(w, s, j, p, o),
    [who, service, `${who}@${DOMAIN}`, password, options]);
  return waitIn(page, who, `${who}'s login over ${service} to end`, ([w]) => window.xt.loginResult(w));
}

async function loggedIn(page, who, service, options) {
  const result = await login(page, who, service, options);
  if (result !== 'CONNECTED') assert.fail(`${who} over ${service}: ${result}${await traffic(page, who)}`);
}

async function roster(page, who) {
  const r = await page.evaluate((w) => window.xt.roster(w), who);
  if (r.error) assert.fail(`${who}'s roster get failed: ${r.error}${await traffic(page, who)}`);
  return r.items;
}

// `a` asks `b` for a subscription; `b` (answering with its presence handler) accepts and asks
// back; `a` accepts. Both end with subscription "both" and see each other's presence.
async function becomeContacts(a, b) {
  const aBare = `${a.who}@${DOMAIN}`;
  const bBare = `${b.who}@${DOMAIN}`;
  await a.page.evaluate(([w, to]) => window.xt.subscribe(w, to), [a.who, bBare]);
  await waitIn(b.page, b.who, `${b.who} to receive ${a.who}'s subscribe`,
    ([w, from]) => window.xt.presences(w).some((p) => p.type === 'subscribe' && p.from === from), aBare);
  await waitIn(a.page, a.who, `${a.who} to receive ${b.who}'s subscribe back`,
    ([w, from]) => window.xt.presences(w).some((p) => p.type === 'subscribe' && p.from === from), bBare);
  await waitIn(a.page, a.who, `${b.who} in ${a.who}'s roster pushes with subscription both`,
    ([w, jid]) => window.xt.rosterPushes(w).some((i) => i.jid === jid && i.subscription === 'both'), bBare);
  await waitIn(b.page, b.who, `${a.who} in ${b.who}'s roster pushes with subscription both`,
    ([w, jid]) => window.xt.rosterPushes(w).some((i) => i.jid === jid && i.subscription === 'both'), aBare);
  await waitIn(a.page, a.who, `${b.who}'s available presence at ${a.who}`,
    ([w, bare]) => window.xt.presences(w).some((p) => window.xt.isFrom(p.from, bare) && !p.type), bBare);
  await waitIn(b.page, b.who, `${a.who}'s available presence at ${b.who}`,
    ([w, bare]) => window.xt.presences(w).some((p) => window.xt.isFrom(p.from, bare) && !p.type), aBare);
  for (const [x, other] of [[a, bBare], [b, aBare]]) {
    const pushes = await x.page.evaluate((w) => window.xt.rosterPushes(w), x.who);
    for (const p of pushes) {
      assert.ok(!p.from || p.from === `${x.who}@${DOMAIN}`, `a roster push to ${x.who} from ${p.from}`);
    }
    const items = await roster(x.page, x.who);
    assert.deepEqual(items.map((i) => [i.jid, i.subscription, i.ask]), [[other, 'both', null]], `${x.who}'s roster`);
  }
}

async function messageBodies(page, who, from) {
  return page.evaluate(([w, f]) => window.xt.messages(w)
    .filter((m) => m.body !== null && window.xt.isFrom(m.from, f)).map((m) => m.body), [who, from]);
}

async function waitMessages(page, who, from, count, what) {
  await waitIn(page, who, what, ([w, [f, n]]) => window.xt.messages(w)
    .filter((m) => m.body !== null && window.xt.isFrom(m.from, f)).length >= n, [from, count]);
  return messageBodies(page, who, from);
}

// The XMPP logins `user` holds, from the HTTP API: an XMPP login lasts as long as its session.
async function xmppLogins(user) {
  const login = await fetch(`${base}/api/v1/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ user, password: PASSWORD }),
  });
  assert.equal(login.status, 200, `${user}'s API login`);
  const { token, login: id } = await login.json();
  const authorization = `Bearer ${token}`;
  const res = await fetch(`${base}/api/v1/logins`, { headers: { authorization } });
  assert.equal(res.status, 200, `${user}'s logins`);
  const { logins } = await res.json();
  // The API login of this look is revoked again.
  const revoked = await fetch(`${base}/api/v1/logins/${encodeURIComponent(id)}`,
    { method: 'DELETE', headers: { authorization } });
  assert.ok(revoked.ok, `revoking ${user}'s API login: ${revoked.status}`);
  return logins.filter((l) => l.kind === 'xmpp').length;
}

// A clean close: strophe reaches DISCONNECTED without an error, and the server ended the
// session at once. Over BOSH the server answers the terminating request with a body of type
// "terminate". Over the WebSocket strophe sends <close/> and shuts the socket without waiting
// for the server's <close/>, so the proof is that the XMPP login is gone at once (a dropped
// stream-management session would wait xmpp.resume_timeout, 300 s, to be resumed).
async function disconnect(page, who, kind) {
  await page.evaluate((w) => window.xt.disconnect(w), who);
  await waitIn(page, who, `${who} disconnected`, ([w]) => window.xt.statuses(w).includes('DISCONNECTED'));
  const statuses = await page.evaluate((w) => window.xt.statuses(w), who);
  assert.deepEqual(statuses.filter((s) => /^(CONNFAIL|ERROR|AUTHFAIL)/.test(s)), [], `${who}'s statuses: ${statuses}`);
  if (kind === 'bosh') {
    const raw = await page.evaluate((w) => window.xt.raw(w, 1000), who);
    assert.ok(raw.some((r) => /^<- <body[^>]*type=["']terminate["']/.test(r)),
      `${who}: the server answered the terminating request${await traffic(page, who)}`);
  }
  await until(`${who}'s XMPP login to end with the session`, async () => (await xmppLogins(who)) === 0);
}

test('WebSocket and BOSH: log in, roster, contacts, presence, chat both ways, clean close', async () => {
  const alice = { who: 'alice', ...(await stropheClient()) };
  const bob = { who: 'bob', ...(await stropheClient()) };

  // Alice over the WebSocket, with stream management.
  await loggedIn(alice.page, 'alice', WEBSOCKET(), { onSubscribe: 'accept', streamManagement: true });
  assert.match(await alice.page.evaluate(() => window.xt.jid('alice')), /^alice@localhost\/.+/);
  assert.deepEqual(await roster(alice.page, 'alice'), [], "alice's roster at first");
  await alice.page.evaluate(() => window.xt.presence('alice'));
  await waitIn(alice.page, 'alice', 'stream management enabled on the WebSocket', ([w]) => window.xt.smEnabled(w));

  // Bob over BOSH, from another origin than the server's.
  await loggedIn(bob.page, 'bob', BOSH(), { onSubscribe: 'subscribe back' });
  assert.match(await bob.page.evaluate(() => window.xt.jid('bob')), /^bob@localhost\/.+/);
  assert.deepEqual(await roster(bob.page, 'bob'), [], "bob's roster at first");
  await bob.page.evaluate(() => window.xt.presence('bob'));

  await becomeContacts(alice, bob);
  assert.equal(await xmppLogins('alice'), 1, "alice's XMPP login while her session lives");
  assert.equal(await xmppLogins('bob'), 1, "bob's XMPP login while his session lives");

  // Chat both ways, bodies exactly as sent.
  const toBob = ['hello bob, over a WebSocket', 'Grüße & <tags> "quoted" \'single\' — ✓'];
  const toAlice = ['hi alice, over BOSH', 'a < b && c > d ]]> 🎉'];
  for (const body of toBob) await alice.page.evaluate(([b]) => window.xt.message('alice', 'bob@localhost', b), [body]);
  assert.deepEqual(await waitMessages(bob.page, 'bob', 'alice@localhost', 2, "alice's messages at bob"), toBob);
  const aliceJid = await alice.page.evaluate(() => window.xt.jid('alice'));
  for (const body of toAlice) await bob.page.evaluate(([to, b]) => window.xt.message('bob', to, b), [aliceJid, body]);
  assert.deepEqual(await waitMessages(alice.page, 'alice', 'bob@localhost', 2, "bob's messages at alice"), toAlice);
  const typed = await alice.page.evaluate(() => window.xt.messages('alice').filter((m) => m.body !== null));
  assert.ok(typed.every((m) => m.type === 'chat'), `message types at alice: ${JSON.stringify(typed)}`);

  // Clean closes; alice sees bob go offline.
  await disconnect(bob.page, 'bob', 'bosh');
  await waitIn(alice.page, 'alice', "bob's unavailable presence at alice",
    ([w]) => window.xt.presences(w).some((p) => window.xt.isFrom(p.from, 'bob@localhost') && p.type === 'unavailable'));
  await disconnect(alice.page, 'alice', 'websocket');

  assert.deepEqual(alice.errors, []);
  assert.deepEqual(bob.errors, []);
  await alice.context.close();
  await bob.context.close();
});

test('bursts of messages reach a BOSH client and a WebSocket client in order, exactly once', async () => {
  const carol = { who: 'carol', ...(await stropheClient()) };
  const dave = { who: 'dave', ...(await stropheClient()) };
  // Like ordinary clients, both get the roster (so they receive roster pushes), then send
  // their initial presence.
  await loggedIn(carol.page, 'carol', WEBSOCKET(), { onSubscribe: 'accept', streamManagement: true });
  assert.deepEqual(await roster(carol.page, 'carol'), [], "carol's roster at first");
  await carol.page.evaluate(() => window.xt.presence('carol'));
  await loggedIn(dave.page, 'dave', BOSH(), { onSubscribe: 'subscribe back' });
  assert.deepEqual(await roster(dave.page, 'dave'), [], "dave's roster at first");
  await dave.page.evaluate(() => window.xt.presence('dave'));
  await becomeContacts(carol, dave);
  await waitIn(carol.page, 'carol', 'stream management enabled on the WebSocket', ([w]) => window.xt.smEnabled(w));

  // Carol (WebSocket) to Dave (BOSH): five at once, then a marker. Whatever comes before the
  // marker must be the five, in order, once each.
  const burst = [1, 2, 3, 4, 5].map((i) => `burst to BOSH ${i}`);
  await carol.page.evaluate(([b]) => window.xt.burst('carol', 'dave@localhost', b), [burst]);
  await carol.page.evaluate(() => window.xt.message('carol', 'dave@localhost', 'end of burst'));
  assert.deepEqual(await waitMessages(dave.page, 'dave', 'carol@localhost', 6, 'the burst and its marker at dave'),
    [...burst, 'end of burst']);

  // Carol's stream management counted all she sent: the server acknowledges everything.
  await carol.page.evaluate(() => window.xt.requestAck('carol'));
  await waitIn(carol.page, 'carol', "the server to acknowledge all of carol's stanzas",
    ([w]) => { const s = window.xt.smState(w); return s.unacked === 0 && s.hOutAcked >= 6 && s; });

  // Dave (BOSH, five stanzas in one request) to Carol (WebSocket).
  const back = [1, 2, 3, 4, 5].map((i) => `burst from BOSH ${i}`);
  await dave.page.evaluate(([b]) => window.xt.burst('dave', 'carol@localhost', b), [back]);
  await dave.page.evaluate(() => window.xt.message('dave', 'carol@localhost', 'end of reply'));
  assert.deepEqual(await waitMessages(carol.page, 'carol', 'dave@localhost', 6, 'the burst and its marker at carol'),
    [...back, 'end of reply']);

  // Nothing more arrived at dave meanwhile.
  assert.deepEqual(await messageBodies(dave.page, 'dave', 'carol@localhost'), [...burst, 'end of burst']);

  await disconnect(dave.page, 'dave', 'bosh');
  await disconnect(carol.page, 'carol', 'websocket');
  assert.deepEqual(carol.errors, []);
  assert.deepEqual(dave.errors, []);
  await carol.context.close();
  await dave.context.close();
});

test('a wrong password is an authentication failure', async () => {
  const erin = { who: 'erin', ...(await stropheClient()) };
  const ws = await login(erin.page, 'erin', WEBSOCKET(), { password: 'not the password' });
  assert.match(ws, /^AUTHFAIL/, `over the WebSocket: ${ws}${await traffic(erin.page, 'erin')}`);
  const raw = await erin.page.evaluate(() => window.xt.raw('erin', 1000));
  assert.ok(raw.some((r) => /^<- <failure[^>]*urn:ietf:params:xml:ns:xmpp-sasl[^>]*>.*not-authorized/.test(r)),
    `a SASL not-authorized failure${await traffic(erin.page, 'erin')}`);
  const mechanisms = raw.filter((r) => r.startsWith('<- ')).join('').match(/<mechanism>[^<]*<\/mechanism>/g) || [];
  assert.ok(mechanisms.includes('<mechanism>SCRAM-SHA-256</mechanism>'), `mechanisms offered: ${mechanisms}`);
  assert.ok(!mechanisms.includes('<mechanism>PLAIN</mechanism>'), `PLAIN offered on plain HTTP: ${mechanisms}`);

  const bosh = await login(erin.page, 'erin', BOSH(), { password: 'not the password' });
  assert.match(bosh, /^AUTHFAIL/, `over BOSH: ${bosh}${await traffic(erin.page, 'erin')}`);

  // The right password still works afterwards.
  await loggedIn(erin.page, 'erin', WEBSOCKET());
  await disconnect(erin.page, 'erin', 'websocket');
  assert.deepEqual(erin.errors, []);
  await erin.context.close();
});
