// XCore dashboard: plain JavaScript, no build step, no dependency.
//
// It uses only the public HTTP API (/api/v1/..., /health, /metrics) with the token the
// operator signs in with. The token lives in this tab's sessionStorage and goes out as
// `Authorization: Bearer`, never in a URL and never as a cookie (so no other site can
// make the browser act with it). Markup is built with DOM calls and textContent only:
// nothing the API returns is ever parsed as HTML. Live updates come from the
// server-sent events of GET /api/v1/stream, read with fetch() (EventSource cannot send
// an Authorization header); when the stream is down the page polls.
'use strict';

const TOKEN_KEY = 'xcore.token';
const SVG = 'http://www.w3.org/2000/svg';
const MAX_EMITS = 200;
const MAX_LOGS = 500;
const SPARK_POINTS = 60;
const POLL_LIVE_MS = 10000; // counters change without events: refresh them anyway
const POLL_FALLBACK_MS = 3000;

const S = {
  token: null,
  who: null,
  route: { page: 'signin', arg: null },
  plugins: [],
  records: [],
  health: null,
  hooks: null,
  hookMetrics: null,
  jobs: null,
  audit: null,
  pluginAudit: [],
  hist: {},
  prevHist: null,
  spark: {},
  prevTotals: null,
  rate: { cps: null, errorRate: null },
  emits: [],
  logs: [],
  restarts: [],
  live: 'off',
  liveDetail: '',
  stream: null,
  retryAt: 0,
  retryDelay: 2000,
  lastRefresh: 0,
  refreshing: false,
  refreshQueued: false,
  table: { key: 'name', dir: 1, filter: '' },
};

// ---- DOM helpers -------------------------------------------------------------------

function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  for (const kid of kids.flat(Infinity)) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : String(kid));
  }
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'on') {
      for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    } else if (k === 'text') {
      el.textContent = String(v);
    } else {
      el.setAttribute(k, v === true ? '' : String(v));
    }
  }
}

function svg(tag, attrs) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  return el;
}

function $(id) {
  return document.getElementById(id);
}

function replace(el, ...kids) {
  if (el) el.replaceChildren(...kids.flat(Infinity).filter((k) => k !== null && k !== undefined && k !== false));
}

function fmtNum(n) {
  return n === null || n === undefined ? '–' : Number(n).toLocaleString('en');
}

function fmtMs(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return '–';
  const ms = seconds * 1000;
  return ms < 10 ? ms.toFixed(2) + ' ms' : ms < 100 ? ms.toFixed(1) + ' ms' : Math.round(ms) + ' ms';
}

function fmtDuration(s) {
  if (s === null || s === undefined) return '–';
  s = Math.floor(s);
  const d = Math.floor(s / 86400), hr = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  if (d) return `${d} d ${hr} h`;
  if (hr) return `${hr} h ${m} min`;
  if (m) return `${m} min ${s % 60} s`;
  return `${s} s`;
}

function badge(state) {
  return h('span', { class: `badge s-${state}`, text: state });
}

function pushBounded(list, item, max) {
  list.push(item);
  if (list.length > max) list.splice(0, list.length - max);
}

// ---- The API -----------------------------------------------------------------------

class Problem extends Error {
  constructor(status, body, text) {
    const code = body && body.code ? body.code : `http_${status}`;
    const detail = body && body.detail ? body.detail : (text || '').slice(0, 300);
    super(`${status} ${code}: ${detail}`);
    this.status = status;
    this.code = code;
    this.detail = detail;
  }
}

async function api(method, path, token) {
  const headers = { Accept: 'application/json' };
  const t = token === undefined ? S.token : token;
  if (t) headers.Authorization = `Bearer ${t}`;
  let resp;
  try {
    resp = await fetch(path, { method, headers, cache: 'no-store', credentials: 'omit' });
  } catch (e) {
    throw new Problem(0, { code: 'unreachable', detail: `the host did not answer ${method} ${path}` });
  }
  const text = await resp.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch (e) {
    body = null;
  }
  if (!resp.ok) {
    const p = new Problem(resp.status, body, text);
    if (resp.status === 401 && t === S.token && S.token) {
      signOut('Your token is no longer accepted: ' + p.detail);
    }
    throw p;
  }
  return body === null ? text : body;
}

async function metricsText() {
  const resp = await fetch('/metrics', { cache: 'no-store', credentials: 'omit' });
  return resp.ok ? resp.text() : '';
}

