// Switchboard web messenger: plain JavaScript, no framework, no build step.
// Every piece of user text goes into the page through textContent, never as HTML.
'use strict';

const API = '/api/v1';
const CSRF_KEY = 'switchboard.csrf';
const HISTORY_PAGE = 50;

const S = {
  me: null,
  settings: null,
  csrf: localStorage.getItem(CSRF_KEY),
  contacts: new Map(), // address -> contact
  convs: new Map(), // id -> conversation state
  active: null,
  stopped: true,
  // The event stream: a server-held session, resumed after drops.
  session: null,
  position: 0,
  hadSession: false,
  ws: null,
  wsFailures: 0,
  transport: 'ws',
  ackTimer: null,
  acked: 0,
  pending: new Map(), // client_id -> {conv, body}
  presence: { show: 'available', status: null },
  audio: null,
  typingSent: 0,
};

const $ = (id) => document.getElementById(id);

// Builds an element; string children become text nodes (never parsed as HTML).
function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (k.startsWith('data-') || k.startsWith('aria-') || k === 'role' || k === 'type') node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(typeof c === 'string' ? document.createTextNode(c) : c);
  }
  return node;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function showError(text) {
  const e = $('error');
  e.textContent = text;
  e.hidden = false;
  clearTimeout(showError.timer);
  showError.timer = setTimeout(() => { e.hidden = true; }, 5000);
}

