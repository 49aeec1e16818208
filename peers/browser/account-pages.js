// Walks the console's account pages that read the conversion aggregates and
// change the webhook, and the voice page, in the system Chromium
// (playwright-core, no bundled browser), and prints one JSON object of what it
// saw; crates/otpgate/tests/api/console_account.rs asserts on it. Only talks
// to 127.0.0.1.
//
// Environment: BASE (http://127.0.0.1:PORT), EMAIL, PASSWORD, API_KEY (a key
// of the user's account), NUMBER, RECEIVER (a local webhook receiver's URL),
// SHOTS (a directory for screenshots), CHROMIUM (default /usr/bin/chromium).
'use strict';
const { env, base, report, launch, watch, sendOtp, audit: auditInto } = require('./common');

const BASE = base();
const RECEIVER = env('RECEIVER');
if (!/^http:\/\/127\.0\.0\.1:\d+\//.test(RECEIVER)) throw new Error('RECEIVER must be on 127.0.0.1');

const out = report();
const audit = (page, name) => auditInto(page, name, out);

// Clicks a submit button and waits for the page it loads; the answer's status.
async function submit(page, selector) {
  const [response] = await Promise.all([page.waitForNavigation(), page.click(selector)]);
  return response ? response.status() : null;
}


(async () => {
  const browser = await launch();
  try {
    const context = await browser.newContext({ viewport: { width: 360, height: 800 } });
    const page = await context.newPage();
    watch(page, out);

    await page.goto(`${BASE}/console/login`);
    await page.fill('#email', env('EMAIL'));
    await page.fill('#password', env('PASSWORD'));
    await page.keyboard.press('Enter');
    await page.waitForURL(`${BASE}/console/`);

    // The overview's charts, from the aggregates of what the API sent.
    await sendOtp(env('NUMBER'));
    await sendOtp(env('NUMBER'));
    await page.reload();
    out.sends_chart_desc = await page.locator('svg.sends desc').textContent();
    out.sends_chart_lines = await page.locator('svg.sends polyline').count();
    out.channel_rows = await page.locator('section[aria-labelledby="conversion-h"] tbody tr').allInnerTexts();
    out.rate_charts = await page.locator('section[aria-labelledby="conversion-h"] svg title').allTextContents();
    await audit(page, 'overview-conversions');

    // The webhook page: a bad URL is refused next to its field.
    await page.click('nav >> text=Webhook');
    await page.waitForURL(`${BASE}/console/webhook`);
    await audit(page, 'webhook-empty');
    await page.fill('#url', 'not a url');
    out.bad_url_status = await submit(page, 'form[action="/console/webhook"] button');
    out.bad_url_error = await page.locator('#url-error').textContent().catch(() => null);
    out.secret_after_bad_url = await page.locator('#secret').count();
    await audit(page, 'webhook-bad-url');
    // A good one: saved, with a secret.
    await page.fill('#url', RECEIVER);
    out.set_url_status = await submit(page, 'form[action="/console/webhook"] button');
    out.url_after_set = await page.inputValue('#url');
    const firstSecret = await page.inputValue('#secret');
    // Rotate: a new secret, the same URL.
    out.rotate_status = await submit(page, 'form[action="/console/webhook/rotate"] button');
    const secondSecret = await page.inputValue('#secret');
    out.secret_rotated = firstSecret.length > 0 && secondSecret.length > 0 && firstSecret !== secondSecret;
    out.secret = secondSecret;
    // A test event reaches the receiver now.
    out.test_status = await submit(page, 'form[action="/console/webhook/test"] button');
    out.test_notice = await page.locator('.notice').textContent();
    await audit(page, 'webhook-tested');
    // A send's events are delivered by the worker and listed with their attempts.
    await sendOtp(env('NUMBER'));
    for (let i = 0; i < 60; i++) {
      await page.goto(`${BASE}/console/webhook`);
      out.delivery_rows = await page.locator('tbody tr').allInnerTexts();
      if (out.delivery_rows.some((r) => /answered 200/.test(r))) break;
      await page.waitForTimeout(250);
    }
    await audit(page, 'webhook-deliveries');

    // The voice page: a length factor out of range is refused next to it.
    await page.click('nav >> text=Voice');
    await page.waitForURL(`${BASE}/console/voice`);
    await audit(page, 'voice');
    out.voices = await page.locator('#voice_input option').allTextContents();
    await page.selectOption('#voice_input', 'np_binod');
    await page.fill('#length_factor', '3');
    out.bad_factor_status = await submit(page, 'form[action="/console/voice"] button');
    out.bad_factor_error = await page.locator('#length_factor-error').textContent().catch(() => null);
    out.audio_after_bad_factor = await page.locator('audio').count();
    await audit(page, 'voice-bad-factor');
    await page.fill('#length_factor', '1.2');
    out.voice_status = await submit(page, 'form[action="/console/voice"] button');
    const src = await page.locator('audio').getAttribute('src');
    // Fetched with the browser's cookies (the page's CSP allows no fetch).
    const wav = await context.request.get(`${BASE}${src}`);
    const bytes = await wav.body();
    out.audio = { status: wav.status(), type: wav.headers()['content-type'], riff: bytes.subarray(0, 4).toString('latin1'), size: bytes.length };
    // The player loads it under the page's CSP.
    out.audio_ready = await page.evaluate(() => new Promise((done) => {
      const a = document.querySelector('audio');
      if (a.readyState >= 1) return done(true);
      a.addEventListener('loadedmetadata', () => done(true));
      a.addEventListener('error', () => done(false));
      a.load();
    }));
    await audit(page, 'voice-prompt');
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify(out) + '\n');
})().catch((e) => {
  process.stderr.write(String(e && e.stack ? e.stack : e) + '\n');
  process.exit(1);
});