// The per-plugin latency histogram of /metrics: { plugin: [[le, cumulative count], ...] }.
function parseHistograms(text) {
  const out = {};
  for (const line of text.split('\n')) {
    if (!line.startsWith('xcore_plugin_call_duration_seconds_bucket{')) continue;
    const m = /^[^{]+\{([^}]*)\}\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    for (const p of m[1].matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[p[1]] = p[2];
    if (!labels.plugin || labels.le === undefined) continue;
    const le = labels.le === '+Inf' ? Infinity : Number(labels.le);
    (out[labels.plugin] = out[labels.plugin] || []).push([le, Number(m[2])]);
  }
  for (const k of Object.keys(out)) out[k].sort((a, b) => a[0] - b[0]);
  return out;
}

// Prometheus' histogram_quantile: linear inside the bucket holding the rank.
function quantile(q, buckets) {
  if (!buckets || !buckets.length) return null;
  const total = buckets[buckets.length - 1][1];
  if (!total) return null;
  const rank = q * total;
  let prevLe = 0, prevCount = 0;
  for (const [le, count] of buckets) {
    if (count >= rank) {
      if (le === Infinity) return prevLe;
      return prevLe + (le - prevLe) * ((rank - prevCount) / Math.max(count - prevCount, 1e-9));
    }
    prevLe = le;
    prevCount = count;
  }
  return prevLe;
}

function diffBuckets(now, before) {
  if (!before) return null;
  return now.map(([le, c], i) => [le, c - ((before[i] && before[i][1]) || 0)]);
}

// ---- Loading -----------------------------------------------------------------------

async function loadPlugins() {
  const [list, text] = await Promise.all([api('GET', '/api/v1/plugins'), metricsText()]);
  S.plugins = list.plugins || [];
  const hist = parseHistograms(text);
  for (const [name, buckets] of Object.entries(hist)) {
    const window = S.prevHist ? diffBuckets(buckets, S.prevHist[name]) : null;
    const p50 = window ? quantile(0.5, window) : null;
    const series = (S.spark[name] = S.spark[name] || []);
    pushBounded(series, p50, SPARK_POINTS);
  }
  S.prevHist = hist;
  S.hist = hist;
  const now = Date.now();
  const totals = S.plugins.reduce(
    (t, p) => ({ calls: t.calls + (p.counters.calls || 0), errors: t.errors + (p.counters.errors || 0) }),
    { calls: 0, errors: 0 },
  );
  if (S.prevTotals && now > S.prevTotals.at) {
    const dc = Math.max(totals.calls - S.prevTotals.calls, 0);
    const de = Math.max(totals.errors - S.prevTotals.errors, 0);
    S.rate.cps = dc / ((now - S.prevTotals.at) / 1000);
    S.rate.errorRate = dc ? de / dc : 0;
  }
  S.prevTotals = { ...totals, at: now };
}

async function loadForPage() {
  const page = S.route.page;
  if (page === 'overview') {
    const [health] = await Promise.all([api('GET', '/health'), loadPlugins()]);
    S.health = health;
  } else if (page === 'plugins') {
    await loadPlugins();
    try {
      S.records = (await api('GET', '/api/v1/state/plugins')).plugins || [];
    } catch (e) {
      S.records = []; // a host without a database remembers nothing; the table still shows
    }
  } else if (page === 'plugin') {
    const name = S.route.arg;
    const [, hooks, jobs, audit] = await Promise.all([
      loadPlugins(),
      api('GET', '/api/v1/hooks'),
      api('GET', '/api/v1/jobs').catch(() => ({ jobs: [] })),
      api('GET', `/api/v1/audit?target=${encodeURIComponent(name)}&limit=20`).catch(() => ({ entries: [] })),
    ]);
    S.hooks = hooks;
    S.jobs = jobs.jobs || [];
    S.pluginAudit = audit.entries || [];
    try {
      S.records = (await api('GET', '/api/v1/state/plugins')).plugins || [];
    } catch (e) {
      S.records = [];
    }
  } else if (page === 'jobs') {
    S.jobs = (await api('GET', '/api/v1/jobs')).jobs || [];
  } else if (page === 'events') {
    const [hooks, metrics] = await Promise.all([api('GET', '/api/v1/hooks'), api('GET', '/api/v1/hooks/metrics')]);
    S.hooks = hooks;
    S.hookMetrics = metrics.events || [];
  } else if (page === 'audit') {
    S.audit = (await api('GET', '/api/v1/audit?limit=200')).entries || [];
  }
}

async function refresh() {
  if (!S.token || S.route.page === 'signin') return;
  if (S.refreshing) {
    S.refreshQueued = true;
    return;
  }
  S.refreshing = true;
  S.lastRefresh = Date.now();
  try {
    await loadForPage();
    pageError('');
    update();
  } catch (e) {
    if (S.token) pageError(e.message);
  } finally {
    S.refreshing = false;
    if (S.refreshQueued) {
      S.refreshQueued = false;
      refresh();
    }
  }
}

let refreshTimer = null;
function scheduleRefresh() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refresh, 250);
}

function pageError(text) {
  const el = $('page-error');
  if (el) el.textContent = text;
}

// ---- The event stream --------------------------------------------------------------

function setLive(state, detail) {
  S.live = state;
  S.liveDetail = detail || '';
  const el = $('live');
  if (!el) return;
  const label = { live: 'Live', polling: 'Polling', connecting: 'Connecting…', off: '' }[state];
  el.textContent = label;
  el.title = S.liveDetail;
  el.setAttribute('aria-label', S.liveDetail ? `${label}: ${S.liveDetail}` : label);
}