class HttpError extends Error {
  constructor(status, code, message) {
    super(message || code || String(status));
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body) {
  const headers = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (method !== 'GET' && S.csrf) headers['x-csrf-token'] = S.csrf;
  const res = await fetch(API + path, {
    method,
    headers,
    credentials: 'same-origin',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (res.status === 401 && path !== '/login') {
    signedOut();
    throw new HttpError(401, 'unauthorized', 'Please sign in again');
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch (_) { data = null; }
  }
  if (!res.ok) {
    const err = (data && data.error) || {};
    throw new HttpError(res.status, err.code, err.message);
  }
  return data;
}

const enc = encodeURIComponent;

// ---------- sign in / out ----------

async function boot() {
  wireUi();
  if (!S.csrf) { showSignIn(); return; }
  try {
    const me = await api('GET', '/me');
    await start(me);
  } catch (e) {
    if (!(e instanceof HttpError && e.status === 401)) showError(e.message);
    showSignIn();
  }
}

function showSignIn() {
  $('app').hidden = true;
  $('signin').hidden = false;
  document.title = 'Switchboard';
  $('user').focus();
}

async function signIn(ev) {
  ev.preventDefault();
  $('signin-error').textContent = '';
  try {
    const login = await api('POST', '/login', {
      user: $('user').value.trim(),
      password: $('password').value,
      cookie: true,
    });
    S.csrf = login.csrf;
    localStorage.setItem(CSRF_KEY, login.csrf);
    $('password').value = '';
    await start(await api('GET', '/me'));
  } catch (e) {
    $('signin-error').textContent = e.status === 401 || e.status === 403
      ? 'Wrong address or password.' : `Could not sign in: ${e.message}`;
  }
}

function signedOut() {
  stopStream();
  S.csrf = null;
  localStorage.removeItem(CSRF_KEY);
  S.contacts.clear();
  S.convs.clear();
  S.active = null;
  $('panes').replaceChildren();
  $('contacts').replaceChildren();
  $('conversations').replaceChildren();
  $('requests').replaceChildren();
  $('composer').hidden = true;
  $('older').hidden = true;
  $('conv-title').textContent = 'No conversation open';
  showSignIn();
}

async function signOut() {
  try { await api('POST', '/logout'); } catch (_) { /* signed out either way */ }
  signedOut();
}

async function start(me) {
  S.me = me.user;
  S.settings = me.settings || null;
  $('me').textContent = me.user;
  if (S.settings) $('visibility').value = S.settings.visibility;
  $('signin').hidden = true;
  $('app').hidden = false;
  S.stopped = false;
  await Promise.all([loadContacts(), loadConversations()]);
  connect();
}

// ---------- contacts ----------

async function loadContacts() {
  const { contacts } = await api('GET', '/contacts');
  S.contacts.clear();
  for (const c of contacts) S.contacts.set(c.address, c);
  renderContacts();
}

function displayName(address) {
  if (address === S.me) return 'me';
  const c = S.contacts.get(address);
  return (c && c.name) || address;
}

function renderContacts() {
  const list = $('contacts');
  const requests = $('requests');
  const rows = [];
  const reqs = [];
  const sorted = [...S.contacts.values()].sort((a, b) => a.address.localeCompare(b.address));
  for (const c of sorted) {
    if (c.from === 'pending') {
      reqs.push(el('li', { 'data-address': c.address },
        el('span', { class: 'name', text: c.address }),
        el('button', { type: 'button', text: 'Accept', onclick: () => answer(c.address, 'accept') }),
        el('button', { type: 'button', text: 'Refuse', onclick: () => answer(c.address, 'refuse') })));
    }
    if (c.to === 'none' && c.from !== 'accepted') continue;
    const show = (c.presence && c.presence.show) || 'offline';
    const waiting = c.to === 'pending';
    rows.push(el('li', { 'data-address': c.address, 'data-show': show },
      el('span', { class: 'name', text: c.name || c.address }),
      el('span', { class: `presence ${show}`, text: waiting ? 'unknown' : show }),
      waiting ? el('span', { class: 'pending', text: 'awaiting answer' }) : null,
      el('button', { type: 'button', text: 'Chat', 'aria-label': `Chat with ${c.address}`, onclick: () => openDirect(c.address) }),
      el('span', { class: 'status', text: (c.presence && c.presence.status) || '' })));
  }
  list.replaceChildren(...rows);
  requests.replaceChildren(...reqs);
  $('requests-section').hidden = reqs.length === 0;
  for (const conv of S.convs.values()) renderConvItem(conv);
}

async function answer(address, verb) {
  try {
    await api('POST', `/contacts/${enc(address)}/${verb}`);
    await loadContacts();
  } catch (e) { showError(e.message); }
}

async function addContact(ev) {
  ev.preventDefault();
  const address = $('add-address').value.trim();
  if (!address) return;
  try {
    await api('POST', '/contacts', { address });
    $('add-address').value = '';
    await loadContacts();
    announce(`Contact request sent to ${address}`);
  } catch (e) { showError(`Could not add ${address}: ${e.message}`); }
}

// ---------- conversations ----------

function convState(c) {
  let conv = S.convs.get(c.id);
  if (!conv) {
    const pane = el('ol', { class: 'messages', 'data-conv': c.id, role: 'log', 'aria-label': 'Messages', tabIndex: 0 });
    pane.hidden = true;
    pane.addEventListener('scroll', () => { if (pane.scrollTop < 30) loadOlder(conv); });
    conv = {
      id: c.id, kind: c.kind, title: c.title, members: [], lastSeq: 0, read: 0, unread: 0,
      msgs: new Map(), byClient: new Map(), minSeq: null, maxSeq: 0, loaded: false, exhausted: false,
      loading: false, pane, item: null, typing: new Map(),
    };
    S.convs.set(c.id, conv);
    $('panes').append(pane);
  }
  if (c.title !== undefined) conv.title = c.title;
  if (c.kind) conv.kind = c.kind;
  if (c.members) conv.members = c.members.map((m) => ({ ...m }));
  if (typeof c.last_seq === 'number') conv.lastSeq = Math.max(conv.lastSeq, c.last_seq);
  if (typeof c.read === 'number') conv.read = Math.max(conv.read, c.read);
  if (typeof c.unread === 'number') conv.unread = c.unread;
  return conv;
}

function convTitle(conv) {
  if (conv.title) return conv.title;
  const others = conv.members.map((m) => m.address).filter((a) => a !== S.me);
  if (others.length === 0) return conv.kind === 'group' ? 'Group' : 'Conversation';
  return others.map(displayName).join(', ');
}

async function loadConversations() {
  const { conversations } = await api('GET', '/conversations');
  for (const c of conversations) convState(c);
  await Promise.all(conversations.map((c) => loadMembers(c.id)));
  renderConvList();
}

async function loadMembers(id) {
  try {
    const full = await api('GET', `/conversations/${enc(id)}`);
    const conv = convState(full);
    renderConvItem(conv);
    updateStates(conv);
    return conv;
  } catch (e) {
    showError(e.message);
    return S.convs.get(id) || null;
  }
}

// A conversation we hear of for the first time (a message, a join).
async function ensureConv(id) {
  const known = S.convs.get(id);
  if (known && known.members.length) return known;
  const conv = await loadMembers(id);
  renderConvList();
  return conv;
}

function renderConvList() {
  const convs = [...S.convs.values()];
  for (const conv of convs) renderConvItem(conv);
  $('conversations').replaceChildren(...convs.map((c) => c.item));
  updateTitle();
}

function renderConvItem(conv) {
  if (!conv.item) {
    const btn = el('button', { type: 'button', class: 'conv-btn', onclick: () => openConv(conv.id) },
      el('span', { class: 'conv-name' }), el('span', { class: 'unread' }));
    conv.item = el('li', { 'data-conv': conv.id }, btn);
  }
  const btn = conv.item.firstChild;
  const title = convTitle(conv);
  btn.querySelector('.conv-name').textContent = conv.kind === 'group' ? `# ${title}` : title;
  const badge = btn.querySelector('.unread');
  badge.textContent = conv.unread > 0 ? String(conv.unread) : '';
  badge.classList.toggle('zero', conv.unread <= 0);
  btn.setAttribute('aria-current', S.active === conv.id ? 'true' : 'false');
  btn.setAttribute('aria-label', `${title}${conv.unread > 0 ? `, ${conv.unread} unread` : ''}`);
  if (S.active === conv.id) $('conv-title').textContent = title;
}

function updateTitle() {
  let total = 0;
  for (const c of S.convs.values()) total += Math.max(0, c.unread);
  document.title = total > 0 ? `(${total}) Switchboard` : 'Switchboard';
}

async function openDirect(address) {
  try {
    const c = await api('POST', '/conversations', { with: address });
    const conv = convState(c);
    if (!conv.members.length) await loadMembers(c.id);
    renderConvList();
    await openConv(c.id);
  } catch (e) { showError(e.message); }
}

async function startGroup(ev) {
  ev.preventDefault();
  const members = $('group-members').value.split(',').map((s) => s.trim()).filter(Boolean);
  const title = $('group-title').value.trim();
  if (!members.length) return;
  try {
    const body = { members };
    if (title) body.title = title;
    const c = await api('POST', '/conversations', body);
    convState(c);
    await loadMembers(c.id);
    renderConvList();
    $('group-members').value = '';
    $('group-title').value = '';
    await openConv(c.id);
  } catch (e) { showError(`Could not start the group: ${e.message}`); }
}

async function openConv(id) {
  const conv = S.convs.get(id);
  if (!conv) return;
  S.active = id;
  for (const c of S.convs.values()) {
    c.pane.hidden = c.id !== id;
    renderConvItem(c);
  }
  $('app').classList.add('in-chat');
  $('composer').hidden = false;
  renderTyping(conv);
  if (!conv.loaded) await loadHistory(conv);
  $('older').hidden = conv.exhausted;
  conv.pane.scrollTop = conv.pane.scrollHeight;
  markRead(conv);
  $('compose').focus();
}

async function loadHistory(conv) {
  conv.loading = true;
  try {
    const { messages } = await api('GET', `/conversations/${enc(conv.id)}/messages?limit=${HISTORY_PAGE}`);
    for (const m of messages) addMessage(conv, m, { quiet: true });
    conv.loaded = true;
    if (messages.length < HISTORY_PAGE) conv.exhausted = true;
  } catch (e) { showError(e.message); } finally { conv.loading = false; }
}

async function loadOlder(conv) {
  if (!conv || conv.loading || conv.exhausted || !conv.loaded || conv.minSeq === null) return;
  conv.loading = true;
  const pane = conv.pane;
  const before = pane.scrollHeight;
  try {
    const { messages } = await api('GET',
      `/conversations/${enc(conv.id)}/messages?limit=${HISTORY_PAGE}&before=${conv.minSeq}`);
    for (const m of messages) addMessage(conv, m, { quiet: true });
    if (messages.length < HISTORY_PAGE) conv.exhausted = true;
    pane.scrollTop += pane.scrollHeight - before;
  } catch (e) { showError(e.message); } finally { conv.loading = false; }
  if (S.active === conv.id) $('older').hidden = conv.exhausted;
}

// ---------- messages ----------

function messageState(conv, seq) {
  if (!seq) return 'sending';
  const others = conv.members.filter((m) => m.address !== S.me);
  if (!others.length) return 'sent';
  if (others.every((m) => m.read >= seq)) return 'read';
  if (others.every((m) => m.delivered >= seq || m.read >= seq)) return 'delivered';
  return 'sent';
}

function updateStates(conv) {
  for (const li of conv.pane.querySelectorAll('li.own')) {
    const seq = Number(li.dataset.seq || 0);
    const state = messageState(conv, seq);
    const span = li.querySelector('.state');
    if (span.textContent !== state) {
      span.textContent = state;
      span.className = `state ${state}`;
    }
  }
}

function messageNode(conv, m, own) {
  const when = m.sent_at ? new Date(m.sent_at) : new Date();
  return el('li', { class: own ? 'msg own' : 'msg', 'data-id': m.id || '', 'data-seq': m.seq || '' },
    el('span', { class: 'from', text: own ? 'me' : displayName(m.from) }),
    el('span', { class: 'body', text: m.body }),
    el('span', { class: 'meta' },
      el('time', { dateTime: when.toISOString(), text: when.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }) }),
      own ? el('span', { class: 'state', text: '' }) : null));
}

// Inserts a message in seq order; a message already shown (by id) is not shown twice.
function addMessage(conv, m, opts = {}) {
  if (m.id && conv.msgs.get(m.id)) return false;
  const own = m.from === S.me;
  let node = null;
  if (own && m.client_id && conv.byClient.has(m.client_id)) {
    // Our own message, sent from this page and now confirmed.
    node = conv.byClient.get(m.client_id);
    conv.byClient.delete(m.client_id);
    S.pending.delete(m.client_id);
    node.dataset.id = m.id;
    node.dataset.seq = m.seq || '';
  } else {
    node = messageNode(conv, m, own);
    insertBySeq(conv, node, m.seq);
  }
  if (m.id) conv.msgs.set(m.id, node);
  if (m.seq) {
    conv.minSeq = conv.minSeq === null ? m.seq : Math.min(conv.minSeq, m.seq);
    conv.maxSeq = Math.max(conv.maxSeq, m.seq);
    conv.lastSeq = Math.max(conv.lastSeq, m.seq);
  }
  if (own) updateStates(conv);
  return !opts.quiet;
}

function insertBySeq(conv, node, seq) {
  const pane = conv.pane;
  if (!seq) { pane.append(node); return; }
  // Before the first newer message, or before our own messages still being sent.
  const next = [...pane.children].find((n) => {
    const s = Number(n.dataset.seq || 0);
    return s > seq || (!s && n.classList.contains('own'));
  });
  if (next) next.before(node); else pane.append(node);
}

function nearBottom(pane) {
  return pane.scrollHeight - pane.scrollTop - pane.clientHeight < 80;
}

async function onIncoming(ev) {
  const conv = await ensureConv(ev.conversation);
  if (!conv) return;
  if (conv.typing.has(ev.from)) {
    clearTimeout(conv.typing.get(ev.from));
    conv.typing.delete(ev.from);
    renderTyping(conv);
  }
  const stick = nearBottom(conv.pane);
  if (!conv.loaded && S.active !== conv.id) {
    // Not opened yet: its history loads when opened; count it as unread.
    if (conv.msgs.has(ev.id)) return;
    conv.msgs.set(ev.id, null);
    conv.lastSeq = Math.max(conv.lastSeq, ev.seq || 0);
    if (ev.from !== S.me) { conv.unread += 1; alertNew(conv, ev); }
    renderConvItem(conv);
    updateTitle();
    return;
  }
  if (conv.msgs.has(ev.id) && conv.msgs.get(ev.id)) return;
  conv.msgs.delete(ev.id);
  addMessage(conv, ev);
  if (stick || ev.from === S.me) conv.pane.scrollTop = conv.pane.scrollHeight;
  if (ev.from !== S.me) {
    if (S.active === conv.id && document.visibilityState === 'visible') markRead(conv);
    else conv.unread += 1;
    alertNew(conv, ev);
  }
  renderConvItem(conv);
  updateTitle();
}

function newClientId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return `${Date.now()}-${Math.random().toString(36).slice(2)}`;
}

