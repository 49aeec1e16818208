// Walks the otpgate console in the system Chromium (playwright-core, no bundled
// browser) and prints one JSON object of what it saw; the Rust test
// crates/otpgate/tests/api/console.rs asserts on it. Only talks to 127.0.0.1.
//
// Environment: BASE (http://127.0.0.1:PORT), EMAIL, PASSWORD, API_KEY (a key of
// the user's account, to send an OTP through the API), NUMBER, OTHER_OTP_ID (an
// OTP of another account), SHOTS (a directory for screenshots),
// CHROMIUM (default /usr/bin/chromium).
'use strict';
const { env, base, report, launch, watch, sendOtp, audit: auditInto } = require('./common');

const BASE = base();

const out = report();
const audit = (page, name) => auditInto(page, name, out);


// Presses Tab `count` times and names what has the focus after each press.
async function tabOrder(page, count) {
  const seen = [];
  for (let i = 0; i < count; i++) {
    await page.keyboard.press('Tab');
    seen.push(await page.evaluate(() => {
      const e = document.activeElement;
      if (!e) return '';
      return e.id || e.getAttribute('name') || e.getAttribute('aria-label') || e.textContent.trim();
    }));
  }
  return seen;
}

(async () => {
  const browser = await launch();
  try {
    // A phone's width: every page must fit it.
    const context = await browser.newContext({ viewport: { width: 360, height: 800 } });
    const page = await context.newPage();
    watch(page, out);

    // Not logged in: the overview sends the browser to the login page.
    await page.goto(`${BASE}/console/`);
    out.redirected_to_login = page.url() === `${BASE}/console/login`;
    await audit(page, 'login');

    // The login page with the keyboard only: tab to each field, type, Enter.
    out.tab_login = await tabOrder(page, 4);
    await page.reload();
    await page.keyboard.press('Tab'); // skip link
    await page.keyboard.press('Tab'); // email
    await page.keyboard.type(env('EMAIL'));
    await page.keyboard.press('Tab');
    await page.keyboard.type('not the password');
    await page.keyboard.press('Enter');
    await page.waitForLoadState();
    out.wrong_password_alert = await page.locator('[role=alert]').textContent().catch(() => null);
    await audit(page, 'login-refused');
    await page.fill('#password', env('PASSWORD'));
    await page.keyboard.press('Enter');
    await page.waitForURL(`${BASE}/console/`);
    out.logged_in = true;
    const cookies = await context.cookies();
    const session = cookies.find((c) => c.name === 'otpgate_console');
    out.session_cookie = session && { httpOnly: session.httpOnly, sameSite: session.sameSite, path: session.path };
    await audit(page, 'overview');
    out.overview_text = await page.locator('main').innerText();

    // An OTP sent through the API appears in the log.
    const sent = await sendOtp(env('NUMBER'));
    out.sent_id = sent.data.details.id;
    await page.click('nav >> text=OTP log');
    await page.waitForURL(`${BASE}/console/otps`);
    out.log_links = await page.locator('table a').evaluateAll((as) => as.map((a) => a.getAttribute('href')));
    // The SMSC's receipt turns its chip `delivered`: reload until it does.
    for (let i = 0; i < 60; i++) {
      out.log_status = (await page.locator('tbody .chip').first().textContent()).trim();
      if (out.log_status === 'delivered') break;
      await page.waitForTimeout(250);
      await page.reload();
    }
    await audit(page, 'otp-log');
    out.tab_log = await tabOrder(page, 12);

    // Search by status and channel, and a bad number.
    await page.goto(`${BASE}/console/otps?status=failed&channel=text`);
    out.search_failed_rows = await page.locator('tbody tr').count();
    await page.goto(`${BASE}/console/otps?number=${encodeURIComponent('not a number')}`);
    out.bad_number_error = await page.locator('#number-error').textContent().catch(() => null);
    await audit(page, 'otp-log-bad-number');

    // Its page and timeline.
    await page.goto(`${BASE}/console/otps`);
    await page.click(`a[href="/console/otps/${out.sent_id}"]`);
    await page.waitForURL(`${BASE}/console/otps/${out.sent_id}`);
    // Delivered already (the log said so): the timeline shows each step.
    for (let i = 0; i < 40; i++) {
      out.timeline = await page.locator('.timeline .chip').allTextContents();
      if (out.timeline.includes('delivered')) break;
      await page.waitForTimeout(250);
      await page.reload();
    }
    out.otp_page_text = await page.locator('main').innerText();
    await audit(page, 'otp');

    // Another account's OTP: not found, whatever id is typed.
    const other = await page.goto(`${BASE}/console/otps/${env('OTHER_OTP_ID')}`);
    out.other_otp_status = other.status();
    await audit(page, 'not-found');

    // A key: create it, it works, revoke it, it gets 401.
    await page.goto(`${BASE}/console/keys`);
    await audit(page, 'keys');
    await page.fill('#label', 'browser test');
    await page.click('text=Create key');
    await page.waitForLoadState();
    const key = await page.inputValue('#new-key');
    await audit(page, 'key-created');
    const listWith = (k) =>
      fetch(`${BASE}/api/v1/auths/list/send-otps/`, { headers: { Authorization: `Bearer ${k}` } }).then((r) => r.status);
    out.new_key_status = await listWith(key);
    const keyId = key.split('_')[1];
    await page.click(`button[aria-label="Revoke key ${keyId}"]`);
    await page.waitForURL(`${BASE}/console/keys`);
    out.revoked_key_status = await listWith(key);
    out.key_row_after_revoke = await page.locator('tr', { hasText: keyId }).innerText();

    // Log out: the session ends on the server, the old cookie opens nothing.
    await page.click('text=Log out');
    await page.waitForURL(`${BASE}/console/login`);
    const cookie = `otpgate_console=${session.value}`;
    const after = await fetch(`${BASE}/console/`, { headers: { Cookie: cookie }, redirect: 'manual' });
    out.after_logout_status = after.status;
    out.after_logout_location = after.headers.get('location');
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify(out) + '\n');
})().catch((e) => {
  process.stderr.write(String(e && e.stack ? e.stack : e) + '\n');
  process.exit(1);
});