async function openStream() {
  if (S.stream || !S.token) return;
  const ctrl = new AbortController();
  S.stream = ctrl;
  setLive('connecting');
  try {
    const resp = await fetch('/api/v1/stream', {
      headers: { Authorization: `Bearer ${S.token}`, Accept: 'text/event-stream' },
      cache: 'no-store',
      credentials: 'omit',
      signal: ctrl.signal,
    });
    if (!resp.ok || !resp.body) {
      let detail = `HTTP ${resp.status}`;
      try {
        const body = await resp.json();
        detail = `${resp.status} ${body.code}: ${body.detail}`;
      } catch (e) {
        /* not problem+json */
      }
      throw new Error(detail);
    }
    S.retryDelay = 2000;
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let at;
      while ((at = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, at);
        buf = buf.slice(at + 2);
        sseBlock(block);
      }
      if (buf.length > 1 << 20) throw new Error('an event larger than 1 MiB');
    }
    throw new Error('the stream ended');
  } catch (e) {
    if (S.stream !== ctrl) return; // signed out or replaced: nothing to report
    S.stream = null;
    S.retryAt = Date.now() + S.retryDelay;
    S.retryDelay = Math.min(S.retryDelay * 2, 60000);
    setLive('polling', `live events unavailable (${e.message}); polling, retrying the stream`);
  }
}

function closeStream() {
  const s = S.stream;
  S.stream = null;
  if (s) s.abort();
  setLive('off');
}

function sseBlock(block) {
  let type = 'message';
  const data = [];
  for (const line of block.split('\n')) {
    if (line.startsWith(':')) continue;
    const i = line.indexOf(':');
    const field = i < 0 ? line : line.slice(0, i);
    const value = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
    if (field === 'event') type = value;
    else if (field === 'data') data.push(value);
  }
  if (!data.length) return;
  let payload;
  try {
    payload = JSON.parse(data.join('\n'));
  } catch (e) {
    return;
  }
  onStreamEvent(type, payload);
}

function onStreamEvent(type, data) {
  if (type === 'hello') {
    setLive('live', `events stream open (${data.max_streams} streams allowed)`);
    return;
  }
  if (type === 'lagged') {
    scheduleRefresh();
    return;
  }
  if (type === 'log') {
    pushBounded(S.logs, data, MAX_LOGS);
  } else {
    pushBounded(S.emits, { type, ...data }, MAX_EMITS);
    if (type === 'restart') pushBounded(S.restarts, data, MAX_EMITS);
    if (type === 'state' || type === 'restart') scheduleRefresh();
  }
  if (S.route.page === 'events' || S.route.page === 'plugin' || S.route.page === 'overview') scheduleUpdate();
}

// A burst of events redraws the page once, not once per event.
let updateTimer = null;
function scheduleUpdate() {
  if (updateTimer) return;
  updateTimer = setTimeout(() => {
    updateTimer = null;
    update();
  }, 200);
}

// ---- Confirmation and actions ------------------------------------------------------

function confirmAction(title, text, okLabel) {
  const dlg = $('confirm');
  const opener = document.activeElement;
  $('confirm-title').textContent = title;
  $('confirm-text').textContent = text;
  $('confirm-ok').textContent = okLabel;
  return new Promise((resolve) => {
    const done = (ok) => {
      $('confirm-ok').removeEventListener('click', yes);
      $('confirm-cancel').removeEventListener('click', no);
      dlg.removeEventListener('cancel', no);
      if (dlg.open) dlg.close();
      if (opener && opener.focus) opener.focus();
      resolve(ok);
    };
    const yes = () => done(true);
    const no = (e) => {
      if (e) e.preventDefault();
      done(false);
    };
    $('confirm-ok').addEventListener('click', yes);
    $('confirm-cancel').addEventListener('click', no);
    dlg.addEventListener('cancel', no);
    dlg.showModal();
    $('confirm-cancel').focus();
  });
}

async function act({ title, text, ok, path, done }) {
  if (!(await confirmAction(title, text, ok))) return;
  const problem = $('action-error');
  const notice = $('action-notice');
  if (problem) problem.textContent = '';
  if (notice) notice.textContent = '';
  for (const b of document.querySelectorAll('button[data-action]')) b.disabled = true;
  try {
    const result = await api('POST', path);
    if (notice) notice.textContent = done(result);
    await refresh();
  } catch (e) {
    if (problem) problem.textContent = e.message;
  } finally {
    for (const b of document.querySelectorAll('button[data-action]')) b.disabled = false;
  }
}

function roleNote(needed) {
  const order = { reader: 0, operator: 1, admin: 2 };
  return S.who && order[S.who.role] < order[needed] ? ` (needs the ${needed} role; you are ${S.who.role})` : '';
}

// ---- Pages -------------------------------------------------------------------------

const PAGES = {
  signin: { title: 'Sign in', mount: mountSignin, update() {} },
  overview: { title: 'Overview', mount: mountOverview, update: updateOverview },
  plugins: { title: 'Plugins', mount: mountPlugins, update: updatePlugins },
  plugin: { title: 'Plugin', mount: mountPlugin, update: updatePlugin },
  jobs: { title: 'Jobs', mount: mountJobs, update: updateJobs },
  events: { title: 'Events and hooks', mount: mountEvents, update: updateEvents },
  audit: { title: 'Audit log', mount: mountAudit, update: updateAudit },
};

function pageShell(title, ...rest) {
  return [
    h('h1', { id: 'page-title', tabindex: '-1', text: title }),
    h('div', { id: 'page-error', class: 'problem', role: 'alert' }),
    ...rest.filter((x) => x !== null && x !== undefined && x !== false),
  ];
}