async function send(ev) {
  ev.preventDefault();
  const conv = S.convs.get(S.active);
  const box = $('compose');
  const body = box.value;
  if (!conv || !body.trim()) return;
  box.value = '';
  const clientId = newClientId();
  const node = messageNode(conv, { body, from: S.me, sent_at: Date.now() }, true);
  node.querySelector('.state').textContent = 'sending';
  conv.pane.append(node);
  conv.pane.scrollTop = conv.pane.scrollHeight;
  conv.byClient.set(clientId, node);
  S.pending.set(clientId, { conv: conv.id, body });
  S.typingSent = 0;
  transmit(clientId);
}

// Sends a pending message on the WebSocket when open, else over HTTP. Resends carry the
// same client id, so the server stores the message once.
async function transmit(clientId) {
  const p = S.pending.get(clientId);
  if (!p) return;
  if (S.ws && S.ws.readyState === WebSocket.OPEN) {
    S.ws.send(JSON.stringify({ type: 'send', conversation: p.conv, client_id: clientId, body: p.body }));
    return;
  }
  if (p.inflight) return;
  p.inflight = true;
  try {
    const ack = await api('POST', `/conversations/${enc(p.conv)}/messages`, { client_id: clientId, body: p.body });
    confirmSent({ ...ack, ref: clientId });
  } catch (e) {
    if (e.status && e.status < 500) {
      failSend(clientId, e.message);
    } else {
      p.inflight = false;
      setTimeout(() => transmit(clientId), 2000);
    }
  }
}

