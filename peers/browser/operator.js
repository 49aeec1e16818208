// Walks the otpgate console's operator pages in the system Chromium
// (playwright-core, no bundled browser) and prints one JSON object of what it
// saw on its last stdout line; the Rust test
// crates/otpgate/tests/api/console_ops.rs asserts on it. Only talks to
// 127.0.0.1.
//
// Stopping and restarting the SMSC is the test's: this script prints
// `stop-smsc` (or `start-smsc`) on a line of its own and waits for a line
// `done` on its standard input.
//
// Environment: BASE (http://127.0.0.1:PORT), OPERATOR_EMAIL, ACCOUNT_EMAIL,
// PASSWORD (both users'), ACCOUNT_ID (the account to top up), ROUTE (the
// SMPP route's name), SHOTS (a directory for screenshots), CHROMIUM
// (default /usr/bin/chromium).
'use strict';
const readline = require('readline');
const path = require('path');
const { env, base, report, launch, watch, audit: auditInto } = require('./common');

const BASE = base();
const ROUTE = env('ROUTE');

const out = report();
const audit = (page, name) => auditInto(page, name, out);

const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
// Asks the test to do `what` and waits until it says it is done.
async function ask(what) {
  process.stdout.write(`${what}\n`);
  const answer = await lines.next();
  if (answer.done || answer.value.trim() !== 'done') throw new Error(`the test did not do ${what}`);
}


async function login(page, email) {
  await page.goto(`${BASE}/console/login`);
  await page.fill('#email', email);
  await page.fill('#password', env('PASSWORD'));
  await Promise.all([page.waitForNavigation(), page.click('form.card button[type=submit]')]);
}

// The statuses of the route's connections, as the live part shows them now.
async function connectionStatuses(page) {
  return page.$$eval(`section[data-route="${ROUTE}"] [data-status]`, (chips) =>
    chips.map((c) => c.getAttribute('data-status')));
}

// Waits (the page refreshes itself every 5 s) until `test` holds for the
// route's statuses; returns the statuses seen last.
async function waitForStatuses(page, test) {
  const until = Date.now() + 60000;
  let seen = [];
  while (Date.now() < until) {
    seen = await connectionStatuses(page);
    if (seen.length > 0 && test(seen)) return seen;
    await page.waitForTimeout(500);
  }
  return seen;
}

(async () => {
  const browser = await launch();
  try {

    // The admin token's login form, before any login.
    const anonymous = await browser.newContext({ viewport: { width: 360, height: 800 } });
    const loginPage = await anonymous.newPage();
    watch(loginPage, out);
    await loginPage.goto(`${BASE}/console/ops/accounts`);
    out.anonymous_redirected_to = new URL(loginPage.url()).pathname;
    await audit(loginPage, 'ops-login');

    // An account user: every operator page is refused.
    const userContext = await browser.newContext({ viewport: { width: 360, height: 800 } });
    const userPage = await userContext.newPage();
    watch(userPage, out);
    await login(userPage, env('ACCOUNT_EMAIL'));
    const refused = await userPage.goto(`${BASE}/console/ops/accounts`);
    out.account_user_status = refused.status();
    await audit(userPage, 'ops-refused');

    // The operator.
    const context = await browser.newContext({ viewport: { width: 360, height: 800 } });
    const page = await context.newPage();
    watch(page, out);
    await login(page, env('OPERATOR_EMAIL'));
    await page.goto(`${BASE}/console/ops/accounts`);
    out.accounts_status = 200;
    await audit(page, 'ops-accounts');

    // Top up, and see the balance move.
    const accountUrl = `${BASE}/console/ops/accounts/${env('ACCOUNT_ID')}`;
    await page.goto(accountUrl);
    out.balance_before = Number(await page.textContent('#sms-balance'));
    await audit(page, 'ops-account');
    await page.fill('#sms', 'lots');
    await Promise.all([page.waitForNavigation(), page.click('form[action$="/credits"] button')]);
    out.bad_top_up_error = (await page.textContent('#sms-error')) || '';
    out.balance_after_bad = Number(await page.textContent('#sms-balance'));
    await audit(page, 'ops-account-bad-top-up');
    await page.fill('#sms', '25');
    await page.fill('#note', 'browser top-up');
    await Promise.all([page.waitForNavigation(), page.click('form[action$="/credits"] button')]);
    out.balance_after = Number(await page.textContent('#sms-balance'));
    out.ledger_first_row = await page.textContent('#ledger tbody tr');

    // The routes, live: down when the SMSC stops, up again when it restarts.
    await page.goto(`${BASE}/console/ops/routes`);
    out.route_before = await waitForStatuses(page, (s) => s.every((x) => x === 'bound'));
    await audit(page, 'ops-routes');
    await ask('stop-smsc');
    out.route_stopped = await waitForStatuses(page, (s) => s.every((x) => x !== 'bound'));
    await page.screenshot({ path: path.join(env('SHOTS'), 'ops-routes-down.png'), fullPage: true });
    await ask('start-smsc');
    out.route_restarted = await waitForStatuses(page, (s) => s.every((x) => x === 'bound'));
    out.rate_chart = (await page.$(`section[data-route="${ROUTE}"] svg.chart`)) !== null;

    // Every account's OTPs.
    await page.goto(`${BASE}/console/ops/otps`);
    out.all_otp_links = await page.$$eval('a[href^="/console/ops/otps/"]', (as) => as.map((a) => a.getAttribute('href')));
    await audit(page, 'ops-otps');
    if (out.all_otp_links.length > 0) {
      await page.goto(`${BASE}${out.all_otp_links[0]}`);
      await audit(page, 'ops-otp');
    }
  } finally {
    await browser.close();
  }
  process.stdout.write(`${JSON.stringify(out)}\n`);
  process.exit(0);
})().catch((e) => {
  process.stderr.write(`${e.stack || e}\n`);
  process.exit(1);
});