function mountSignin(main, message) {
  const input = h('input', {
    id: 'token',
    name: 'token',
    type: 'password',
    autocomplete: 'off',
    spellcheck: 'false',
    required: true,
    'aria-describedby': 'token-hint',
  });
  const error = h('div', { id: 'signin-error', class: 'problem', role: 'alert', text: message || '' });
  const form = h(
    'form',
    {
      class: 'signin',
      'aria-labelledby': 'page-title',
      on: {
        submit: async (e) => {
          e.preventDefault();
          error.textContent = '';
          const token = input.value.trim();
          if (!token) {
            error.textContent = 'Enter a token.';
            return;
          }
          try {
            const who = await api('GET', '/api/v1/whoami', token);
            sessionStorage.setItem(TOKEN_KEY, token);
            S.token = token;
            S.who = who;
            input.value = '';
            startSession();
            if (!location.hash || location.hash === '#/signin') location.hash = '#/overview';
            else route();
          } catch (err) {
            error.textContent = err.message;
          }
        },
      },
    },
    h('h1', { id: 'page-title', tabindex: '-1', text: 'Sign in to XCore' }),
    error,
    h('div', { class: 'field' }, h('label', { for: 'token', text: 'Token' }), input),
    h(
      'p',
      { id: 'token-hint', class: 'hint' },
      'The admin token (server.admin_token or runtime/admin.token) or a named token from ',
      h('code', { text: 'xcore token create NAME --role reader|operator|admin' }),
      '. It is kept in this tab only (sessionStorage) and sent as a bearer header.',
    ),
    h('button', { type: 'submit', id: 'signin-submit', class: 'primary', text: 'Sign in' }),
  );
  main.append(form);
  input.focus();
}

function mountOverview(main) {
  main.append(
    ...pageShell(
      'Overview',
      h('section', { 'aria-labelledby': 'h-host' }, h('h2', { id: 'h-host', text: 'Host' }), h('div', { id: 'host-cards', class: 'cards' })),
      h('section', { 'aria-labelledby': 'h-states' }, h('h2', { id: 'h-states', text: 'Plugins by state' }), h('div', { id: 'state-cards', class: 'cards' })),
      h('section', { 'aria-labelledby': 'h-recent' }, h('h2', { id: 'h-recent', text: 'Recent events' }), h('ul', { id: 'recent', class: 'log' })),
    ),
  );
}

function card(key, value, id) {
  return h('div', { class: 'card', id }, h('div', { class: 'n', text: value }), h('div', { class: 'k', text: key }));
}

function updateOverview() {
  const hl = S.health;
  if (!hl) return;
  replace(
    $('host-cards'),
    card('version', hl.version || '–', 'c-version'),
    card('uptime', fmtDuration(hl.uptime_seconds), 'c-uptime'),
    card('plugins', fmtNum(hl.plugins.total), 'c-total'),
    card('calls per second', S.rate.cps === null ? '–' : S.rate.cps.toFixed(1), 'c-cps'),
    card('error rate', S.rate.errorRate === null ? '–' : (S.rate.errorRate * 100).toFixed(1) + ' %', 'c-errors'),
  );
  const states = Object.entries(hl.plugins.by_state || {});
  replace(
    $('state-cards'),
    states.length ? states.map(([st, n]) => card(st, fmtNum(n), `c-state-${st}`)) : h('p', { class: 'muted', text: 'No plugin is known.' }),
  );
  const recent = S.emits.slice(-10).reverse();
  replace(
    $('recent'),
    recent.length
      ? recent.map((e) => h('li', {}, `${e.at} `, h('strong', { text: e.event }), ` ${summarise(e.payload)}`))
      : h('li', { class: 'muted', text: 'Nothing has happened since this page opened.' }),
  );
}

function summarise(payload) {
  const s = JSON.stringify(payload);
  return s && s.length > 160 ? s.slice(0, 160) + '…' : s || '';
}

const COLUMNS = [
  { key: 'name', label: 'Name', get: (p) => p.name },
  { key: 'version', label: 'Version', get: (p) => p.version || '' },
  { key: 'tier', label: 'Tier', get: (p) => p.execution_mode || '' },
  { key: 'state', label: 'State', get: (p) => p.state },
  { key: 'generation', label: 'Gen.', get: (p) => p.generation, num: true },
  { key: 'calls', label: 'Calls', get: (p) => p.counters.calls, num: true },
  { key: 'errors', label: 'Errors', get: (p) => p.counters.errors, num: true },
  { key: 'p50', label: 'p50', get: (p) => quantile(0.5, S.hist[p.name]), num: true, fmt: fmtMs },
  { key: 'p99', label: 'p99', get: (p) => quantile(0.99, S.hist[p.name]), num: true, fmt: fmtMs },
  { key: 'restarts', label: 'Restarts', get: (p) => p.restarts, num: true, fmt: (_, p) => restartsText(p) },
  { key: 'last_error', label: 'Last error', get: (p) => p.last_error || '', narrow: true },
  { key: 'uptime', label: 'Uptime', get: (p) => p.uptime_seconds, num: true, fmt: fmtDuration },
];

// Restarts in all, and the failures in the policy's window against its intensity.
function restartsText(p) {
  const pol = p.restart_policy;
  if (!pol) return String(p.restarts);
  const now = p.restarts_in_window === null || p.restarts_in_window === undefined ? '?' : p.restarts_in_window;
  return `${p.restarts} (${now} of ${pol.max_restarts} in ${pol.within_seconds} s)`;
}