function confirmSent(ack) {
  const p = S.pending.get(ack.ref);
  const conv = S.convs.get(ack.conversation || (p && p.conv));
  S.pending.delete(ack.ref);
  if (!conv) return;
  const node = conv.byClient.get(ack.ref);
  if (!node) return;
  conv.byClient.delete(ack.ref);
  if (conv.msgs.get(ack.id)) { node.remove(); return; } // already shown from the stream
  node.dataset.id = ack.id;
  node.dataset.seq = ack.seq || '';
  conv.msgs.set(ack.id, node);
  if (ack.seq) {
    conv.maxSeq = Math.max(conv.maxSeq, ack.seq);
    conv.lastSeq = Math.max(conv.lastSeq, ack.seq);
    if (conv.minSeq === null) conv.minSeq = ack.seq;
    node.remove();
    insertBySeq(conv, node, ack.seq);
  } else {
    node.querySelector('.state').textContent = 'sent';
  }
  updateStates(conv);
  if (S.active === conv.id && document.visibilityState === 'visible') markRead(conv);
}

function failSend(clientId, message) {
  const p = S.pending.get(clientId);
  S.pending.delete(clientId);
  if (!p) return;
  const conv = S.convs.get(p.conv);
  const node = conv && conv.byClient.get(clientId);
  if (node) {
    conv.byClient.delete(clientId);
    const st = node.querySelector('.state');
    st.textContent = 'not sent';
    st.className = 'state failed';
  }
  showError(`Not sent: ${message}`);
}

