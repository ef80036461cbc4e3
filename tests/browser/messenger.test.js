// End-to-end tests of the web messenger served at `/`, in Debian's Chromium (never a
// downloaded browser), against the real server binary. Run: node --test tests/browser/
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { PASSWORD, TIMEOUT, until, startServer, launchChromium } = require('./support');

const ROOT = path.resolve(__dirname, '..', '..');

let server;
let base;
let browser;

async function textOf(locator) {
  return (await locator.count()) ? (await locator.first().textContent()) : null;
}

async function expectText(locator, pattern, what) {
  await until(`${what} to match ${pattern}`, async () => {
    const t = await textOf(locator);
    return t !== null && pattern.test(t);
  });
}

before(async () => {
  server = await startServer({
    users: ['alice', 'bob', 'carol', 'dave', 'erin', 'frank', 'gina', 'hank'],
  });
  base = server.base;
  browser = await launchChromium();
});

after(async () => {
  if (browser) await browser.close();
  if (server) await server.stop();
});

// A signed-in messenger page of `user` in a fresh browser context.
async function signedIn(user, { blockWebSocket = false, route = null } = {}) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 720 } });
  if (route) await context.routeWebSocket(/\/api\/v1\/events/, route);
  if (blockWebSocket) {
    // Every WebSocket to the server is refused: the client must fall back to long-poll.
    await context.routeWebSocket(/\/api\/v1\/events/, (ws) => ws.close({ code: 1011, reason: 'blocked' }));
  }
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e));
  page.on('console', (m) => { if (m.type() === 'error' && /Content Security Policy/i.test(m.text())) errors.push(m.text()); });
  const res = await page.goto(`${base}/`);
  const csp = res.headers()['content-security-policy'];
  assert.match(csp, /default-src 'none'; script-src 'self'/);
  await page.locator('#user').fill(user);
  await page.locator('#password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await expectText(page.locator('#me'), new RegExp(`^${user}@`), `${user} signed in`);
  return { context, page, errors, address: `${user}@localhost` };
}

function contactRow(page, address) {
  return page.locator(`#contacts li[data-address="${address}"]`);
}

function convItem(page, text) {
  return page.locator('#conversations li').filter({ hasText: text });
}

function activePane(page) {
  return page.locator('#panes ol.messages:not([hidden])');
}

async function befriend(a, b) {
  await a.page.locator('#add-address').fill(b.address.split('@')[0]);
  await a.page.getByRole('button', { name: 'Add', exact: true }).click();
  const request = b.page.locator(`#requests li[data-address="${a.address}"]`);
  await request.waitFor({ state: 'visible', timeout: TIMEOUT });
  await request.getByRole('button', { name: 'Accept' }).click();
  await contactRow(a.page, b.address).locator('.pending').waitFor({ state: 'detached', timeout: TIMEOUT });
  await contactRow(b.page, a.address).waitFor({ state: 'visible', timeout: TIMEOUT });
}

async function sendMessage(page, text) {
  await page.locator('#compose').fill(text);
  await page.locator('#compose').press('Enter');
}

async function expectMessage(page, text, from) {
  const msg = activePane(page).locator('li.msg').filter({ hasText: text });
  await msg.waitFor({ state: 'visible', timeout: TIMEOUT });
  if (from) await expectText(msg.locator('.from'), new RegExp(`^${from}$`), `sender of "${text}"`);
  return msg;
}