function mountPlugins(main) {
  const filter = h('input', {
    id: 'filter',
    type: 'search',
    value: S.table.filter,
    placeholder: 'name, state, tier…',
    on: {
      input: (e) => setFilter(e.target.value),
      change: (e) => setFilter(e.target.value),
    },
  });
  const head = h(
    'tr',
    {},
    COLUMNS.map((c) =>
      h(
        'th',
        { scope: 'col', class: [c.num ? 'num' : '', c.narrow ? 'hide-narrow' : ''].join(' ').trim() || null, 'data-col': c.key },
        h('button', {
          type: 'button',
          text: c.label,
          'aria-label': `${c.label}: sort`,
          on: {
            click: () => {
              S.table.dir = S.table.key === c.key ? -S.table.dir : 1;
              S.table.key = c.key;
              updatePlugins();
            },
          },
        }),
      ),
    ),
  );
  main.append(
    ...pageShell(
      'Plugins',
      h('div', { class: 'toolbar' }, h('label', { for: 'filter', text: 'Filter' }), filter, h('span', { id: 'shown', class: 'muted', role: 'status' })),
      h(
        'div',
        { class: 'scroll' },
        h('table', { id: 'plugins-table' }, h('caption', { class: 'muted', text: 'Select a column header to sort.' }), h('thead', {}, head), h('tbody', { id: 'plugins-body' })),
      ),
      h('section', { 'aria-labelledby': 'h-unloaded' }, h('h2', { id: 'h-unloaded', text: 'Known but not loaded' }), h('div', { id: 'unloaded' })),
    ),
  );
}

function setFilter(value) {
  S.table.filter = value;
  updatePlugins();
}

function updatePlugins() {
  const body = $('plugins-body');
  if (!body) return;
  const f = S.table.filter.trim().toLowerCase();
  const col = COLUMNS.find((c) => c.key === S.table.key) || COLUMNS[0];
  const rows = S.plugins
    .filter((p) => !f || [p.name, p.state, p.execution_mode, p.version].some((v) => String(v || '').toLowerCase().includes(f)))
    .sort((a, b) => {
      const x = col.get(a), y = col.get(b);
      const cmp = typeof x === 'number' || typeof y === 'number' ? (x ?? -1) - (y ?? -1) : String(x).localeCompare(String(y));
      return cmp * S.table.dir || a.name.localeCompare(b.name);
    });
  for (const th of document.querySelectorAll('#plugins-table th')) {
    const sorted = th.dataset.col === S.table.key;
    if (sorted) th.setAttribute('aria-sort', S.table.dir > 0 ? 'ascending' : 'descending');
    else th.removeAttribute('aria-sort');
  }
  replace(
    body,
    rows.map((p) =>
      h(
        'tr',
        { 'data-plugin': p.name },
        COLUMNS.map((c) => {
          const v = c.get(p);
          let content = c.fmt ? c.fmt(v, p) : c.num ? fmtNum(v) : v;
          if (c.key === 'name') content = h('a', { href: `#/plugin/${encodeURIComponent(p.name)}`, text: p.name });
          if (c.key === 'state') content = badge(p.state);
          const cls = [c.num ? 'num' : '', c.key === 'last_error' ? 'err' : '', c.narrow ? 'hide-narrow' : ''].join(' ').trim();
          return h('td', { 'data-col': c.key, class: cls || null }, content);
        }),
      ),
    ),
  );
  $('shown').textContent = `${rows.length} of ${S.plugins.length} shown`;
  const loaded = new Set(S.plugins.map((p) => p.name));
  const others = S.records.filter((r) => !loaded.has(r.name));
  replace(
    $('unloaded'),
    others.length
      ? h(
          'ul',
          {},
          others.map((r) =>
            h('li', {}, h('a', { href: `#/plugin/${encodeURIComponent(r.name)}`, text: r.name }), ` ${r.version || ''} ${r.enabled === false ? '(disabled)' : ''}`),
          ),
        )
      : h('p', { class: 'muted', text: 'Every plugin the host remembers is loaded.' }),
  );
}

function mountPlugin(main) {
  const name = S.route.arg;
  const button = (op, label, needed, text, cls) =>
    h('button', {
      type: 'button',
      id: `act-${op}`,
      'data-action': op,
      class: cls || null,
      text: label,
      title: `${label} ${name}${roleNote(needed)}`,
      on: {
        click: () =>
          act({
            title: `${label} ${name}?`,
            text: text + roleNote(needed),
            ok: label,
            path: `/api/v1/plugins/${encodeURIComponent(name)}/${op}`,
            done: (r) => `${label}: done. ${name} is ${r && r.state ? r.state : 'updated'}${r && r.generation ? `, generation ${r.generation}` : ''}.`,
          }),
      },
    });
  main.append(
    ...pageShell(
      name,
      h(
        'div',
        { class: 'toolbar', role: 'group', 'aria-label': 'Actions' },
        button('reload', 'Reload', 'operator', 'A new instance loads beside the current one and takes over.'),
        button('reset', 'Reset', 'operator', 'A failed plugin is brought back.'),
        button('disable', 'Disable', 'operator', 'The plugin is unloaded and stays unloaded, across restarts too.', 'danger'),
        button('enable', 'Enable', 'operator', 'The plugin is enabled and loaded.'),
        button('unload', 'Unload', 'admin', 'The plugin is drained and unloaded.', 'danger'),
        button('load', 'Load', 'admin', 'The plugin is loaded from its folder.'),
      ),
      S.who && S.who.role === 'reader'
        ? h('p', { id: 'reader-note', class: 'hint', text: 'You are signed in with a reader token: you see everything, and the host refuses these actions (they need an operator or admin token).' })
        : null,
      h('div', { id: 'action-error', class: 'problem', role: 'alert' }),
      h('div', { id: 'action-notice', class: 'notice', role: 'status' }),
      h('div', { id: 'plugin-body' }),
    ),
  );
}

