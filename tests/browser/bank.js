// The bank's web front end in a real browser (Debian's chromium, driven by playwright-core):
// open accounts, deposit, withdraw into the overdraft, see a withdrawal refused with the
// problem's detail, move the as-of slider and see the earlier balance, filter the accounts in
// overdraft, watch notifications arrive, run a transfer and see both accounts. Saves
// screenshots.
//
// Usage: node tests/browser/bank.js <app base URL> <screenshot dir>
// Exits non-zero, naming the failed step, when anything is not as expected.
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const { chromium } = require('playwright-core');

const [base, shots] = process.argv.slice(2);
if (!base || !shots) {
  console.error('usage: node tests/browser/bank.js <base URL> <screenshot dir>');
  process.exit(2);
}
const CHROMIUM = process.env.STREAMFOLD_CHROMIUM || '/usr/bin/chromium';
const STEP_TIMEOUT = 30000;

let stepName = 'start';
function step(name) {
  stepName = name;
  console.log(`step: ${name}`);
}

async function main() {
  fs.mkdirSync(shots, { recursive: true });
  const userData = fs.mkdtempSync(path.join(os.tmpdir(), 'streamfold-chromium-'));
  const context = await chromium.launchPersistentContext(userData, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
    viewport: { width: 1100, height: 1400 },
  });
  const page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(STEP_TIMEOUT);
  const consoleErrors = [];
  // Refusals are answers (4xx) the page shows; the browser logs each as a failed load, so only
  // the page's own errors count.
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) consoleErrors.push(m.text());
  });
  page.on('pageerror', (e) => consoleErrors.push(String(e)));
  try {
    await run(page);
    if (consoleErrors.length) throw new Error(`errors in the page's console: ${consoleErrors.join(' | ')}`);
  } finally {
    await context.close();
    fs.rmSync(userData, { recursive: true, force: true });
  }
}

const field = (page, list, name) => page.locator(`${list} dd[data-field="${name}"]`);

async function expectText(locator, expected) {
  await locator.waitFor();
  const deadline = Date.now() + STEP_TIMEOUT;
  let text = '';
  while (Date.now() < deadline) {
    text = (await locator.textContent()) || '';
    if (expected instanceof RegExp ? expected.test(text) : text.trim() === expected) return text;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`expected ${expected} but found ${JSON.stringify(text)}`);
}

async function openAccount(page, number, limit, deposit) {
  await page.goto(`${base}/api/web/`);
  await page.locator('body[data-ready="true"]').waitFor();
  await page.getByLabel('Account number').fill(number);
  await page.getByLabel('Overdraft limit').fill(limit);
  await page.getByLabel('Opening deposit (optional)').fill(deposit);
  await page.getByRole('button', { name: 'Open account' }).click();
  await expectText(page.locator('#account-heading'), `Account ${number}`);
  await expectText(field(page, '#account-state', 'balance'), deposit);
}

async function command(page, formId, values, button) {
  const form = page.locator(formId);
  for (const [label, value] of Object.entries(values)) await form.getByLabel(label).fill(value);
  await form.getByRole('button', { name: button }).click();
}

