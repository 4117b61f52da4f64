// The bank's web front end: plain DOM, no library, no build step. It talks to the function
// app's own API (same origin) and shows every refusal's problem+json `detail` as it came.
'use strict';

const API = '/api';
const KEY_STORAGE = 'streamfold-function-key';
const POLL_MS = 2000;
const FINAL_TRANSFER_STATES = ['completed', 'refunded', 'cancelled', 'refused'];

const $ = (selector, root = document) => root.querySelector(selector);

let functionKey = sessionStorage.getItem(KEY_STORAGE) || '';
let routes = new Set();
let current = null; // the account shown
let historyNext = null;
let livePosition = 0;
let asOfTimer = null;

function newId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** A refusal: the problem+json answer, or a description of what else went wrong. */
class Refused extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

async function call(method, path, body, { idempotent = false } = {}) {
  const headers = { accept: 'application/json' };
  if (functionKey) headers['x-functions-key'] = functionKey;
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (idempotent) headers['idempotency-key'] = `"${newId()}"`;
  let response;
  try {
    response = await fetch(API + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new Refused(0, { detail: `the app could not be reached (${e.message})` });
  }
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!response.ok) {
    if (response.status === 401) {
      throw new Refused(401, { detail: 'the app wants a function key: open "Function key" above' });
    }
    throw new Refused(response.status, json || { detail: `HTTP ${response.status}: ${text.slice(0, 200)}` });
  }
  return json;
}

const enc = encodeURIComponent;

function showProblem(target, error) {
  target.textContent = error instanceof Refused ? error.message : String(error);
  target.classList.add('problem');
  target.setAttribute('role', 'alert');
}

function showOutcome(target, text) {
  target.textContent = text;
  target.classList.remove('problem');
  target.setAttribute('role', 'status');
}

function fill(dl, pairs) {
  dl.replaceChildren();
  for (const [name, value, id] of pairs) {
    const dt = document.createElement('dt');
    dt.textContent = name;
    const dd = document.createElement('dd');
    dd.textContent = value;
    if (id) dd.dataset.field = id;
    dl.append(dt, dd);
  }
}

function accountPairs(a) {
  const pairs = [
    ['Balance', a.balance, 'balance'],
    ['Available', a.available, 'available'],
    ['Overdraft limit', a.overdraftLimit, 'overdraftLimit'],
  ];
  if (a.accruedInterest !== undefined) pairs.push(['Accrued interest', a.accruedInterest, 'accruedInterest']);
  pairs.push(['Status', a.status + (a.inOverdraft ? ' (in overdraft)' : ''), 'status']);
  pairs.push(['As of sequence', String(a.sequence), 'sequence']);
  return pairs;
}

// ---- routes the app has (from its OpenAPI document), so the page offers what exists ----