function kv(pairs) {
  return h('dl', { class: 'kv' }, pairs.filter(Boolean).map(([k, v, id]) => [h('dt', { text: k }), h('dd', { id }, v === null || v === undefined || v === '' ? '–' : v)]));
}

function table(id, heads, rows, empty) {
  if (!rows.length) return h('p', { class: 'muted', text: empty });
  return h(
    'div',
    { class: 'scroll' },
    h('table', { id }, h('thead', {}, h('tr', {}, heads.map((t) => h('th', { scope: 'col', text: t })))), h('tbody', {}, rows.map((r) => h('tr', {}, r.map((c) => h('td', {}, c)))))),
  );
}

function sparkline(values) {
  const pts = values.map((v, i) => [i, v]).filter(([, v]) => v !== null && v !== undefined && isFinite(v));
  const box = svg('svg', { class: 'spark', viewBox: '0 0 100 40', preserveAspectRatio: 'none', role: 'img' });
  if (pts.length < 2) {
    box.setAttribute('aria-label', 'Not enough calls yet for a latency line');
    return box;
  }
  const ys = pts.map(([, v]) => v);
  const min = Math.min(...ys), max = Math.max(...ys);
  const first = pts[0][0], span = Math.max(pts[pts.length - 1][0] - first, 1);
  const x = (i) => (((i - first) / span) * 96 + 2).toFixed(2);
  const y = (v) => (max === min ? 20 : 36 - ((v - min) / (max - min)) * 32).toFixed(2);
  box.setAttribute('aria-label', `p50 latency per refresh: last ${fmtMs(ys[ys.length - 1])}, lowest ${fmtMs(min)}, highest ${fmtMs(max)}`);
  box.append(svg('polyline', { points: pts.map(([i, v]) => `${x(i)},${y(v)}`).join(' ') }));
  return box;
}