function markRead(conv) {
  const upto = Math.max(conv.maxSeq, conv.lastSeq);
  conv.unread = 0;
  renderConvItem(conv);
  updateTitle();
  if (!upto || upto <= conv.read) return;
  conv.read = upto;
  if (S.ws && S.ws.readyState === WebSocket.OPEN) {
    S.ws.send(JSON.stringify({ type: 'read', conversation: conv.id, upto }));
  } else {
    api('POST', `/conversations/${enc(conv.id)}/read`, { upto }).catch((e) => showError(e.message));
  }
}

function onReceipt(ev) {
  const conv = S.convs.get(ev.conversation);
  if (!conv) return;
  let m = conv.members.find((x) => x.address === ev.member);
  if (!m) { m = { address: ev.member, delivered: 0, read: 0 }; conv.members.push(m); }
  if (ev.kind === 'read') {
    m.read = Math.max(m.read, ev.upto);
    m.delivered = Math.max(m.delivered, ev.upto);
  } else {
    m.delivered = Math.max(m.delivered, ev.upto);
  }
  if (ev.member === S.me && ev.kind === 'read') {
    // Read on another of my devices.
    conv.read = Math.max(conv.read, ev.upto);
    conv.unread = Math.max(0, conv.lastSeq - conv.read);
    renderConvItem(conv);
    updateTitle();
  }
  updateStates(conv);
}

// ---------- typing ----------

function onTyping(ev) {
  if (ev.from === S.me) return;
  const conv = S.convs.get(ev.conversation);
  if (!conv) return;
  clearTimeout(conv.typing.get(ev.from));
  if (ev.state === 'composing') {
    conv.typing.set(ev.from, setTimeout(() => { conv.typing.delete(ev.from); renderTyping(conv); }, 8000));
  } else {
    conv.typing.delete(ev.from);
  }
  renderTyping(conv);
}