test('two users: contacts, presence, two conversations, unread, read marker, reload', async () => {
  const alice = await signedIn('alice');
  const bob = await signedIn('bob');
  await expectText(alice.page.locator('#conn'), /WebSocket/, 'alice on the WebSocket');
  await expectText(bob.page.locator('#conn'), /WebSocket/, 'bob on the WebSocket');

  // Contact request and accept.
  await befriend(alice, bob);

  // Presence change seen live.
  await bob.page.locator('#presence-show').selectOption('away');
  await bob.page.locator('#presence-status').fill('At lunch <b>back soon</b>');
  await bob.page.getByRole('button', { name: 'Set', exact: true }).click();
  await expectText(contactRow(alice.page, bob.address).locator('.presence'), /^away$/, "bob's presence at alice");
  await expectText(contactRow(alice.page, bob.address).locator('.status'), /^At lunch <b>back soon<\/b>$/,
    "bob's status text at alice (shown as text, not HTML)");
  await bob.page.locator('#presence-show').selectOption('available');
  await bob.page.locator('#presence-status').fill('');
  await bob.page.getByRole('button', { name: 'Set', exact: true }).click();
  await expectText(contactRow(alice.page, bob.address).locator('.presence'), /^available$/, "bob's presence back");

  // Visibility setting is accepted.
  await alice.page.locator('#visibility').selectOption('chosen');
  await alice.page.locator('#visibility').selectOption('contacts');

  // Direct conversation: alice writes, bob sees an unread count.
  await contactRow(alice.page, bob.address).getByRole('button', { name: /Chat/ }).click();
  await sendMessage(alice.page, 'hello bob');
  await expectMessage(alice.page, 'hello bob', 'me');
  await expectText(convItem(bob.page, alice.address).locator('.unread'), /^1$/, "bob's unread count");
  await sendMessage(alice.page, 'are you there?');
  await expectText(convItem(bob.page, alice.address).locator('.unread'), /^2$/, "bob's unread count");
  await until("bob's title badge", async () => (await bob.page.title()) === '(2) Switchboard');

  // Bob opens it: history, sender shown, and alice sees the read marker.
  await convItem(bob.page, alice.address).locator('button').click();
  await expectMessage(bob.page, 'hello bob', alice.address);
  await expectMessage(bob.page, 'are you there?', alice.address);
  await expectText(convItem(bob.page, alice.address).locator('.unread'), /^$/, "bob's unread count cleared");
  const aliceMsg = activePane(alice.page).locator('li.msg').filter({ hasText: 'are you there?' });
  await expectText(aliceMsg.locator('.state'), /^read$/, "alice's message marked read");
  await sendMessage(bob.page, 'hi alice');
  await expectMessage(alice.page, 'hi alice', bob.address);

  // A group conversation in parallel.
  await bob.page.locator('#group-title').fill('Team');
  await bob.page.locator('#group-members').fill('alice');
  await bob.page.getByRole('button', { name: 'Start group' }).click();
  await expectText(bob.page.locator('#conv-title'), /^Team$/, 'the group open at bob');
  await sendMessage(bob.page, 'welcome to the team');
  await expectText(convItem(alice.page, 'Team').locator('.unread'), /^1$/, "alice's group unread count");
  // Alice is still in the direct conversation, which keeps working.
  await sendMessage(alice.page, 'direct while group waits');
  await expectText(convItem(bob.page, alice.address).locator('.unread'), /^1$/, "bob's direct unread");
  await convItem(alice.page, 'Team').locator('button').click();
  await expectMessage(alice.page, 'welcome to the team', bob.address);
  await sendMessage(alice.page, 'glad to be here');
  await expectMessage(bob.page, 'glad to be here', alice.address);
  await until('no unread at alice', async () => (await alice.page.title()) === 'Switchboard');
  await convItem(bob.page, alice.address).locator('button').click();
  await expectMessage(bob.page, 'direct while group waits', alice.address);
  await sendMessage(bob.page, 'back in direct');
  await expectText(convItem(alice.page, bob.address).locator('.unread'), /^1$/, "alice's direct unread");
  const groupMsg = activePane(bob.page).locator('li.msg');
  assert.ok((await groupMsg.count()) >= 4);

  // The screenshot for the README: alice with two conversations.
  await convItem(alice.page, bob.address).locator('button').click();
  await expectMessage(alice.page, 'back in direct', bob.address);
  fs.mkdirSync(path.join(ROOT, 'docs'), { recursive: true });
  // Written into docs/ only when asked (UPDATE_SCREENSHOT=1), so test runs leave the tree clean.
  const shot = process.env.UPDATE_SCREENSHOT
    ? path.join(ROOT, 'docs', 'messenger.png')
    : path.join(os.tmpdir(), 'switchboard-messenger.png');
  await alice.page.screenshot({ path: shot });

  // A reload keeps the login and shows the history.
  await alice.page.reload();
  await expectText(alice.page.locator('#me'), /^alice@/, 'alice still signed in after reload');
  await until('two conversations after reload', async () => (await alice.page.locator('#conversations li').count()) === 2);
  await convItem(alice.page, bob.address).locator('button').click();
  await expectMessage(alice.page, 'hello bob', 'me');
  await expectMessage(alice.page, 'hi alice', bob.address);
  await expectMessage(alice.page, 'back in direct', bob.address);
  await expectText(activePane(alice.page).locator('li.msg.own').filter({ hasText: 'hello bob' }).locator('.state'),
    /^read$/, 'read state after reload');
  // Messages are not repeated.
  assert.equal(await activePane(alice.page).locator('li.msg').filter({ hasText: 'hello bob' }).count(), 1);
  // Still live after the reload.
  await sendMessage(bob.page, 'after your reload');
  await expectMessage(alice.page, 'after your reload', bob.address);

  // Sign out, then the sign-in form shows.
  await alice.page.getByRole('button', { name: 'Sign out' }).click();
  await alice.page.locator('#signin-form').waitFor({ state: 'visible', timeout: TIMEOUT });
  await alice.page.reload();
  await alice.page.locator('#signin-form').waitFor({ state: 'visible', timeout: TIMEOUT });

  assert.deepEqual(alice.errors, []);
  assert.deepEqual(bob.errors, []);
  await alice.context.close();
  await bob.context.close();
});