function updatePlugin() {
  const name = S.route.arg;
  const body = $('plugin-body');
  if (!body) return;
  const p = S.plugins.find((x) => x.name === name);
  const record = S.records.find((r) => r.name === name);
  const has = (id, yes) => {
    const b = $(id);
    if (b) b.hidden = !yes;
  };
  const down = !p || p.state === 'disabled' || p.state === 'unloaded';
  has('act-reload', !down);
  has('act-reset', !down);
  has('act-unload', !down);
  has('act-disable', !p || p.state !== 'disabled');
  has('act-enable', (p && p.state === 'disabled') || (record && record.enabled === false));
  has('act-load', !p || p.state === 'unloaded');
  if (!p) {
    replace(
      body,
      h('p', { id: 'p-state' }, badge('unloaded'), record ? ` The host remembers version ${record.version}${record.enabled === false ? ', disabled' : ''}.` : ' The host knows no plugin of this name.'),
    );
    return;
  }
  const perms = p.permissions || {};
  const hooks = ((S.hooks && S.hooks.subscriptions) || []).filter((s) => s.owner.startsWith(`plugin:${name}/`) || s.owner === `plugin:${name}`);
  const jobs = (S.jobs || []).filter((j) => (j.target && j.target.plugin === name) || (j.owner && j.owner.plugin && j.owner.plugin.name === name));
  const restarts = S.emits.filter((e) => (e.type === 'restart' || e.type === 'state') && e.payload && e.payload.plugin === name).slice(-20).reverse();
  const logs = S.logs.filter((l) => l.plugin === name || (l.message || '').includes(`'${name}'`)).slice(-50).reverse();
  const limits = p.limits || {};
  replace(
    body,
    h(
      'div',
      { class: 'grid2' },
      h(
        'section',
        { 'aria-labelledby': 'h-summary' },
        h('h2', { id: 'h-summary', text: 'Summary' }),
        kv([
          ['state', badge(p.state), 'p-state'],
          ['version', p.version, 'p-version'],
          ['generation', String(p.generation), 'p-generation'],
          ['tier', p.execution_mode, 'p-tier'],
          ['description', p.description],
          ['author', p.author],
          ['api version', `${p.api_version || '–'} (compiled ${p.compiled_api_version || '–'})`],
          ['requires', (p.requires || []).join(', ')],
          ['uptime', fmtDuration(p.uptime_seconds)],
          ['load time', p.load_time_ms === null || p.load_time_ms === undefined ? '–' : `${p.load_time_ms.toFixed(1)} ms`],
          ['signed by', p.signed_by || 'not signed (or not checked)', 'p-signed'],
          ['last error', p.last_error, 'p-error'],
        ]),
      ),
      h(
        'section',
        { 'aria-labelledby': 'h-latency' },
        h('h2', { id: 'h-latency', text: 'Calls and latency' }),
        kv([
          ['calls', fmtNum(p.counters.calls), 'p-calls'],
          ['errors', fmtNum(p.counters.errors), 'p-errors'],
          ['timeouts', fmtNum(p.counters.timeouts)],
          ['rate limited', fmtNum(p.counters.rate_limited)],
          ['p50 / p99', `${fmtMs(quantile(0.5, S.hist[name]))} / ${fmtMs(quantile(0.99, S.hist[name]))}`],
          ['restarts', restartsText(p)],
        ]),
        h('p', {}, h('span', { class: 'muted', text: 'p50 per refresh: ' }), sparkline(S.spark[name] || [])),
      ),
    ),
    h(
      'div',
      { class: 'grid2' },
      h(
        'section',
        { 'aria-labelledby': 'h-limits' },
        h('h2', { id: 'h-limits', text: 'Limits' }),
        kv([
          ['timeout', `${limits.timeout_ms} ms`],
          ['concurrency', limits.concurrency],
          ['memory', limits.max_memory_mb === undefined ? null : `${limits.max_memory_mb} MB`],
          ['disk', limits.max_disk_mb === undefined ? null : `${limits.max_disk_mb} MB`],
          ['queue timeout', `${limits.queue_timeout_ms} ms`],
          ['rate limit', limits.rate_limit ? `${limits.rate_limit.calls} per ${limits.rate_limit.period_seconds} s${limits.rate_limit.per_client ? ' per client' : ''}` : null],
        ]),
      ),
      h(
        'section',
        { 'aria-labelledby': 'h-perms' },
        h('h2', { id: 'h-perms', text: 'Permissions' }),
        kv([
          ['requested', (perms.requested || []).join(', ')],
          ['granted', (perms.granted || []).map((g) => `${g.permission} (${g.source})`).join(', ')],
          ['effective', (perms.effective || []).join(', ')],
          ['denied', (perms.denied || []).join(', ')],
        ]),
      ),
    ),
    h('h2', { text: 'Routes' }),
    table('routes-table', ['method', 'path', 'action'], (p.routes || []).map((r) => [r.method, `/plugins/${name}${r.path}`, r.action]), 'No declared route.'),
    h('h2', { text: 'Hooks' }),
    table('hooks-table', ['pattern', 'name', 'priority', 'once'], hooks.map((s) => [s.pattern, s.name, String(s.priority), s.once ? 'yes' : 'no']), 'No subscription.'),
    h('h2', { text: 'Jobs' }),
    table('plugin-jobs', ['id', 'schedule', 'next run', 'runs'], jobs.map((j) => [j.id, j.cron, j.next_run || '–', fmtNum(j.runs)]), 'No job runs this plugin.'),
    h('h2', { text: 'Restart and state history' }),
    table(
      'history-table',
      ['when', 'event', 'detail'],
      restarts.map((e) => [e.at, e.event, e.payload.reason || (e.payload.generation ? `generation ${e.payload.generation}` : '')]),
      'No restart or state change since this page opened.',
    ),
    table(
      'plugin-audit',
      ['when', 'who', 'action', 'outcome'],
      S.pluginAudit.map((a) => [a.at, a.actor, a.action, a.outcome + (a.detail ? `: ${a.detail}` : '')]),
      'No operator action recorded on this plugin.',
    ),
    h('h2', { text: 'Recent log lines (warn and above)' }),
    logs.length
      ? h('ul', { class: 'log', id: 'plugin-logs' }, logs.map((l) => h('li', {}, `${l.at} ${l.level.toUpperCase()} ${l.message}`)))
      : h('p', { class: 'muted', text: 'No warning or error since this page opened.' }),
  );
}

function mountJobs(main) {
  main.append(...pageShell('Jobs', h('div', { id: 'job-error', class: 'problem', role: 'alert' }), h('div', { id: 'job-notice', class: 'notice', role: 'status' }), h('div', { id: 'jobs-body' })));
}

function jobTarget(j) {
  if (!j.target) return '–';
  return j.target.kind === 'action' ? `call ${j.target.plugin}.${j.target.action}` : `emit ${j.target.event}`;
}

function updateJobs() {
  const jobs = S.jobs || [];
  replace(
    $('jobs-body'),
    jobs.length
      ? h(
          'div',
          { class: 'scroll' },
          h(
            'table',
            { id: 'jobs-table' },
            h('thead', {}, h('tr', {}, ['id', 'schedule', 'does', 'next run', 'runs', 'last outcome', ''].map((t) => h('th', { scope: 'col', text: t })))),
            h(
              'tbody',
              {},
              jobs.map((j) =>
                h(
                  'tr',
                  { 'data-job': j.id },
                  h('td', { text: j.id }),
                  h('td', { text: j.cron }),
                  h('td', { text: jobTarget(j) }),
                  h('td', { text: j.enabled ? j.next_run || '–' : 'disabled' }),
                  h('td', { class: 'num', text: fmtNum(j.runs) }),
                  h('td', { 'data-col': 'outcome', text: j.running ? 'running' : j.last_run ? `${j.last_run.outcome} at ${j.last_run.started_at}` : 'never run' }),
                  h(
                    'td',
                    {},
                    h('button', {
                      type: 'button',
                      'data-run': j.id,
                      text: 'Run now',
                      'aria-label': `Run job ${j.id} now`,
                      on: { click: () => runJob(j.id) },
                    }),
                  ),
                ),
              ),
            ),
          ),
        )
      : h('p', { class: 'muted', text: 'No job is scheduled.' }),
  );
}