function renderTyping(conv) {
  if (S.active !== conv.id) return;
  const who = [...conv.typing.keys()].map(displayName);
  $('typing').textContent = who.length ? `${who.join(', ')} typing…` : '';
}

function composing() {
  const conv = S.convs.get(S.active);
  if (!conv || Date.now() - S.typingSent < 4000) return;
  S.typingSent = Date.now();
  if (S.ws && S.ws.readyState === WebSocket.OPEN) {
    S.ws.send(JSON.stringify({ type: 'typing', conversation: conv.id, state: 'composing' }));
  } else {
    api('POST', `/conversations/${enc(conv.id)}/typing`, { state: 'composing' }).catch(() => {});
  }
}

// ---------- presence and settings ----------

async function setPresence(ev) {
  ev.preventDefault();
  const status = $('presence-status').value.trim();
  S.presence = { show: $('presence-show').value, status: status || null };
  await sendPresence();
}

async function sendPresence() {
  if (S.ws && S.ws.readyState === WebSocket.OPEN) {
    S.ws.send(JSON.stringify({ type: 'presence', show: S.presence.show, status: S.presence.status }));
    announce(`Presence set to ${S.presence.show}`);
    return;
  }
  if (!S.session) return;
  try {
    await api('PUT', `/sessions/${enc(S.session)}/presence`, S.presence);
    announce(`Presence set to ${S.presence.show}`);
  } catch (e) { showError(e.message); }
}

async function setVisibility() {
  const settings = { visibility: $('visibility').value };
  try {
    S.settings = await api('PUT', '/me/settings', settings);
    announce(`Presence visible to ${S.settings.visibility}`);
  } catch (e) {
    showError(e.message);
    if (S.settings) $('visibility').value = S.settings.visibility;
  }
}

function onPresence(ev) {
  const c = S.contacts.get(ev.from);
  if (!c) return;
  c.presence = { show: ev.show, status: ev.status };
  renderContacts();
}

// ---------- alerts ----------

function announce(text) {
  const a = $('announce');
  a.textContent = '';
  // A fresh text node so that screen readers announce repeated text too.
  setTimeout(() => { a.textContent = text; }, 50);
}

function hash(text) {
  let h = 0;
  for (let i = 0; i < text.length; i++) h = (h * 31 + text.charCodeAt(i)) | 0;
  return Math.abs(h);
}

function alertNew(conv, m) {
  announce(`${displayName(m.from)} in ${convTitle(conv)}: ${m.body}`);
  if ($('speak').checked) speak(m);
  if (document.visibilityState === 'visible' && document.hasFocus() && S.active === conv.id) return;
  beep();
  if (navigator.vibrate) { try { navigator.vibrate(120); } catch (_) { /* not allowed */ } }
  if (document.visibilityState !== 'visible' && 'Notification' in window && Notification.permission === 'granted') {
    const n = new Notification(`${displayName(m.from)} — ${convTitle(conv)}`, { body: m.body, tag: conv.id });
    n.onclick = () => { window.focus(); openConv(conv.id); n.close(); };
  }
}

function beep() {
  try {
    if (!S.audio) S.audio = new AudioContext();
    const ctx = S.audio;
    if (ctx.state === 'suspended') ctx.resume();
    const osc = ctx.createOscillator();
    const gain = ctx.createGain();
    osc.type = 'sine';
    osc.frequency.value = 880;
    gain.gain.setValueAtTime(0.15, ctx.currentTime);
    gain.gain.exponentialRampToValueAtTime(0.001, ctx.currentTime + 0.25);
    osc.connect(gain).connect(ctx.destination);
    osc.start();
    osc.stop(ctx.currentTime + 0.25);
  } catch (_) { /* no audio */ }
}

function speak(m) {
  if (!('speechSynthesis' in window)) return;
  const u = new SpeechSynthesisUtterance(`${displayName(m.from)} says: ${m.body}`);
  const h = hash(m.from);
  const voices = speechSynthesis.getVoices();
  if (voices.length) u.voice = voices[h % voices.length];
  u.pitch = 0.6 + (h % 7) * 0.2;
  u.rate = 0.9 + (h % 3) * 0.1;
  speechSynthesis.speak(u);
}