async function run(page) {
  const suffix = Date.now().toString(36);
  const a = `WEB-A-${suffix}`;
  const b = `WEB-B-${suffix}`;

  step('open an account with an overdraft limit and an opening deposit');
  await openAccount(page, a, '100', '50.00');

  step('deposit');
  await command(page, '#deposit-form', { Amount: '25' }, 'Deposit');
  await expectText(page.locator('#deposit-form .outcome'), /^Done: balance 75\.00/);
  await expectText(field(page, '#account-state', 'balance'), '75.00');

  step('withdraw into the overdraft');
  await command(page, '#withdraw-form', { Amount: '150' }, 'Withdraw');
  await expectText(field(page, '#account-state', 'balance'), '-75.00');
  await expectText(field(page, '#account-state', 'available'), '25.00');
  await expectText(field(page, '#account-state', 'status'), 'open (in overdraft)');

  step('a too-large withdrawal is refused with the problem detail');
  await command(page, '#withdraw-form', { Amount: '500' }, 'Withdraw');
  const refusal = page.locator('#withdraw-form .outcome');
  await expectText(refusal, /insufficient funds: 25\.00 is available/);
  if ((await refusal.getAttribute('role')) !== 'alert') throw new Error('the refusal is not announced as an alert');
  await expectText(field(page, '#account-state', 'balance'), '-75.00');

  step('the as-of slider, moved with the keyboard, shows the earlier balance');
  const slider = page.getByLabel(/Show the account as of sequence/);
  await expectText(field(page, '#asof-state', 'sequence'), '4');
  await slider.focus();
  await page.keyboard.press('Home');
  await page.keyboard.press('ArrowRight');
  await expectText(page.locator('#asof-query'), new RegExp(`asOfSequence=2$`));
  await expectText(field(page, '#asof-state', 'balance'), '50.00');
  await expectText(field(page, '#asof-state', 'sequence'), '2');
  // The current state is unchanged beside it.
  await expectText(field(page, '#account-state', 'balance'), '-75.00');
  if ((await page.locator('#chart svg path.line').count()) !== 1) throw new Error('no balance chart');
  await page.screenshot({ path: path.join(shots, 'account.png'), fullPage: true });

  step('history lists the four events');
  await expectText(page.locator('#history-table tbody tr').nth(3).locator('td').nth(1), 'MoneyWithdrawn');

  step('notifications arrive in the live view');
  await expectText(page.locator('#live-list li').first(), new RegExp(`${a} #\\d+$`));

  step('the accounts list, filtered to accounts in overdraft, shows the account');
  await page.getByRole('link', { name: /All accounts/ }).click();
  await page.getByLabel('Only accounts in overdraft').check();
  const row = page.locator('#accounts-table tbody tr', { hasText: a });
  const deadline = Date.now() + STEP_TIMEOUT;
  // The list is the read model, kept from notifications: wait for the projector to catch up.
  while ((await row.count()) === 0 || !((await row.textContent()) || '').includes('-75.00')) {
    if (Date.now() > deadline) throw new Error(`${a} never appeared in overdraft in the accounts list`);
    await page.waitForTimeout(300);
    await page.getByRole('button', { name: 'Refresh' }).click();
  }
  await page.screenshot({ path: path.join(shots, 'accounts.png'), fullPage: true });

  step('a transfer, and both accounts after it');
  const doc = await (await page.request.get(`${base}/api/openapi.json`)).json();
  const transfers = Object.keys(doc.paths).some((p) => p.startsWith('/api/TransferMoney'));
  let balanceA = '-75.00';
  if (!transfers) throw new Error('the app has no TransferMoney function');
  {
    await openAccount(page, b, '0', '100.00');
    await command(page, '#transfer-form', { 'To account': a, Amount: '30' }, 'Transfer');
    await expectText(page.locator('#transfer-form .outcome'), /completed/);
    await expectText(field(page, '#transfer-accounts', 'from-balance'), '70.00');
    await expectText(field(page, '#transfer-accounts', 'to-balance'), '-45.00');
    await expectText(field(page, '#account-state', 'balance'), '70.00');
    await page.screenshot({ path: path.join(shots, 'transfer.png'), fullPage: true });
    balanceA = '-45.00';
  }

  step('usable on a phone');
  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(`${base}/api/web/#account/${encodeURIComponent(a)}`);
  await expectText(field(page, '#account-state', 'balance'), balanceA);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  if (overflow > 1) throw new Error(`the page is ${overflow}px wider than a phone's screen`);
  await page.screenshot({ path: path.join(shots, 'phone.png'), fullPage: false });
  console.log('PASSED');
}

main().catch((e) => {
  console.error(`FAILED at step "${stepName}": ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