async function loadRoutes() {
  try {
    const doc = await call('GET', '/openapi.json');
    routes = new Set(Object.keys(doc.paths || {}).map((p) => p.replace(/^\/api\//, '').split('/')[0].toLowerCase()));
  } catch {
    routes = new Set();
  }
}
const has = (name) => routes.has(name.toLowerCase());

// ---- accounts list (the read model) ----

async function loadAccounts() {
  const note = $('#accounts-note');
  const body = $('#accounts-table tbody');
  const only = $('#only-overdraft').checked;
  try {
    const rows = [];
    const unreadable = [];
    let continuation = null;
    do {
      const query = new URLSearchParams({ pageSize: '100' });
      if (only) query.set('inOverdraft', 'true');
      if (continuation) query.set('continuation', continuation);
      const page = await call('GET', `/Accounts?${query}`);
      rows.push(...(page.accounts || []));
      unreadable.push(...(page.unreadable || []));
      continuation = page.continuation || null;
    } while (continuation && rows.length < 1000);
    body.replaceChildren(...rows.map(accountRow));
    showOutcome(note, `${rows.length} account(s)${only ? ' in overdraft' : ''}` +
      (unreadable.length ? `; ${unreadable.length} cannot be read` : ''));
  } catch (e) {
    showProblem(note, e);
  }
}

function accountRow(a) {
  const tr = document.createElement('tr');
  if (a.inOverdraft) tr.classList.add('overdrawn');
  const link = document.createElement('a');
  link.href = `#account/${enc(a.accountNumber)}`;
  link.textContent = a.accountNumber;
  const cells = [link, a.status, a.balance, a.available, String(a.sequence)];
  cells.forEach((value, i) => {
    const el = document.createElement(i === 0 ? 'th' : 'td');
    if (i === 0) el.scope = 'row';
    if (i === 2 || i === 3) el.className = 'num';
    el.append(value);
    tr.append(el);
  });
  return tr;
}

// ---- one account ----

async function showAccount(number) {
  current = number;
  $('#home-view').hidden = true;
  $('#account-view').hidden = false;
  $('#account-heading').textContent = `Account ${number}`;
  $('#interest-form').hidden = !has('PayInterest');
  $('#transfer-form').hidden = !has('TransferMoney');
  for (const out of document.querySelectorAll('#account-view .outcome')) out.textContent = '';
  $('#transfer-accounts').replaceChildren();
  await refreshAccount();
  $('#account-heading').focus();
}

async function refreshAccount() {
  const number = current;
  if (!number) return;
  const global = $('#global-problem');
  try {
    const a = await call('GET', `/GetBalance/${enc(number)}`);
    if (number !== current) return;
    global.hidden = true;
    fill($('#account-state'), accountPairs(a));
    await Promise.all([loadSeries(a.sequence), loadHistory(true)]);
  } catch (e) {
    global.hidden = false;
    showProblem(global, e);
  }
}

async function loadSeries(version) {
  const series = await call('GET', `/BalanceSeries/${enc(current)}`);
  drawChart(series);
  const slider = $('#asof');
  const atEnd = Number(slider.value) >= Number(slider.max) || Number(slider.max) <= 1;
  slider.max = String(Math.max(version, 1));
  if (atEnd || Number(slider.value) > version) slider.value = String(version);
  await showAsOf();
}

function drawChart(series) {
  const points = series.points || [];
  const chart = $('#chart');
  const width = 600;
  const height = 200;
  const pad = 8;
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  svg.setAttribute('preserveAspectRatio', 'none');
  svg.setAttribute('role', 'img');
  const values = points.map((p) => Number(p.balance));
  const lo = Math.min(0, ...values);
  const hi = Math.max(0, ...values);
  const span = hi - lo || 1;
  const last = Math.max(series.version || 1, 1);
  const x = (seq) => pad + ((seq - 1) / Math.max(last - 1, 1)) * (width - 2 * pad);
  const y = (v) => height - pad - ((v - lo) / span) * (height - 2 * pad);
  const zero = document.createElementNS(ns, 'line');
  zero.setAttribute('x1', pad);
  zero.setAttribute('x2', width - pad);
  zero.setAttribute('y1', y(0));
  zero.setAttribute('y2', y(0));
  zero.setAttribute('class', 'zero');
  svg.append(zero);
  // A step line: the balance holds from one event to the next.
  let d = '';
  points.forEach((p, i) => {
    const px = x(p.sequence);
    const py = y(Number(p.balance));
    d += i === 0 ? `M${px},${py}` : `H${px}V${py}`;
  });
  if (points.length) d += `H${width - pad}`;
  const path = document.createElementNS(ns, 'path');
  path.setAttribute('d', d);
  path.setAttribute('class', 'line');
  svg.append(path);
  const marker = document.createElementNS(ns, 'line');
  marker.setAttribute('id', 'chart-marker');
  marker.setAttribute('y1', pad);
  marker.setAttribute('y2', height - pad);
  marker.setAttribute('class', 'marker');
  svg.append(marker);
  const title = document.createElementNS(ns, 'title');
  const lowest = points.length ? Math.min(...values).toFixed(2) : '0.00';
  const highest = points.length ? Math.max(...values).toFixed(2) : '0.00';
  title.textContent = `Balance after each of ${last} events: lowest ${lowest}, highest ${highest}`;
  svg.prepend(title);
  chart.replaceChildren(svg);
  chart.dataset.first = String(pad);
  chart.dataset.scale = String((width - 2 * pad) / Math.max(last - 1, 1));
  $('#chart-caption').textContent = `Balance after each event (sequence 1 to ${last})` +
    (series.sampled ? ', sampled' : '') + `; from ${lowest} to ${highest}.`;
}

function moveMarker(seq) {
  const marker = document.getElementById('chart-marker');
  const chart = $('#chart');
  if (!marker) return;
  const px = Number(chart.dataset.first) + (seq - 1) * Number(chart.dataset.scale);
  marker.setAttribute('x1', px);
  marker.setAttribute('x2', px);
}

async function showAsOf() {
  const seq = Number($('#asof').value);
  $('#asof-value').textContent = String(seq);
  moveMarker(seq);
  const path = `/GetBalance/${enc(current)}?asOfSequence=${seq}`;
  $('#asof-query').textContent = `GET ${API}${path}`;
  const dl = $('#asof-state');
  try {
    const a = await call('GET', path);
    if (Number($('#asof').value) !== seq) return; // the slider moved on
    fill(dl, accountPairs(a));
    dl.classList.remove('problem');
  } catch (e) {
    const p = document.createElement('p');
    dl.replaceChildren(p);
    showProblem(p, e);
  }
}

async function loadHistory(fresh) {
  const body = $('#history-table tbody');
  const from = fresh ? 1 : historyNext;
  if (!from) return;
  const page = await call('GET', `/GetAccountHistory/${enc(current)}?fromSequence=${from}&pageSize=100`);
  const rows = (page.events || []).map((e) => {
    const tr = document.createElement('tr');
    const cells = [String(e.sequence), e.eventType, JSON.stringify(e.data), (e.metadata && e.metadata.commentary) || '', e.timestamp];
    cells.forEach((v, i) => {
      const td = document.createElement('td');
      if (i === 0) td.className = 'num';
      if (i === 2) td.className = 'data';
      td.textContent = v;
      tr.append(td);
    });
    return tr;
  });
  if (fresh) body.replaceChildren(...rows);
  else body.append(...rows);
  historyNext = page.nextFromSequence || null;
  $('#history-more').hidden = !historyNext;
}

// ---- commands ----

function amountOf(form, name) {
  const v = form.elements[name].value.trim();
  return v === '' ? undefined : v;
}

function commentaryOf(form) {
  const c = form.elements.commentary;
  return c && c.value.trim() ? c.value.trim() : undefined;
}

async function runCommand(form) {
  const out = $('.outcome', form);
  const command = form.dataset.command;
  let body;
  switch (command) {
    case 'Deposit':
    case 'Withdraw':
      body = { amount: amountOf(form, 'amount'), commentary: commentaryOf(form) };
      break;
    case 'SetOverdraftLimit':
      body = { limit: amountOf(form, 'limit') };
      break;
    default:
      body = {};
  }
  try {
    const a = (await call('POST', `/${command}/${enc(current)}`, body, { idempotent: true })) || {};
    const parts = [];
    if (a.paid !== undefined) parts.push(`paid ${a.paid}`);
    if (a.overdraftExtended) parts.push(`overdraft limit raised to ${a.overdraftLimit}`);
    if (a.balance !== undefined) parts.push(`balance ${a.balance}`);
    if (a.available !== undefined) parts.push(`available ${a.available}`);
    const seq = a.sequence !== undefined ? ` (sequence ${a.sequence})` : '';
    showOutcome(out, `Done${parts.length ? ': ' + parts.join(', ') : ''}${seq}.`);
    form.reset();
    await refreshAccount();
  } catch (e) {
    showProblem(out, e);
  }
}

async function runTransfer(form) {
  const out = $('.outcome', form);
  const to = form.elements.to.value.trim();
  const id = newId();
  const body = { from: current, to, amount: amountOf(form, 'amount'), commentary: commentaryOf(form) };
  try {
    await call('POST', `/TransferMoney/${enc(id)}`, body);
    showOutcome(out, `Transfer ${id} requested…`);
    let state = null;
    for (let i = 0; i < 60; i++) {
      state = await call('GET', `/GetTransferState/${enc(id)}`);
      if (FINAL_TRANSFER_STATES.includes(state.state)) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    const name = state ? state.state : 'unknown';
    const detail = state && state.detail ? `: ${state.detail}` : '';
    if (name === 'completed') showOutcome(out, `Transfer ${id} completed.`);
    else showProblem(out, new Refused(0, { detail: `Transfer ${id} is ${name}${detail}` }));
    const [mine, theirs] = await Promise.all([
      call('GET', `/GetBalance/${enc(current)}`),
      call('GET', `/GetBalance/${enc(to)}`).catch(() => null),
    ]);
    const pairs = [[`${current} balance`, mine.balance, 'from-balance']];
    if (theirs) pairs.push([`${to} balance`, theirs.balance, 'to-balance']);
    fill($('#transfer-accounts'), pairs);
    await refreshAccount();
  } catch (e) {
    showProblem(out, e);
  }
}

async function openAccount(form) {
  const out = $('.outcome', form);
  const number = form.elements.accountNumber.value.trim();
  const limit = amountOf(form, 'overdraftLimit');
  const deposit = amountOf(form, 'openingDeposit');
  const body = { commentary: commentaryOf(form) };
  if (limit !== undefined) body.overdraftLimit = limit;
  try {
    await call('POST', `/OpenAccount/${enc(number)}`, body, { idempotent: true });
    if (deposit !== undefined) {
      await call('POST', `/Deposit/${enc(number)}`, { amount: deposit, commentary: 'Opening deposit' }, { idempotent: true });
    }
    showOutcome(out, `Account ${number} opened.`);
    form.reset();
    location.hash = `#account/${enc(number)}`;
  } catch (e) {
    showProblem(out, e);
  }
}

// ---- live notifications ----

async function pollNotifications() {
  try {
    const page = await call('GET', `/notifications/recent?after=${livePosition}`);
    livePosition = page.lastPosition;
    const list = $('#live-list');
    let touchesCurrent = false;
    for (const n of page.notifications) {
      const li = document.createElement('li');
      const time = document.createElement('time');
      time.dateTime = n.time;
      time.textContent = n.time.replace('T', ' ').replace(/\.\d+/, '');
      li.append(time, ` ${n.eventType} — ${n.domain}/${n.entity}/${n.instance} #${n.sequenceNumber}`);
      list.prepend(li);
      if (n.domain === 'Bank' && n.entity === 'Account' && n.instance === current) touchesCurrent = true;
    }
    while (list.children.length > 50) list.lastElementChild.remove();
    if (page.missed) $('#live-note').textContent = `${page.missed} notification(s) arrived faster than shown.`;
    if (touchesCurrent && !document.activeElement.closest('form')) await refreshAccount();
  } catch (e) {
    $('#live-note').textContent = `Notifications unavailable: ${e.message}`;
  } finally {
    setTimeout(pollNotifications, POLL_MS);
  }
}

// ---- navigation ----

async function route() {
  const m = location.hash.match(/^#account\/(.+)$/);
  if (m) {
    await showAccount(decodeURIComponent(m[1]));
  } else {
    current = null;
    $('#account-view').hidden = true;
    $('#home-view').hidden = false;
    await loadAccounts();
  }
}

document.addEventListener('DOMContentLoaded', async () => {
  $('#key').value = functionKey;
  $('#key-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    functionKey = $('#key').value.trim();
    sessionStorage.setItem(KEY_STORAGE, functionKey);
    $('#key-panel').open = false;
    route();
  });
  $('#accounts-filter').addEventListener('submit', (ev) => {
    ev.preventDefault();
    loadAccounts();
  });
  $('#only-overdraft').addEventListener('change', loadAccounts);
  $('#open-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    openAccount(ev.target);
  });
  for (const form of document.querySelectorAll('form[data-command]')) {
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      runCommand(form);
    });
  }
  $('#transfer-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    runTransfer(ev.target);
  });
  $('#asof').addEventListener('input', () => {
    $('#asof-value').textContent = $('#asof').value;
    moveMarker(Number($('#asof').value));
    clearTimeout(asOfTimer);
    asOfTimer = setTimeout(showAsOf, 120);
  });
  $('#history-more').addEventListener('click', () => loadHistory(false));
  window.addEventListener('hashchange', route);
  await loadRoutes();
  await route();
  document.body.dataset.ready = 'true';
  pollNotifications();
});