async function askNotifications() {
  if (!('Notification' in window)) { showError('This browser has no notifications.'); return; }
  const p = await Notification.requestPermission();
  $('notify-btn').textContent = p === 'granted' ? 'Notifications on' : 'Notifications';
}

// ---------- the event stream ----------

function setConn(kind, text) {
  const c = $('conn');
  c.textContent = text;
  c.className = `conn ${kind}`;
}

function connect() {
  if (S.transport === 'poll') pollLoop();
  else connectWs();
}

function stopStream() {
  S.stopped = true;
  if (S.ws) { try { S.ws.close(); } catch (_) { /* closing anyway */ } }
  S.ws = null;
  S.session = null;
  S.position = 0;
  S.hadSession = false;
  S.transport = 'ws';
  S.wsFailures = 0;
  if (S.pollAbort) S.pollAbort.abort();
}

function connectWs() {
  if (S.stopped) return;
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  let url = `${proto}//${location.host}${API}/events`;
  const resuming = S.session;
  if (resuming) url += `?session=${enc(S.session)}&after=${S.position}`;
  setConn('', 'connecting');
  let opened = false;
  let ws;
  try { ws = new WebSocket(url); } catch (_) { wsFailed(resuming); return; }
  S.ws = ws;
  // Connected means: the session frame came (a proxy may accept the upgrade and then fail).
  const guard = setTimeout(() => { if (!opened) ws.close(); }, 8000);
  ws.onmessage = (e) => {
    let ev;
    try { ev = JSON.parse(e.data); } catch (_) { return; }
    if (ev.type === 'session') {
      opened = true;
      clearTimeout(guard);
      S.wsFailures = 0;
      setConn('ws', 'live (WebSocket)');
      onSession(ev.session, ev.position, ev.resumed);
      for (const id of S.pending.keys()) transmit(id);
      return;
    }
    if (ev.type === 'sent') { confirmSent(ev); return; }
    if (ev.type === 'error') { if (ev.ref) failSend(ev.ref, ev.error.message); else showError(ev.error.message); return; }
    if (ev.type === 'pong') return;
    handleEvent(ev);
    scheduleAck();
  };
  ws.onerror = () => {};
  ws.onclose = () => {
    clearTimeout(guard);
    if (S.ws === ws) S.ws = null;
    if (S.stopped) return;
    if (opened) {
      // A drop: come back to the same session, after what we have.
      setConn('', 'reconnecting');
      setTimeout(connectWs, 500);
    } else {
      wsFailed(resuming);
    }
  };
}

function wsFailed(resuming) {
  S.wsFailures += 1;
  if (resuming && S.wsFailures === 1) {
    // The session may be gone, or the network down: one retry, then long-poll (which
    // resumes the same session or tells us it is gone).
    setTimeout(connectWs, 500);
    return;
  }
  if (S.wsFailures >= 2) {
    S.transport = 'poll';
    pollLoop();
    return;
  }
  setTimeout(connectWs, 300);
}

// A session (new or resumed) is attached.
function onSession(id, position, resumed) {
  const fresh = !resumed || id !== S.session;
  S.session = id;
  if (fresh) {
    S.position = position;
    S.acked = position;
    if (S.hadSession) resync();
    if (S.presence.show !== 'available' || S.presence.status) sendPresence();
  }
  S.hadSession = true;
}

// After a session was lost: refresh what the new session does not replay.
async function resync() {
  try {
    await Promise.all([loadContacts(), loadConversations()]);
    for (const conv of S.convs.values()) {
      if (!conv.loaded) continue;
      const { messages } = await api('GET', `/conversations/${enc(conv.id)}/messages?limit=${HISTORY_PAGE}`);
      for (const m of messages) if (!conv.msgs.get(m.id)) onIncoming({ ...m, type: 'message' });
    }
  } catch (e) { showError(e.message); }
}

function scheduleAck() {
  if (S.ackTimer) return;
  S.ackTimer = setTimeout(() => {
    S.ackTimer = null;
    if (S.ws && S.ws.readyState === WebSocket.OPEN && S.position > S.acked) {
      S.ws.send(JSON.stringify({ type: 'ack', position: S.position }));
      S.acked = S.position;
    }
  }, 1000);
}