async function runJob(id) {
  if (!(await confirmAction(`Run job ${id} now?`, `The job runs once now, beside its schedule.${roleNote('operator')}`, 'Run now'))) return;
  $('job-error').textContent = '';
  $('job-notice').textContent = '';
  try {
    const r = await api('POST', `/api/v1/jobs/${encodeURIComponent(id)}/run`);
    $('job-notice').textContent = `Job ${id}: ${r.outcome} in ${r.duration_ms} ms${r.error ? ` (${r.error})` : ''}.`;
    await refresh();
  } catch (e) {
    $('job-error').textContent = e.message;
  }
}

function mountEvents(main) {
  main.append(
    ...pageShell(
      'Events and hooks',
      h('h2', { text: 'Recent events (live)' }),
      h('div', { id: 'emits' }),
      h('h2', { text: 'Subscriptions' }),
      h('div', { id: 'subs' }),
      h('h2', { text: 'Interceptors' }),
      h('div', { id: 'interceptors' }),
      h('h2', { text: 'Per-event metrics' }),
      h('div', { id: 'event-metrics' }),
    ),
  );
}

function updateEvents() {
  const recent = S.emits.slice(-50).reverse();
  replace($('emits'), table('emits-table', ['when', 'type', 'event', 'payload'], recent.map((e) => [e.at, e.type, e.event, summarise(e.payload)]), 'No event since this page opened (the list fills live).'));
  const hooks = S.hooks || {};
  replace($('subs'), table('subs-table', ['pattern', 'name', 'owner', 'priority', 'once'], (hooks.subscriptions || []).map((s) => [s.pattern, s.name, s.owner, String(s.priority), s.once ? 'yes' : 'no']), 'No subscription.'));
  replace($('interceptors'), table('interceptors-table', ['kind', 'pattern', 'name', 'owner', 'priority'], (hooks.interceptors || []).map((i) => [i.kind, i.pattern, i.name, i.owner, String(i.priority)]), 'No interceptor.'));
  replace(
    $('event-metrics'),
    table(
      'event-metrics-table',
      ['event', 'emits', 'handler runs', 'failed runs'],
      (S.hookMetrics || []).map((m) => [m.event, fmtNum(m.emissions), fmtNum(m.handler_runs), fmtNum(m.errors)]),
      'No event emitted yet.',
    ),
  );
}

function mountAudit(main) {
  main.append(...pageShell('Audit log', h('p', { class: 'muted', text: 'Every operator action, newest first (the last 200).' }), h('div', { id: 'audit-body' })));
}

function updateAudit() {
  replace(
    $('audit-body'),
    table('audit-table', ['when', 'who', 'action', 'target', 'outcome', 'detail'], (S.audit || []).map((a) => [a.at, a.actor, a.action, a.target, a.outcome, a.detail || '']), 'No action recorded.'),
  );
}

function update() {
  const page = PAGES[S.route.page];
  if (page) page.update();
}

// ---- Routing and the session -------------------------------------------------------

function parseHash() {
  const parts = location.hash.replace(/^#\/?/, '').split('/');
  const page = parts[0] || 'overview';
  if (page === 'plugin' && parts[1]) return { page, arg: decodeURIComponent(parts[1]) };
  return { page: PAGES[page] && page !== 'plugin' ? page : 'overview', arg: null };
}

function route(message) {
  const main = $('main');
  S.route = S.token ? parseHash() : { page: 'signin', arg: null };
  if (S.route.page === 'signin' && S.token) S.route = { page: 'overview', arg: null };
  const page = PAGES[S.route.page];
  document.title = `${S.route.arg || page.title} · XCore`;
  for (const a of document.querySelectorAll('#nav a')) {
    const current = a.dataset.page === S.route.page || (S.route.page === 'plugin' && a.dataset.page === 'plugins');
    if (current) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  main.replaceChildren();
  page.mount(main, message);
  if (S.route.page !== 'signin') {
    const title = $('page-title');
    if (title) title.focus();
    update();
    refresh();
  }
}

function startSession() {
  $('nav').hidden = false;
  $('session').hidden = false;
  $('who').textContent = S.who ? `${S.who.actor} (${S.who.role})` : '';
  S.retryAt = 0;
  openStream();
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  S.token = null;
  S.who = null;
  closeStream();
  $('nav').hidden = true;
  $('session').hidden = true;
  S.emits = [];
  S.logs = [];
  S.restarts = [];
  if (location.hash && location.hash !== '#/signin') history.replaceState(null, '', '#/signin');
  route(message);
}

function tick() {
  if (!S.token) return;
  if (!S.stream && Date.now() >= S.retryAt) openStream();
  const every = S.live === 'live' ? POLL_LIVE_MS : POLL_FALLBACK_MS;
  if (Date.now() - S.lastRefresh >= every) refresh();
}

async function boot() {
  $('signout').addEventListener('click', () => signOut('Signed out.'));
  $('skip').addEventListener('click', () => $('main').focus());
  window.addEventListener('hashchange', () => route());
  setInterval(tick, 1000);
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) {
    try {
      S.who = await api('GET', '/api/v1/whoami', saved);
      S.token = saved;
      startSession();
    } catch (e) {
      sessionStorage.removeItem(TOKEN_KEY);
      route(e.message);
      return;
    }
  }
  route();
}

document.addEventListener('DOMContentLoaded', boot);
