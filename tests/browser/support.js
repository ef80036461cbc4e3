// What the browser tests share: the real server binary on free ports with its own data
// directory, users made with the CLI, waits on conditions with a deadline, and Debian's
// Chromium (never a downloaded browser).
'use strict';

const assert = require('node:assert/strict');
const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { chromium } = require('playwright-core');

const ROOT = path.resolve(__dirname, '..', '..');
const TARGET = process.env.CARGO_TARGET_DIR || path.join(ROOT, 'target');
const BINARY = path.join(TARGET, 'debug', 'switchboard');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const PASSWORD = 'correct horse battery';
const TIMEOUT = 15000;

// `n` distinct free ports: all are held open together, so none is handed out twice.
async function freePorts(n) {
  const servers = await Promise.all(Array.from({ length: n }, () => new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => resolve(s));
  })));
  const ports = servers.map((s) => s.address().port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

// Polls `check` until it returns a truthy value, failing with `what` after the deadline.
async function until(what, check, timeout = TIMEOUT) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what} (last: ${last})`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

// Starts the server (XMPP on free ports too: the standard ones may be taken here) with
// `extraEnv`, waits for /healthz, and adds `users` with the CLI.
async function startServer({ users = [], extraEnv = {} } = {}) {
  assert.ok(fs.existsSync(BINARY), `build the server first: cargo build -p switchboard (${BINARY})`);
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'switchboard-browser-'));
  const [port, xmppPort, xmppTlsPort] = await freePorts(3);
  const base = `http://127.0.0.1:${port}`;
  const env = {
    ...process.env,
    SWITCHBOARD_DATA_DIR: dataDir,
    SWITCHBOARD_HTTP_LISTEN: `127.0.0.1:${port}`,
    SWITCHBOARD_XMPP_LISTEN: `127.0.0.1:${xmppPort}`,
    SWITCHBOARD_XMPP_TLS_LISTEN: `127.0.0.1:${xmppTlsPort}`,
    SWITCHBOARD_AUTH_SCRAM_ITERATIONS: '64',
    SWITCHBOARD_LIMITS_LOGIN_ATTEMPTS_PER_MINUTE: '1000',
    ...extraEnv,
  };
  let log = '';
  const child = spawn(BINARY, ['serve'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.on('data', (d) => { log += d; });
  child.stderr.on('data', (d) => { log += d; });
  await until('the server to answer /healthz', async () => {
    if (child.exitCode !== null) throw new Error(`server exited: ${log}`);
    const res = await fetch(`${base}/healthz`).catch(() => null);
    return res && res.ok;
  });
  const addUser = (name) => execFileSync(BINARY, ['user', 'add', name], {
    env, input: `${PASSWORD}\n`, stdio: ['pipe', 'pipe', 'pipe'],
  });
  for (const name of users) addUser(name);
  return {
    base,
    addUser,
    log: () => log,
    async stop() {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await new Promise((r) => child.once('exit', r));
      }
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

async function launchChromium() {
  assert.ok(fs.existsSync(CHROMIUM), `install Debian's chromium (${CHROMIUM})`);
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
}

module.exports = { PASSWORD, TIMEOUT, freePorts, until, startServer, launchChromium };