test('without a WebSocket the messenger works over long-poll', async () => {
  const carol = await signedIn('carol', { blockWebSocket: true });
  const dave = await signedIn('dave');
  await expectText(carol.page.locator('#conn'), /long-poll/, 'carol on long-poll');
  await expectText(dave.page.locator('#conn'), /WebSocket/, 'dave on the WebSocket');

  await befriend(carol, dave);
  await dave.page.locator('#presence-show').selectOption('dnd');
  await dave.page.getByRole('button', { name: 'Set', exact: true }).click();
  await expectText(contactRow(carol.page, dave.address).locator('.presence'), /^dnd$/, "dave's presence at carol");
  await carol.page.locator('#presence-show').selectOption('away');
  await carol.page.getByRole('button', { name: 'Set', exact: true }).click();
  await expectText(contactRow(dave.page, carol.address).locator('.presence'), /^away$/, "carol's presence at dave");

  await contactRow(carol.page, dave.address).getByRole('button', { name: /Chat/ }).click();
  await sendMessage(carol.page, 'polling hello');
  await expectText(convItem(dave.page, carol.address).locator('.unread'), /^1$/, "dave's unread");
  await convItem(dave.page, carol.address).locator('button').click();
  await expectMessage(dave.page, 'polling hello', carol.address);
  await sendMessage(dave.page, 'reply over the socket');
  await expectMessage(carol.page, 'reply over the socket', dave.address);
  await sendMessage(dave.page, 'and another');
  await expectMessage(carol.page, 'and another', dave.address);
  await expectText(activePane(carol.page).locator('li.msg.own').locator('.state'), /^read$/, 'read marker over long-poll');
  assert.equal(await activePane(carol.page).locator('li.msg').count(), 3);
  await expectText(carol.page.locator('#conn'), /long-poll/, 'carol still on long-poll');

  assert.deepEqual(carol.errors, []);
  assert.deepEqual(dave.errors, []);
  await carol.context.close();
  await dave.context.close();
});