async function pollLoop() {
  if (S.polling) return;
  S.polling = true;
  let delay = 500;
  try {
    while (!S.stopped && S.transport === 'poll') {
      try {
        if (!S.session) {
          const s = await api('POST', '/sessions');
          onSession(s.session, s.position, false);
          if (S.presence.show !== 'available' || S.presence.status) sendPresence();
        }
        setConn('poll', 'live (long-poll)');
        for (const id of S.pending.keys()) transmit(id);
        S.pollAbort = new AbortController();
        const res = await fetch(`${API}/sessions/${enc(S.session)}/events?after=${S.position}&timeout=20`,
          { credentials: 'same-origin', signal: S.pollAbort.signal });
        if (res.status === 410 || res.status === 404) { S.session = null; continue; }
        if (res.status === 401) { signedOut(); return; }
        if (!res.ok) throw new Error(`poll answered ${res.status}`);
        const body = await res.json();
        for (const ev of body.events) handleEvent(ev);
        if (typeof body.position === 'number') S.position = Math.max(S.position, body.position);
        delay = 500;
      } catch (e) {
        if (S.stopped) return;
        setConn('', 'reconnecting');
        await sleep(delay);
        delay = Math.min(delay * 2, 10000);
      }
    }
  } finally {
    S.polling = false;
  }
}

function handleEvent(ev) {
  if (typeof ev.position === 'number') {
    if (ev.position <= S.position && ev.type !== 'message') return; // already seen
    S.position = Math.max(S.position, ev.position);
  }
  switch (ev.type) {
    case 'message':
    case 'relayed':
      onIncoming(ev);
      break;
    case 'presence':
      onPresence(ev);
      break;
    case 'receipt':
      onReceipt(ev);
      break;
    case 'typing':
      onTyping(ev);
      break;
    case 'contact':
      loadContacts().catch(() => {});
      if (ev.from === 'pending') announce(`Contact request from ${ev.peer}`);
      break;
    case 'joined':
      ensureConv(ev.conversation).catch(() => {});
      break;
    case 'left': {
      const conv = S.convs.get(ev.conversation);
      if (conv) {
        conv.pane.remove();
        S.convs.delete(ev.conversation);
        if (S.active === ev.conversation) { S.active = null; $('composer').hidden = true; }
        renderConvList();
      }
      break;
    }
    case 'settings':
      S.settings = { visibility: ev.visibility, message_policy: ev.message_policy, display_name: ev.display_name };
      $('visibility').value = ev.visibility;
      break;
    default:
      break;
  }
}

// ---------- wiring ----------

function wireUi() {
  $('signin-form').addEventListener('submit', signIn);
  $('signout').addEventListener('click', signOut);
  $('add-form').addEventListener('submit', addContact);
  $('group-form').addEventListener('submit', startGroup);
  $('composer').addEventListener('submit', send);
  $('presence-form').addEventListener('submit', setPresence);
  $('visibility').addEventListener('change', setVisibility);
  $('notify-btn').addEventListener('click', askNotifications);
  $('older').addEventListener('click', () => loadOlder(S.convs.get(S.active)));
  $('back').addEventListener('click', () => { $('app').classList.remove('in-chat'); });
  $('compose').addEventListener('input', composing);
  $('compose').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $('composer').requestSubmit();
    }
  });
  // Alt+ArrowUp / Alt+ArrowDown switch between conversations.
  document.addEventListener('keydown', (e) => {
    if (!e.altKey || (e.key !== 'ArrowUp' && e.key !== 'ArrowDown')) return;
    const ids = [...S.convs.keys()];
    if (!ids.length) return;
    const i = ids.indexOf(S.active);
    const next = e.key === 'ArrowDown' ? (i + 1) % ids.length : (i - 1 + ids.length) % ids.length;
    e.preventDefault();
    openConv(ids[next]);
  });
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible' && S.active && S.convs.has(S.active)) markRead(S.convs.get(S.active));
  });
  window.addEventListener('focus', () => {
    if (S.active && S.convs.has(S.active)) markRead(S.convs.get(S.active));
  });
  window.addEventListener('online', () => {
    if (!S.stopped && S.transport === 'ws' && !S.ws) connectWs();
  });
  document.addEventListener('pointerdown', () => {
    // Browsers allow sound only after a gesture.
    if (!S.audio && window.AudioContext) { try { S.audio = new AudioContext(); } catch (_) { /* none */ } }
  }, { once: true });
  if ('Notification' in window && Notification.permission === 'granted') $('notify-btn').textContent = 'Notifications on';
}

boot();
