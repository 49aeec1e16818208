// What every console walk shares (console.js, account-pages.js, operator.js):
// the environment it reads, the system Chromium it launches, the page events it
// records and the axe-core audit with its screenshot. Only talks to 127.0.0.1.
'use strict';
const fs = require('fs');
const path = require('path');
const { chromium } = require('playwright-core');

const axeSource = fs.readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

// A variable of the environment that must be set.
function env(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
}

// BASE, checked to be this machine's loopback.
function base() {
  const b = env('BASE');
  if (!/^http:\/\/127\.0\.0\.1:\d+$/.test(b)) throw new Error('BASE must be http://127.0.0.1:PORT');
  return b;
}

// What a walk reports: each audited page, CSP violations and page errors.
function report() {
  return { pages: {}, csp_violations: [], page_errors: [] };
}

// The system Chromium (no bundled browser is reachable here).
function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox'],
  });
}

// Records the page's script errors and CSP violations into `out`.
function watch(page, out) {
  page.on('pageerror', (e) => out.page_errors.push(String(e)));
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content Security Policy/i.test(m.text())) out.csp_violations.push(m.text());
  });
}

// axe-core on the current page: its serious and critical violations, whether
// the page is wider than the viewport, its title, and a screenshot in SHOTS.
async function audit(page, name, out) {
  // Evaluated through the DevTools protocol: the page's CSP refuses an
  // injected <script>, as it should.
  await page.evaluate(axeSource);
  const result = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const r = await axe.run(document, { resultTypes: ['violations'] });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.length }));
  });
  const serious = result.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
  const shots = env('SHOTS');
  fs.mkdirSync(shots, { recursive: true });
  await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
  out.pages[name] = { serious, overflow, title: await page.title() };
}

// Sends an OTP through the API with the key in API_KEY; the reply's JSON.
function sendOtp(number) {
  return fetch(`${base()}/api/v1/auths/send/otp/`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${env('API_KEY')}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ number, message: 'Your code is {otp}', sms_send_options: 'text' }),
  }).then((r) => r.json());
}

module.exports = { env, base, report, launch, watch, audit, sendOtp };