test('after a network drop the WebSocket resumes its session without losing or repeating messages', async () => {
  // Erin's WebSocket goes through a proxy that the test can cut and hold closed.
  const urls = [];
  const links = [];
  let gate = Promise.resolve();
  let openGate = () => {};
  const route = async (ws) => {
    urls.push(ws.url());
    await gate;
    const server = ws.connectToServer();
    links.push({ ws, server });
  };
  const erin = await signedIn('erin', { route });
  const frank = await signedIn('frank');
  await expectText(erin.page.locator('#conn'), /WebSocket/, 'erin on the WebSocket');
  await befriend(erin, frank);
  await contactRow(frank.page, erin.address).getByRole('button', { name: /Chat/ }).click();
  await contactRow(erin.page, frank.address).getByRole('button', { name: /Chat/ }).click();
  await sendMessage(frank.page, 'before the drop');
  await expectMessage(erin.page, 'before the drop', frank.address);

  // Cut the connection and hold new ones until frank's messages are stored.
  gate = new Promise((resolve) => { openGate = resolve; });
  const connectionsBefore = urls.length;
  const { ws, server } = links[links.length - 1];
  await ws.close({ code: 1006, reason: 'network drop' }).catch(() => {});
  await server.close().catch(() => {});
  await expectText(erin.page.locator('#conn'), /connecting/, 'erin notices the drop');
  await sendMessage(frank.page, 'while you were away 1');
  await sendMessage(frank.page, 'while you were away 2');
  const stored = activePane(frank.page).locator('li.msg.own .state');
  await until("frank's messages stored", async () => {
    const states = await stored.allTextContents();
    return states.length === 3 && states.every((s) => s !== 'sending');
  });
  await until('erin reconnecting', async () => urls.length > connectionsBefore);
  openGate();

  await expectMessage(erin.page, 'while you were away 1', frank.address);
  await expectMessage(erin.page, 'while you were away 2', frank.address);
  await expectText(erin.page.locator('#conn'), /WebSocket/, 'erin back on the WebSocket');
  assert.match(urls[urls.length - 1], /[?&]session=[^&]+&after=\d+/, 'the reconnection resumes the session');
  await sendMessage(erin.page, 'I am back');
  await expectMessage(frank.page, 'I am back', erin.address);
  await sendMessage(frank.page, 'welcome back');
  await expectMessage(erin.page, 'welcome back', frank.address);
  const texts = await activePane(erin.page).locator('li.msg .body').allTextContents();
  assert.deepEqual(texts, ['before the drop', 'while you were away 1', 'while you were away 2', 'I am back', 'welcome back']);

  // A long history: the latest page loads when opened, older ones on scrolling back.
  const conversation = await activePane(frank.page).getAttribute('data-conv');
  await frank.page.evaluate(async (id) => {
    const csrf = localStorage.getItem('switchboard.csrf');
    for (let i = 1; i <= 55; i++) {
      const res = await fetch(`/api/v1/conversations/${id}/messages`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-csrf-token': csrf },
        body: JSON.stringify({ client_id: `bulk-${i}`, body: `bulk ${i}` }),
      });
      if (!res.ok) throw new Error(`send answered ${res.status}`);
    }
  }, conversation);
  await expectMessage(erin.page, 'bulk 55', frank.address);
  await erin.page.reload();
  await convItem(erin.page, frank.address).locator('button').click();
  await expectMessage(erin.page, 'bulk 55', frank.address);
  assert.equal(await activePane(erin.page).locator('li.msg').count(), 50);
  await erin.page.locator('#older').click();
  await expectMessage(erin.page, 'before the drop', frank.address);
  const all = await activePane(erin.page).locator('li.msg .body').allTextContents();
  assert.equal(all.length, 60);
  assert.deepEqual(all.slice(0, 3), ['before the drop', 'while you were away 1', 'while you were away 2']);
  assert.equal(all[59], 'bulk 55');
  await erin.page.locator('#older').waitFor({ state: 'hidden', timeout: TIMEOUT });

  assert.deepEqual(erin.errors, []);
  assert.deepEqual(frank.errors, []);
  await erin.context.close();
  await frank.context.close();
});

test('a messenger user and a /lite user talk to each other', async () => {
  const gina = await signedIn('gina');
  // Hank uses the no-JavaScript client, in a context with JavaScript turned off.
  const context = await browser.newContext({ javaScriptEnabled: false });
  const hank = await context.newPage();
  await hank.goto(`${base}/lite`);
  await hank.locator('#user').fill('hank');
  await hank.locator('#password').fill(PASSWORD);
  await hank.getByRole('button', { name: 'Sign in' }).click();
  await hank.getByText('hank@localhost').first().waitFor({ state: 'visible', timeout: TIMEOUT });

  // Gina asks for Hank as a contact; Hank accepts on /lite.
  await gina.page.locator('#add-address').fill('hank');
  await gina.page.getByRole('button', { name: 'Add', exact: true }).click();
  await until('the request on /lite', async () => {
    await hank.reload();
    return (await hank.getByRole('button', { name: 'Accept' }).count()) > 0;
  });
  await hank.getByRole('button', { name: 'Accept' }).first().click();
  await contactRow(gina.page, 'hank@localhost').locator('.pending').waitFor({ state: 'detached', timeout: TIMEOUT });

  // Hank writes from /lite; Gina reads it in the messenger.
  await hank.locator('#open').fill('gina');
  await hank.getByRole('button', { name: 'Open' }).click();
  await hank.locator('#body').fill('hello from a page without JavaScript');
  await hank.getByRole('button', { name: 'Send' }).click();
  await expectText(convItem(gina.page, 'hank@localhost').locator('.unread'), /^1$/, "gina's unread from hank");
  await convItem(gina.page, 'hank@localhost').locator('button').click();
  await expectMessage(gina.page, 'hello from a page without JavaScript', 'hank@localhost');

  // Gina answers; Hank sees it when his page loads again.
  await sendMessage(gina.page, 'hello from the messenger');
  await until('the answer on /lite', async () => {
    await hank.reload();
    return (await hank.getByText('hello from the messenger').count()) > 0;
  });
  assert.deepEqual(gina.errors, []);
  await context.close();
  await gina.context.close();
});
