// itsm web UI: plain JS, no dependencies, served under a strict CSP
// (`default-src 'self'`). Every piece of data reaches the page through
// textContent or setAttribute, never through HTML parsing.
'use strict';

(() => {
  const TOKEN_KEY = 'itsm.token';
  const STATES = ['pending', 'running', 'waiting_approval', 'waiting_task', 'succeeded', 'failed', 'cancelled'];
  const TERMINAL = new Set(['succeeded', 'failed', 'cancelled']);
  const STATE_LABEL = {
    pending: 'Pending',
    running: 'Running',
    waiting_approval: 'Waiting for approval',
    waiting_task: 'Waiting for a person',
    retry_wait: 'Waiting to retry',
    waiting_plugin: 'Waiting for its plugin',
    succeeded: 'Succeeded',
    failed: 'Failed',
    cancelled: 'Cancelled',
    compensated: 'Compensated',
    interrupted: 'Interrupted',
    skipped: 'Skipped',
    scheduled: 'Scheduled',
  };
  const LIST_REFRESH_MS = 5000;
  const BATCH_REFRESH_MS = 2000;
  const TICKET_REFRESH_MS = 1000;
  const TICKET_REFRESH_DONE_MS = 3000;
  const TASKS_REFRESH_MS = 3000;

  const session = { token: null, me: null };
  let currentView = null;

  // ---------------------------------------------------------------- DOM helpers

  /** Build an element. Children that are not nodes become text nodes. */
  function h(tag, props, ...children) {
    const el = document.createElement(tag);
    if (props) {
      for (const [key, value] of Object.entries(props)) {
        if (value === null || value === undefined || value === false) continue;
        if (key === 'class') el.className = value;
        else if (key === 'text') el.textContent = String(value);
        else if (key === 'dataset') {
          for (const [k, v] of Object.entries(value)) {
            if (v !== null && v !== undefined) el.dataset[k] = String(v);
          }
        } else if (key.startsWith('on') && typeof value === 'function') {
          el.addEventListener(key.slice(2), value);
        } else if (value === true) el.setAttribute(key, '');
        else el.setAttribute(key, String(value));
      }
    }
    append(el, children);
    return el;
  }

  /** Append children (nodes, strings, nested arrays; null and false skipped). */
  function append(el, ...children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  function replaceChildren(el, ...children) {
    el.replaceChildren();
    return append(el, ...children);
  }

  const $ = (id) => document.getElementById(id);

  function showMessage(el, text) {
    el.textContent = text || '';
    el.hidden = !text;
  }

  // ---------------------------------------------------------------- formatting

  const pad = (n, w = 2) => String(n).padStart(w, '0');

  function fmtDateTime(ms) {
    const d = new Date(ms);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function fmtClock(ms) {
    const d = new Date(ms);
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  }

  /** A <time> element; `short` shows the clock with milliseconds only. */
  function timeEl(ms, short) {
    if (ms === null || ms === undefined) return h('span', { class: 'muted' }, '—');
    const iso = new Date(ms).toISOString();
    return h('time', { datetime: iso, title: iso }, short ? fmtClock(ms) : fmtDateTime(ms));
  }

  function fmtDuration(ms) {
    if (ms === null || ms === undefined || !Number.isFinite(ms)) return '—';
    if (ms < 0) ms = 0;
    if (ms < 1000) return `${Math.round(ms)} ms`;
    if (ms < 60000) return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
    const min = Math.floor(ms / 60000);
    if (min < 60) return `${min} min ${Math.round((ms % 60000) / 1000)} s`;
    const hours = Math.floor(min / 60);
    if (hours < 48) return `${hours} h ${min % 60} min`;
    return `${Math.floor(hours / 24)} d ${hours % 24} h`;
  }

  function fmtRelative(ms) {
    const delta = ms - Date.now();
    return delta >= 0 ? `in ${fmtDuration(delta)}` : `${fmtDuration(-delta)} ago`;
  }

  function json(value) {
    return JSON.stringify(value, null, 2);
  }

  function compact(value) {
    if (value === undefined) return '';
    if (typeof value === 'string') return value;
    return JSON.stringify(value);
  }

  function stateLabel(s) {
    return STATE_LABEL[s] || String(s).replace(/_/g, ' ');
  }

  function badge(status, extra) {
    return h('span', {
      class: `badge state-${String(status).replace(/[^a-z_]/g, '')}`,
      dataset: { state: status },
      ...(extra || {}),
    }, stateLabel(status));
  }

  function shortHash(hash) {
    return hash ? String(hash).slice(0, 12) : '';
  }

  function hasRole(role) {
    return !!(session.me && Array.isArray(session.me.roles) && session.me.roles.includes(role));
  }

  const ticketHref = (id) => `#/tickets/${encodeURIComponent(id)}`;
  const batchHref = (id) => `#/batches/${encodeURIComponent(id)}`;

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  /** Call the API with the session token; errors carry the server's words. */
  async function api(method, path, body, token) {
    const headers = { authorization: `Bearer ${token || session.token}` };
    const init = { method, headers, cache: 'no-store', credentials: 'omit' };
    if (body !== undefined) {
      headers['content-type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, `Cannot reach the server (${e.message || e}).`);
    }
    const text = await resp.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (_) {
      data = null;
    }
    if (!resp.ok) {
      const message = data && typeof data.error === 'string'
        ? data.error
        : `HTTP ${resp.status} ${resp.statusText}${text ? `: ${text}` : ''}`;
      const err = new ApiError(resp.status, message);
      // A revoked or unknown token ends the session wherever it happens.
      if (resp.status === 401 && !token && session.token) {
        signOut(`You were signed out: ${message}`);
      }
      throw err;
    }
    return data;
  }

  // ---------------------------------------------------------------- polling

  /** Run `fn` now and then again `interval()` ms after each run ends. */
  function poller(fn, interval) {
    let stopped = false;
    let timer = null;
    let running = false;
    let again = false;
    async function tick() {
      if (stopped) return;
      clearTimeout(timer);
      if (running) {
        again = true;
        return;
      }
      running = true;
      try {
        await fn();
      } catch (e) {
        console.error(e);
      } finally {
        running = false;
      }
      if (stopped) return;
      if (again) {
        again = false;
        tick();
        return;
      }
      const ms = interval();
      if (ms > 0) timer = setTimeout(tick, ms);
    }
    return {
      now: tick,
      stop() {
        stopped = true;
        clearTimeout(timer);
      },
    };
  }

  /** A "live · updated hh:mm:ss" indicator, or a warning when refresh fails. */
  function liveIndicator(testid) {
    const el = h('p', { class: 'live', 'data-testid': testid });
    return {
      el,
      ok(paused) {
        el.classList.remove('stale');
        el.classList.toggle('paused', !!paused);
        replaceChildren(el, h('span', { class: 'dot', 'aria-hidden': 'true' }),
          `${paused ? 'Paused' : 'Live'} · updated ${fmtClock(Date.now()).slice(0, 8)}`);
      },
      fail(message) {
        el.classList.add('stale');
        replaceChildren(el, h('span', { class: 'dot', 'aria-hidden': 'true' }),
          `Refresh failed: ${message}`);
      },
    };
  }

  // ---------------------------------------------------------------- session

  function showSignin(message) {
    $('boot').hidden = true;
    $('nav').hidden = true;
    $('who').hidden = true;
    replaceChildren($('view'));
    $('signin').hidden = false;
    showMessage($('signin-error'), message);
    document.title = 'Sign in · itsm';
    $('token-input').focus();
    // Offer the organisation's sign-in when the server has a provider.
    fetch('/auth/sso', { headers: { accept: 'application/json' } })
      .then((r) => { $('sso').hidden = !r.ok; })
      .catch(() => { $('sso').hidden = true; });
  }

  function signOut(message) {
    if (currentView) currentView.stop();
    currentView = null;
    session.token = null;
    session.me = null;
    try {
      sessionStorage.removeItem(TOKEN_KEY);
    } catch (_) { /* storage disabled */ }
    $('token-input').value = '';
    showSignin(message);
  }

  function signedIn(token, me) {
    session.token = token;
    session.me = me;
    try {
      sessionStorage.setItem(TOKEN_KEY, token);
    } catch (_) { /* storage disabled: the session lasts until reload */ }
    $('signin').hidden = true;
    $('boot').hidden = true;
    $('nav').hidden = false;
    $('who').hidden = false;
    const roles = Array.isArray(me.roles) && me.roles.length ? me.roles.join(', ') : 'no roles';
    replaceChildren($('whoami'), h('span', { class: 'who-name' }, me.name), ' ',
      h('span', { class: 'who-roles' }, `(${roles})`));
    $('whoami').title = `Signed in as ${me.name}`;
  }

  async function onSignin(event) {
    event.preventDefault();
    const input = $('token-input');
    const button = $('signin-submit');
    const token = input.value.trim().replace(/^bearer\s+/i, '');
    if (!token) {
      showMessage($('signin-error'), 'Paste a token first.');
      input.focus();
      return;
    }
    button.disabled = true;
    showMessage($('signin-error'), '');
    try {
      const me = await api('GET', '/v1/me', undefined, token);
      input.value = '';
      signedIn(token, me);
      route(true);
    } catch (e) {
      showMessage($('signin-error'), e.message);
      input.select();
    } finally {
      button.disabled = false;
    }
  }

  // ---------------------------------------------------------------- routing

  function parseHash() {
    let raw = location.hash.replace(/^#/, '');
    if (!raw.startsWith('/')) raw = '/tickets';
    const q = raw.indexOf('?');
    const path = q >= 0 ? raw.slice(0, q) : raw;
    const params = new URLSearchParams(q >= 0 ? raw.slice(q + 1) : '');
    let parts;
    try {
      parts = path.split('/').filter(Boolean).map(decodeURIComponent);
    } catch (_) {
      parts = path.split('/').filter(Boolean);
    }
    return { parts, params };
  }

  function route(focus) {
    if (currentView) currentView.stop();
    currentView = null;
    if (!session.token) {
      showSignin();
      return;
    }
    const { parts, params } = parseHash();
    const view = $('view');
    replaceChildren(view);
    for (const a of document.querySelectorAll('#nav a')) a.removeAttribute('aria-current');
    if (parts[0] === 'tasks' && parts.length === 1) {
      $('nav-tasks').setAttribute('aria-current', 'page');
      currentView = taskInbox(view);
    } else if (parts[0] === 'tickets' && parts.length === 1) {
      $('nav-tickets').setAttribute('aria-current', 'page');
      currentView = ticketList(view, params);
    } else if (parts[0] === 'tickets' && parts.length === 2) {
      currentView = ticketPage(view, parts[1]);
    } else if (parts[0] === 'catalog' && parts.length === 1) {
      $('nav-catalog').setAttribute('aria-current', 'page');
      currentView = catalogPage(view);
    } else if (parts[0] === 'batches' && parts.length === 2) {
      currentView = batchPage(view, parts[1]);
    } else {
      document.title = 'Not found · itsm';
      append(view, h('section', { class: 'card' },
        h('h1', { tabindex: '-1' }, 'Page not found'),
        h('p', null, 'Nothing lives at ', h('code', null, location.hash), '. ',
          h('a', { href: '#/tickets' }, 'Go to the tickets.'))));
      currentView = { stop() {} };
    }
    if (focus !== false) {
      const h1 = view.querySelector('h1');
      if (h1) h1.focus({ preventScroll: true });
    }
  }

  function pageHeading(text, testid) {
    return h('h1', { tabindex: '-1', 'data-testid': testid }, text);
  }

  // ---------------------------------------------------------------- catalog

  /** One form control for a declared input. */
  function formField(itemName, name, def) {
    const fid = `f-${itemName}-${name}`;
    let control;
    if (def.type === 'enum') {
      control = h('select', { id: fid, name },
        def.required ? null : h('option', { value: '' }, '—'),
        (def.values || []).map((v) => h('option', { value: v, selected: def.default === v }, v)));
      if (def.required && def.default == null) {
        control.prepend(h('option', { value: '', selected: true, disabled: true }, 'Choose…'));
      }
    } else if (def.type === 'bool') {
      control = h('input', { id: fid, name, type: 'checkbox', checked: def.default === true });
    } else {
      const type = { date: 'date', int: 'number', email: 'email' }[def.type] || 'text';
      control = h('input', { id: fid, name, type, value: def.default != null ? String(def.default) : '' });
    }
    control.dataset.testid = 'form-field';
    control.dataset.field = name;
    return h('div', { class: 'field' },
      h('label', { for: fid }, name, def.required ? ' *' : ''),
      control,
      def.description ? h('p', { class: 'muted small' }, def.description) : null);
  }

  /** What the form says, as the API takes it: empty fields left out. */
  function formValues(form, defs) {
    const out = {};
    for (const [name, def] of Object.entries(defs)) {
      const el = form.elements.namedItem(name);
      if (!el) continue;
      if (def.type === 'bool') out[name] = el.checked;
      else if (el.value !== '') out[name] = def.type === 'int' && /^-?\d+$/.test(el.value) ? Number(el.value) : el.value;
    }
    return out;
  }

  function catalogPage(root) {
    document.title = 'Request · itsm';
    const error = h('p', { class: 'error', role: 'alert', hidden: true });
    const list = h('div', { class: 'catalog', 'data-testid': 'catalog' });
    append(root, h('section', { class: 'page' },
      pageHeading('Request something', 'page-title'),
      h('p', { class: 'muted' }, 'What your groups may ask for. Each request is yours: you follow it under Tickets.'),
      error, list));
    (async () => {
      let catalog;
      try {
        catalog = await api('GET', '/v1/catalog');
      } catch (e) {
        showMessage(error, e.message);
        return;
      }
      if (!catalog.items.length) {
        append(list, h('p', { class: 'muted', 'data-testid': 'catalog-empty' }, 'Nothing here is for your groups.'));
        return;
      }
      for (const item of catalog.items) {
        const form = h('form', { class: 'card catalog-item', 'data-testid': 'catalog-item', dataset: { item: item.name }, novalidate: true });
        const status = h('p', { class: 'error', role: 'alert', 'data-testid': 'request-error', hidden: true });
        const submit = h('button', { type: 'submit', class: 'button primary', 'data-testid': 'request-submit' }, 'Request');
        append(form,
          h('h2', null, item.title),
          h('p', null, item.description),
          h('p', { class: 'muted small' }, item.preapproved ? 'Pre-approved: it is done at once.' : 'Needs an approval.'),
          Object.entries(item.form).map(([name, def]) => formField(item.name, name, def)),
          status,
          h('div', { class: 'row' }, submit));
        form.addEventListener('submit', async (ev) => {
          ev.preventDefault();
          submit.disabled = true;
          showMessage(status, '');
          try {
            const t = await api('POST', `/v1/catalog/${encodeURIComponent(item.name)}`, { inputs: formValues(form, item.form) });
            location.hash = ticketHref(t.id);
          } catch (e) {
            showMessage(status, e.message);
            submit.disabled = false;
          }
        });
        append(list, form);
      }
    })();
    return { stop() {} };
  }

  // ---------------------------------------------------------------- ticket table

  function ticketTable(id, caption, withEmpty) {
    const tbody = h('tbody');
    const empty = h('p', { class: 'empty muted', hidden: true }, withEmpty || 'No tickets.');
    const table = h('table', { class: 'data tickets', id, 'data-testid': id },
      h('caption', { class: 'visually-hidden' }, caption),
      h('thead', null, h('tr', null,
        h('th', { scope: 'col' }, 'Ticket'),
        h('th', { scope: 'col' }, 'Subject'),
        h('th', { scope: 'col' }, 'Workflow'),
        h('th', { scope: 'col' }, 'State'),
        h('th', { scope: 'col' }, 'Created'),
        h('th', { scope: 'col' }, 'Updated'))),
      tbody);
    let lastKey = null;
    return {
      el: h('div', { class: 'table-wrap' }, table, empty),
      update(tickets) {
        const key = JSON.stringify(tickets);
        if (key === lastKey) return;
        lastKey = key;
        replaceChildren(tbody, tickets.map((t) => h('tr', {
          'data-testid': 'ticket-row', dataset: { id: t.id, state: t.state },
        },
        h('td', { class: 'mono' }, h('a', { href: ticketHref(t.id) }, t.id)),
        h('td', null, t.subject),
        h('td', null, t.workflow),
        h('td', null, badge(t.state)),
        h('td', null, timeEl(t.created_ms)),
        h('td', null, timeEl(t.updated_ms)))));
        empty.hidden = tickets.length > 0;
        table.hidden = tickets.length === 0;
      },
    };
  }

  function countByState(tickets) {
    const counts = Object.fromEntries(STATES.map((s) => [s, 0]));
    for (const t of tickets) counts[t.state] = (counts[t.state] || 0) + 1;
    return counts;
  }

  /** Chips with a count per state; `href(state)` makes them links. */
  function stateCounts(counts, href, testid) {
    return h('ul', { class: 'counts', 'data-testid': testid, 'aria-label': 'Tickets by state' },
      Object.entries(counts).map(([s, n]) => {
        const inner = [h('span', { class: 'count-n' }, String(n)), ' ', stateLabel(s)];
        return h('li', {
          class: `count state-${s}${n ? '' : ' zero'}`,
          'data-testid': `count-${s}`, dataset: { state: s, count: n },
        }, href ? h('a', { href: href(s) }, inner) : inner);
      }));
  }

  // ---------------------------------------------------------------- ticket list

  function ticketList(root, params) {
    document.title = 'Tickets · itsm';
    const filters = {};
    const fields = ['state', 'workflow', 'subject', 'batch'];
    const seenWorkflows = new Set();

    const stateSelect = h('select', { id: 'filter-state', name: 'state', 'data-testid': 'filter-state' },
      h('option', { value: '' }, 'Any state'),
      STATES.map((s) => h('option', { value: s }, stateLabel(s))));
    const workflowInput = h('input', {
      id: 'filter-workflow', name: 'workflow', type: 'text', list: 'workflow-options',
      autocomplete: 'off', spellcheck: 'false', 'data-testid': 'filter-workflow',
    });
    const workflowOptions = h('datalist', { id: 'workflow-options' });
    const subjectInput = h('input', {
      id: 'filter-subject', name: 'subject', type: 'text', autocomplete: 'off',
      spellcheck: 'false', placeholder: 'exact, e.g. jane@example.com', 'data-testid': 'filter-subject',
    });
    const batchInput = h('input', {
      id: 'filter-batch', name: 'batch', type: 'text', autocomplete: 'off',
      spellcheck: 'false', placeholder: 'B-…', 'data-testid': 'filter-batch',
    });
    const inputs = { state: stateSelect, workflow: workflowInput, subject: subjectInput, batch: batchInput };
    const autoRefresh = h('input', { id: 'auto-refresh', type: 'checkbox', checked: true, 'data-testid': 'auto-refresh' });

    const form = h('form', { class: 'filters card', id: 'filters', role: 'search', 'aria-label': 'Filter tickets' },
      h('div', { class: 'field' }, h('label', { for: 'filter-state' }, 'State'), stateSelect),
      h('div', { class: 'field' }, h('label', { for: 'filter-workflow' }, 'Workflow'), workflowInput, workflowOptions),
      h('div', { class: 'field' }, h('label', { for: 'filter-subject' }, 'Subject'), subjectInput),
      h('div', { class: 'field' }, h('label', { for: 'filter-batch' }, 'Batch'), batchInput),
      h('div', { class: 'field actions' },
        h('button', { type: 'submit', class: 'button primary', id: 'filter-apply', 'data-testid': 'filter-apply' }, 'Apply'),
        h('button', { type: 'button', class: 'button', id: 'filter-clear', 'data-testid': 'filter-clear' }, 'Clear')),
      h('div', { class: 'field toggle' }, autoRefresh, h('label', { for: 'auto-refresh' }, 'Auto-refresh')));

    const error = h('p', { class: 'error', id: 'list-error', role: 'alert', 'data-testid': 'list-error', hidden: true });
    const summary = h('div', { class: 'summary', id: 'list-summary', 'data-testid': 'list-summary' });
    const live = liveIndicator('list-live');
    const table = ticketTable('tickets-table', 'Tickets, newest first',
      'No tickets match these filters.');

    append(root, h('section', { class: 'page', 'aria-labelledby': 'tickets-title' },
      h('div', { class: 'page-head' }, pageHeading('Tickets', 'page-title'), live.el),
      form, error, summary, table.el));
    root.querySelector('h1').id = 'tickets-title';

    function readParams(p) {
      for (const f of fields) {
        filters[f] = (p.get(f) || '').trim();
        inputs[f].value = filters[f];
      }
    }

    function queryString() {
      const q = new URLSearchParams();
      for (const f of fields) if (filters[f]) q.set(f, filters[f]);
      return q.toString();
    }

    async function load() {
      let data;
      try {
        const qs = queryString();
        data = await api('GET', `/v1/tickets${qs ? `?${qs}` : ''}`);
      } catch (e) {
        showMessage(error, e.message);
        live.fail(e.message);
        return;
      }
      showMessage(error, '');
      const tickets = (data.tickets || []).slice()
        .sort((a, b) => (b.created_ms - a.created_ms) || (a.id < b.id ? 1 : -1));
      for (const t of tickets) {
        if (!seenWorkflows.has(t.workflow)) {
          seenWorkflows.add(t.workflow);
          append(workflowOptions, h('option', { value: t.workflow }));
        }
      }
      const counts = countByState(tickets);
      const href = (s) => {
        const q = new URLSearchParams(queryString());
        q.set('state', s);
        return `#/tickets?${q}`;
      };
      const active = fields.filter((f) => filters[f]);
      replaceChildren(summary,
        h('p', { class: 'muted', 'data-testid': 'list-count', dataset: { count: tickets.length } },
          `${tickets.length} ticket${tickets.length === 1 ? '' : 's'}`,
          active.length ? ` matching ${active.map((f) => `${f} = ${filters[f]}`).join(', ')}` : '',
          tickets.length >= 1000 ? ' (the server returns at most 1000)' : '',
          filters.batch ? [' · ', h('a', { href: batchHref(filters.batch) }, 'open batch view')] : ''),
        stateCounts(counts, href, 'list-counts'));
      table.update(tickets);
      live.ok(!autoRefresh.checked);
    }

    const poll = poller(load, () => (autoRefresh.checked && !document.hidden ? LIST_REFRESH_MS : 0));

    function applyFromForm() {
      const q = new URLSearchParams();
      for (const f of fields) {
        const v = inputs[f].value.trim();
        if (v) q.set(f, v);
      }
      const qs = q.toString();
      // Keep the form (and focus) in place: update the address, then reload.
      history.pushState(null, '', `#/tickets${qs ? `?${qs}` : ''}`);
      readParams(q);
      poll.now();
    }

    form.addEventListener('submit', (e) => {
      e.preventDefault();
      applyFromForm();
    });
    stateSelect.addEventListener('change', applyFromForm);
    form.querySelector('#filter-clear').addEventListener('click', () => {
      for (const f of fields) inputs[f].value = '';
      applyFromForm();
    });
    autoRefresh.addEventListener('change', () => poll.now());
    const onVisible = () => { if (!document.hidden) poll.now(); };
    document.addEventListener('visibilitychange', onVisible);

    readParams(params);
    poll.now();
    return {
      stop() {
        poll.stop();
        document.removeEventListener('visibilitychange', onVisible);
      },
    };
  }

  // ---------------------------------------------------------------- batch page

  function batchPage(root, batchId) {
    document.title = `${batchId} · itsm`;
    const live = liveIndicator('batch-live');
    const error = h('p', { class: 'error', id: 'batch-error', role: 'alert', 'data-testid': 'batch-error', hidden: true });
    const countsSlot = h('div', { id: 'batch-counts', 'data-testid': 'batch-counts' });
    const progress = h('progress', { id: 'batch-progress', max: '1', value: '0', 'aria-labelledby': 'batch-progress-label' });
    const progressLabel = h('span', { id: 'batch-progress-label', 'data-testid': 'batch-progress' });
    const table = ticketTable('batch-tickets', `Tickets of batch ${batchId}`, 'No tickets in this batch.');
    const actionResult = h('div', { class: 'action-result', id: 'batch-action-result', 'data-testid': 'batch-action-result', role: 'status', 'aria-live': 'polite' });
    const actionError = h('p', { class: 'error', id: 'batch-action-error', role: 'alert', 'data-testid': 'batch-action-error', hidden: true });
    let tickets = [];
    let operatorPanel = null;
    let retryBtn = null;
    let cancelBtn = null;

    if (hasRole('operator')) {
      const reason = h('input', {
        id: 'batch-cancel-reason', type: 'text', autocomplete: 'off',
        placeholder: 'Why (recorded in each ticket’s trail)', 'data-testid': 'batch-cancel-reason',
      });
      retryBtn = h('button', { type: 'button', class: 'button', id: 'batch-retry', 'data-testid': 'batch-retry' },
        'Retry failed tickets');
      cancelBtn = h('button', { type: 'button', class: 'button danger', id: 'batch-cancel', 'data-testid': 'batch-cancel' },
        'Cancel unfinished tickets');
      operatorPanel = h('section', { class: 'card operator', 'aria-labelledby': 'batch-ops-title' },
        h('h2', { id: 'batch-ops-title' }, 'Batch actions'),
        h('div', { class: 'row' },
          retryBtn,
          h('div', { class: 'field inline' },
            h('label', { for: 'batch-cancel-reason' }, 'Cancel reason'), reason),
          cancelBtn),
        actionError, actionResult);

      const run = async (button, path, body, verb) => {
        button.disabled = true;
        showMessage(actionError, '');
        replaceChildren(actionResult);
        try {
          const res = await api('POST', path, body);
          const applied = res.applied || [];
          const skipped = res.skipped || [];
          replaceChildren(actionResult,
            h('p', { class: 'ok' }, `${verb} ${applied.length} ticket${applied.length === 1 ? '' : 's'}; skipped ${skipped.length}.`),
            skipped.some((s) => s.error)
              ? h('ul', { class: 'skipped' }, skipped.filter((s) => s.error).map((s) => h('li', null,
                h('a', { href: ticketHref(s.id), class: 'mono' }, s.id), ': ', s.error)))
              : null);
        } catch (e) {
          showMessage(actionError, e.message);
        } finally {
          button.disabled = false;
          poll.now();
        }
      };
      retryBtn.addEventListener('click', () => run(retryBtn,
        `/v1/batches/${encodeURIComponent(batchId)}/retry`, undefined, 'Retried'));
      cancelBtn.addEventListener('click', () => run(cancelBtn,
        `/v1/batches/${encodeURIComponent(batchId)}/cancel`, { reason: reason.value.trim() }, 'Cancelled'));
    }

    append(root, h('section', { class: 'page batch', 'data-testid': 'batch-page', dataset: { batch: batchId } },
      h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' },
        h('a', { href: '#/tickets' }, 'Tickets'), h('span', { 'aria-hidden': 'true' }, ' › '),
        h('span', { 'aria-current': 'page' }, 'Batch')),
      h('div', { class: 'page-head' },
        h('div', null, pageHeading('Batch', 'page-title'),
          h('p', { class: 'mono subtitle', id: 'batch-id', 'data-testid': 'batch-id' }, batchId)),
        live.el),
      error,
      h('section', { class: 'card', 'aria-label': 'Progress' },
        h('div', { class: 'progress-row' }, progress, progressLabel),
        countsSlot),
      operatorPanel,
      h('h2', null, 'Tickets'),
      table.el));

    async function load() {
      let data;
      try {
        data = await api('GET', `/v1/tickets?batch=${encodeURIComponent(batchId)}`);
      } catch (e) {
        showMessage(error, e.message);
        live.fail(e.message);
        return;
      }
      showMessage(error, '');
      tickets = (data.tickets || []).slice().sort((a, b) => (a.created_ms - b.created_ms) || (a.id < b.id ? -1 : 1));
      const counts = countByState(tickets);
      const finished = tickets.filter((t) => TERMINAL.has(t.state)).length;
      progress.max = Math.max(tickets.length, 1);
      progress.value = finished;
      progressLabel.textContent = tickets.length
        ? `${finished} of ${tickets.length} finished`
        : 'No tickets in this batch.';
      progressLabel.dataset.finished = finished;
      progressLabel.dataset.total = tickets.length;
      replaceChildren(countsSlot, stateCounts(counts,
        (s) => `#/tickets?batch=${encodeURIComponent(batchId)}&state=${s}`, 'batch-state-counts'));
      if (retryBtn) retryBtn.disabled = counts.failed === 0;
      if (cancelBtn) cancelBtn.disabled = finished === tickets.length;
      table.update(tickets);
      live.ok();
    }

    const poll = poller(load, () => (document.hidden ? 0 : BATCH_REFRESH_MS));
    const onVisible = () => { if (!document.hidden) poll.now(); };
    document.addEventListener('visibilitychange', onVisible);
    poll.now();
    return {
      stop() {
        poll.stop();
        document.removeEventListener('visibilitychange', onVisible);
      },
    };
  }

  // ---------------------------------------------------------------- ticket page

  /** Steps in the workflow's own order when the server gives it; else in
   *  the order they first show up in the trail, then the rest. */
  function orderedSteps(ticket, trail, workflowSteps) {
    const names = Object.keys(ticket.steps || {});
    if (Array.isArray(workflowSteps) && workflowSteps.length) {
      const order = workflowSteps.map((s) => s.name).filter((n) => names.includes(n));
      return order.concat(names.filter((n) => !order.includes(n)));
    }
    const first = new Map();
    for (const e of trail || []) {
      if (e.step && !first.has(e.step)) first.set(e.step, e.seq);
    }
    return names.slice().sort((a, b) => {
      const fa = first.has(a) ? first.get(a) : Infinity;
      const fb = first.has(b) ? first.get(b) : Infinity;
      if (fa !== fb) return fa - fb;
      return names.indexOf(a) - names.indexOf(b);
    });
  }

  /** The group the latest approval request of `step` names, if any. */
  function approvalGroup(trail, step) {
    let group = null;
    for (const e of trail || []) {
      if (e.kind === 'approval_requested' && e.step === step) {
        // A committee is shown with its votes on the step, not as one group.
        group = e.data && !e.data.groups && (e.data.role || e.data.group) ? (e.data.role || e.data.group) : null;
      }
    }
    return group;
  }

  /** A committee's `{groups, quorum}` from its approval request, if it is one. */
  function committeeOf(trail, step) {
    let found = null;
    for (const e of trail || []) {
      if (e.kind === 'approval_requested' && e.step === step && e.data && Array.isArray(e.data.groups)) {
        found = { groups: e.data.groups.map(String), quorum: e.data.quorum };
      }
    }
    return found;
  }

  function jsonBlock(value, label) {
    return h('pre', { class: 'json', 'aria-label': label || null }, json(value));
  }

  /** Evidence: summary, target, and a before/after comparison. */
  function evidenceBlock(title, ev, testid) {
    if (!ev) return null;
    const parts = [h('h4', null, title)];
    if (ev.summary) parts.push(h('p', { class: 'evidence-summary', 'data-testid': `${testid}-summary` }, ev.summary));
    if (ev.target) parts.push(h('p', { class: 'evidence-target' }, h('span', { class: 'muted' }, 'Target: '), h('span', { class: 'mono' }, ev.target)));
    const before = ev.before;
    const after = ev.after;
    const isObj = (v) => v && typeof v === 'object' && !Array.isArray(v);
    if ((before === null || before === undefined) && (after === null || after === undefined)) {
      parts.push(h('p', { class: 'muted small' }, 'No before/after state recorded.'));
    } else if ((isObj(before) || before == null) && (isObj(after) || after == null)) {
      // Objects: a field table; both sides side by side when both are known.
      const cols = [];
      if (before != null) cols.push(['Before', before]);
      if (after != null) cols.push([before != null ? 'After' : 'State', after]);
      const keys = [...new Set([...Object.keys(before || {}), ...Object.keys(after || {})])];
      const cell = (obj, k) => (k in obj ? compact(obj[k]) : h('span', { class: 'muted' }, 'absent'));
      parts.push(h('table', { class: 'data diff' },
        h('caption', { class: 'visually-hidden' }, `${title}: ${cols.map((c) => c[0].toLowerCase()).join(' and ')}`),
        h('thead', null, h('tr', null,
          h('th', { scope: 'col' }, 'Field'),
          cols.map(([label]) => h('th', { scope: 'col' }, label)))),
        h('tbody', null, keys.map((k) => {
          const changed = cols.length === 2 && JSON.stringify(before[k]) !== JSON.stringify(after[k]);
          return h('tr', { class: changed ? 'changed' : null },
            h('th', { scope: 'row', class: 'mono' }, k, changed ? h('span', { class: 'visually-hidden' }, ' (changed)') : null),
            cols.map(([, obj]) => h('td', { class: 'mono' }, cell(obj, k))));
        }))));
    } else {
      parts.push(h('div', { class: 'before-after' },
        h('div', null, h('h5', null, 'Before'), jsonBlock(before, 'Before')),
        h('div', null, h('h5', null, 'After'), jsonBlock(after, 'After'))));
    }
    return h('div', { class: 'evidence', 'data-testid': testid }, parts);
  }

  function failureText(error) {
    if (!error) return '';
    if (typeof error === 'string') return error;
    const head = [error.kind, error.cause].filter(Boolean).join(', ');
    const retry = error.retry_after_ms ? ` (retry after ${fmtDuration(error.retry_after_ms)})` : '';
    return `${error.message || compact(error)}${head ? ` [${head}]` : ''}${retry}`;
  }

  function attemptBlock(step, a, open) {
    const status = a.result ? a.result.status : 'running';
    const duration = a.ended_ms != null ? a.ended_ms - a.started_ms : Date.now() - a.started_ms;
    const log = Array.isArray(a.log) ? a.log : [];
    const requests = Array.isArray(a.requests) ? a.requests : [];
    const summary = h('summary', null,
      h('span', { class: 'attempt-n' }, `#${a.n}`), ' ',
      h('span', { class: 'op' }, a.op), ' ',
      badge(status), ' ',
      h('span', { class: 'muted' },
        a.ended_ms != null ? fmtDuration(duration) : `running for ${fmtDuration(duration)}`,
        ' · started ', timeEl(a.started_ms, true),
        log.length ? ` · ${log.length} log line${log.length === 1 ? '' : 's'}` : '',
        requests.length ? ` · ${requests.length} request${requests.length === 1 ? '' : 's'}` : ''));
    const body = [];
    if (a.result && a.result.error) {
      body.push(h('p', { class: 'error inline-error', 'data-testid': 'attempt-error' }, failureText(a.result.error)));
    }
    if (log.length) {
      body.push(h('h5', null, 'Plugin log'),
        h('ol', { class: 'log', 'data-testid': 'attempt-log' }, log.map((l) => h('li', { class: `log-${String(l.level).replace(/[^a-z]/g, '')}` },
          h('span', { class: 'log-at' }, `+${l.at_ms} ms`), ' ',
          h('span', { class: 'log-level' }, l.level), ' ',
          h('span', { class: 'log-msg' }, l.message)))));
    }
    if (requests.length) {
      body.push(h('h5', null, 'Outbound requests'),
        h('table', { class: 'data requests', 'data-testid': 'attempt-requests' },
          h('caption', { class: 'visually-hidden' }, `Outbound requests of attempt ${a.n}`),
          h('thead', null, h('tr', null,
            h('th', { scope: 'col' }, 'Method'),
            h('th', { scope: 'col' }, 'URL'),
            h('th', { scope: 'col' }, 'Status'),
            h('th', { scope: 'col' }, 'Time'))),
          h('tbody', null, requests.map((r) => h('tr', { 'data-testid': 'request-row' },
            h('td', { class: 'mono' }, r.method),
            h('td', { class: 'mono url' }, r.url),
            h('td', { class: r.status != null && r.status < 400 ? 'http-ok' : 'http-bad' },
              r.status != null ? String(r.status) : (r.error ? `no response: ${r.error}` : '—')),
            h('td', null, fmtDuration(r.duration_ms)))))));
    }
    if (!body.length) body.push(h('p', { class: 'muted small' }, 'No log lines and no outbound requests.'));
    return h('details', {
      class: `attempt attempt-${status}`, 'data-testid': 'attempt',
      dataset: { n: a.n, op: a.op, status, key: `${step}/${a.n}` }, open: open || null,
    }, summary, body);
  }

  function decisionBlock(d) {
    if (!d) return null;
    return h('div', { class: `decision ${d.approved ? 'approved' : 'rejected'}`, 'data-testid': 'step-decision', dataset: { approved: d.approved, by: d.by } },
      h('strong', null, d.approved ? 'Approved' : 'Rejected'), ' by ',
      h('span', { class: 'who-name' }, d.by), ' at ', timeEl(d.at_ms),
      d.comment ? [': ', h('q', { class: 'comment' }, d.comment)] : h('span', { class: 'muted' }, ' (no comment)'));
  }

  function stepBlock(name, s, group, openKeys) {
    const attempts = Array.isArray(s.attempts) ? s.attempts : [];
    const meta = [];
    if (s.status === 'waiting_approval') {
      meta.push(h('p', { class: 'waiting' }, 'Waiting for a decision',
        group ? [' from the ', h('code', null, group), ' group'] : '', '.'));
    }
    if (s.task) meta.push(taskSummary(s.task));
    const votes = s.approval && Array.isArray(s.approval.votes) ? s.approval.votes : [];
    if (votes.length) {
      meta.push(h('ul', { class: 'votes', 'data-testid': 'step-votes' }, votes.map((v) => h('li', null,
        `${v.approved ? '✔ approved' : '✖ rejected'} for `, h('code', null, v.group), ' by ',
        h('span', { class: 'who-name' }, v.by), v.comment ? `: “${v.comment}”` : ''))));
    }
    if (s.approval && s.approval.overdue && s.status === 'waiting_approval') {
      meta.push(h('p', null, h('span', { class: 'badge state-failed' }, 'Approval overdue')));
    }
    if (s.retry_at_ms) meta.push(h('p', { class: 'muted' }, s.status === 'scheduled' ? 'Starts ' : 'Next attempt ', fmtRelative(s.retry_at_ms), ' (', timeEl(s.retry_at_ms), ').'));
    const extras = [];
    if (s.outputs !== null && s.outputs !== undefined) {
      extras.push(h('details', { class: 'outputs', dataset: { key: `${name}/outputs` }, open: openKeys.has(`${name}/outputs`) || null },
        h('summary', null, 'Outputs'), jsonBlock(s.outputs, 'Outputs')));
    }
    if (s.compensation !== null && s.compensation !== undefined) {
      extras.push(h('div', { class: 'evidence compensation', 'data-testid': 'step-compensation' },
        h('h4', null, 'Compensation'), jsonBlock(s.compensation, 'Compensation')));
    }
    const lastAttempt = attempts.length ? attempts[attempts.length - 1] : null;
    return h('li', {
      class: `step status-${s.status}`, id: `step-${name}`,
      'data-testid': 'step', dataset: { step: name, status: s.status },
    },
    h('span', { class: 'marker', 'aria-hidden': 'true' }),
    h('div', { class: 'step-body' },
      h('div', { class: 'step-head' },
        h('h3', null, name), badge(s.status, { 'data-testid': 'step-status' }),
        attempts.length ? h('span', { class: 'muted' }, `${attempts.length} plugin call${attempts.length === 1 ? '' : 's'}`) : null),
      meta,
      decisionBlock(s.decision),
      evidenceBlock('Evidence', s.evidence, 'step-evidence'),
      evidenceBlock('Verification', s.verification, 'step-verification'),
      extras,
      attempts.length ? h('div', { class: 'attempts' }, h('h4', null, 'Attempts'),
        attempts.map((a) => {
          const key = `${name}/${a.n}`;
          // Open what has something to show (log, requests, an error) unless the user closed it.
          const telling = (a.log && a.log.length) || (a.requests && a.requests.length)
            || (a.result && a.result.status !== 'succeeded') || a === lastAttempt && a.ended_ms == null;
          const open = openKeys.has(key) || (telling && !openKeys.has(`closed:${key}`));
          return attemptBlock(name, a, open);
        }))
        : h('p', { class: 'muted small' }, s.status === 'pending' ? 'Not started.' : s.status === 'skipped' ? 'Skipped: its condition was false.' : s.task ? 'A person\'s task: no plugin calls.' : 'No plugin calls yet.')));
  }

  /** Who a task is for, when it is due, and how it was done. */
  function taskSummary(k) {
    const who = [];
    if (k.assignee) who.push(h('span', { class: 'who-name' }, k.assignee));
    if (k.group) who.push(['group ', h('code', null, k.group)]);
    if (k.escalated_to) who.push(['escalated to ', h('code', null, k.escalated_to)]);
    return h('div', { class: 'task-info', 'data-testid': 'step-task' },
      h('p', { class: k.done ? 'muted' : 'waiting' }, k.done ? 'Was assigned to ' : 'Assigned to ',
        who.map((w, i) => [i ? ', ' : '', w]),
        k.due_ms ? ['; due ', timeEl(k.due_ms), ' (', fmtRelative(k.due_ms), ')'] : '',
        k.overdue && !k.done ? [' ', h('span', { class: 'badge state-failed' }, 'Overdue')] : '', '.'),
      k.done ? h('p', { 'data-testid': 'task-done' }, 'Done by ', h('span', { class: 'who-name' }, k.done.by), ' at ',
        timeEl(k.done.at_ms), k.done.note ? [': “', k.done.note, '”'] : '', '. ',
        Object.entries(k.done.checklist || {}).map(([item, ok], i) => [i ? ', ' : '', `${ok ? '✔' : '✖'} ${item}`])) : null);
  }

  // ---------------------------------------------------------------- task inbox

  /** The signed-in person's open tasks, each with its checklist to answer. */
  function taskInbox(root) {
    document.title = 'My tasks · itsm';
    const live = liveIndicator('tasks-live');
    const status = h('div', { 'aria-live': 'polite', 'data-testid': 'task-status' });
    const list = h('ul', { class: 'tasks', 'data-testid': 'task-list' });
    const empty = h('p', { class: 'empty muted', 'data-testid': 'tasks-empty', hidden: true },
      'Nothing to do: no open task is assigned to you or your groups.');
    const error = h('p', { class: 'error', role: 'alert', hidden: true });
    append(root, h('section', { class: 'page' },
      h('div', { class: 'page-head' }, pageHeading('My tasks', 'tasks-title'), live.el),
      error, status, list, empty));
    // Keep cards (and what is typed in them) while their task stays open.
    const cards = new Map();

    function card(t) {
      const key = `${t.ticket}/${t.step}`;
      const slug = key.replace(/[^A-Za-z0-9_-]/g, '-');
      const boxes = (t.checklist || []).map((item, i) => {
        const boxId = `task-${slug}-item-${i}`;
        return {
          item,
          input: h('input', { type: 'checkbox', id: boxId, 'data-testid': 'task-item', dataset: { item } }),
          label: h('label', { for: boxId }, item),
        };
      });
      const noteId = `task-${slug}-note`;
      const note = h('textarea', {
        id: noteId, rows: '2', maxlength: '2000', 'data-testid': 'task-note',
        placeholder: 'A note for the audit trail (say why, for any item not done)',
      });
      const fail = h('p', { class: 'error', role: 'alert', 'data-testid': 'task-error', hidden: true });
      const button = h('button', { type: 'button', class: 'button primary', 'data-testid': 'task-complete' }, 'Mark done');
      button.addEventListener('click', async () => {
        button.disabled = true;
        showMessage(fail, '');
        const checklist = Object.fromEntries(boxes.map((b) => [b.item, b.input.checked]));
        try {
          await api('POST', `/v1/tickets/${encodeURIComponent(t.ticket)}/steps/${encodeURIComponent(t.step)}/complete`,
            { note: note.value, checklist });
          replaceChildren(status, h('p', { class: 'ok', 'data-testid': 'task-sent' },
            `Done: ${t.step} for ${t.subject}. `, h('a', { href: ticketHref(t.ticket) }, 'See the ticket move on.')));
          cards.delete(key);
          poll.now();
        } catch (e) {
          showMessage(fail, e.message);
          button.disabled = false;
        }
      });
      const who = [t.assignee, t.group ? `group ${t.group}` : null, t.escalated_to ? `escalated to ${t.escalated_to}` : null]
        .filter(Boolean).join(', ');
      return h('li', { class: 'card task', 'data-testid': 'task', dataset: { ticket: t.ticket, step: t.step } },
        h('h2', null, h('span', { class: 'who-name' }, t.subject), ': ', h('code', null, t.step)),
        h('p', { class: 'muted' }, h('a', { href: ticketHref(t.ticket), class: 'mono' }, t.ticket), ` · ${t.workflow} · for ${who}`,
          t.due_ms ? ['; due ', timeEl(t.due_ms), ` (${fmtRelative(t.due_ms)})`] : '',
          t.overdue ? [' ', h('span', { class: 'badge state-failed' }, 'Overdue')] : ''),
        h('p', { class: 'instructions' }, t.instructions),
        boxes.length ? h('fieldset', { class: 'checklist' }, h('legend', null, 'Checklist'),
          boxes.map((b) => h('div', { class: 'check' }, b.input, ' ', b.label))) : null,
        h('label', { for: noteId }, 'Note'), note, fail,
        h('div', { class: 'row' }, button));
    }

    async function load() {
      let d;
      try {
        d = await api('GET', '/v1/tasks?mine=true');
      } catch (e) {
        showMessage(error, e.message);
        live.fail(e.message);
        return;
      }
      showMessage(error, '');
      const tasks = d.tasks || [];
      const keys = new Set(tasks.map((t) => `${t.ticket}/${t.step}`));
      for (const k of [...cards.keys()]) if (!keys.has(k)) cards.delete(k);
      for (const t of tasks) {
        const k = `${t.ticket}/${t.step}`;
        if (!cards.has(k)) cards.set(k, card(t));
      }
      replaceChildren(list, tasks.map((t) => cards.get(`${t.ticket}/${t.step}`)));
      empty.hidden = tasks.length > 0;
      live.ok();
    }

    const poll = poller(load, () => (document.hidden ? 0 : TASKS_REFRESH_MS));
    poll.now();
    return { stop() { poll.stop(); } };
  }

  const TRAIL_LABEL = {
    created: 'Created',
    step_started: 'Step started',
    step_succeeded: 'Step succeeded',
    step_verified: 'Step verified',
    step_failed: 'Step failed',
    retry_scheduled: 'Retry scheduled',
    step_interrupted: 'Step interrupted',
    approval_requested: 'Approval requested',
    step_waiting: 'Step waiting',
    step_skipped: 'Step skipped',
    step_scheduled: 'Step scheduled',
    run_early: 'Run before its time',
    condition_failed: 'Condition failed',
    task_assigned: 'Task assigned',
    task_completed: 'Task done',
    task_reassigned: 'Task reassigned',
    task_reminded: 'Task reminder',
    task_overdue: 'Task overdue',
    approval_overdue: 'Approval overdue',
    linked: 'Related',
    triaged: 'Triaged',
    approved: 'Approved',
    rejected: 'Rejected',
    compensated: 'Compensated',
    compensation_failed: 'Compensation failed',
    retry_requested: 'Retry requested',
    cancelled: 'Cancelled',
    sla_breached: 'SLA breached',
    sla_at_risk: 'SLA at risk',
    ticket_succeeded: 'Ticket succeeded',
    ticket_failed: 'Ticket failed',
  };

  /** One line about an event's data; the full data is one click away. */
  function trailDetail(e) {
    const d = e.data || {};
    switch (e.kind) {
      case 'created':
        return `${d.workflow || ''}${d.workflow_version ? ` v${d.workflow_version}` : ''} for ${d.subject || ''}${d.batch ? ` (batch ${d.batch})` : ''}`;
      case 'step_started':
      case 'step_interrupted':
        return `attempt ${d.attempt}: ${d.op}`;
      case 'step_succeeded':
      case 'step_verified':
      case 'compensated':
        return d.evidence && d.evidence.summary ? d.evidence.summary : `attempt ${d.attempt ?? ''}`;
      case 'step_failed':
        return `attempt ${d.attempt}${d.op ? ` (${d.op})` : ''}: ${failureText(d.error)}`;
      case 'compensation_failed':
        return failureText(d.error);
      case 'retry_scheduled':
        return `after attempt ${d.after_attempt}, in ${fmtDuration(d.wait_ms)}`;
      case 'approval_requested':
        if (Array.isArray(d.groups)) return `needs ${d.quorum} of ${d.groups.join(', ')}`;
        return d.role ? `needs an approver in the ${d.role} group` : 'needs an approver';
      case 'triaged':
        return d.group ? `to ${d.group} (rule ${d.rule}: ${d.when})` : 'no rule routed it';
      case 'linked':
        return `${String(d.rel || '').replace('_', ' ')} ${d.ticket || ''}`;
      case 'approval_overdue':
        return d.escalated_to ? `overdue; escalated to ${d.escalated_to}` : 'overdue';
      case 'step_waiting':
        return d.reason || '';
      case 'step_skipped':
        return `${d.when || ''} was false`;
      case 'condition_failed':
        return d.error || '';
      case 'step_scheduled':
        return `scheduled for ${d.at || ''}${d.utc ? ` (${d.utc})` : ''}`;
      case 'run_early':
        return d.reason ? `“${d.reason}”` : '';
      case 'task_assigned':
        return `to ${[d.assignee, d.group ? `group ${d.group}` : null].filter(Boolean).join(', ')}${d.due ? `, due ${d.due}` : ''}`;
      case 'task_completed':
        return `${Object.entries(d.checklist || {}).map(([item, ok]) => `${ok ? '✔' : '✖'} ${item}`).join(', ')}${d.note ? ` “${d.note}”` : ''}`;
      case 'task_reassigned':
        return `${d.from || 'nobody'} → ${d.to}: “${d.reason || ''}”`;
      case 'task_reminded':
        return `reminder ${d.n} to ${d.assignee || d.group || ''}`;
      case 'task_overdue':
        return d.escalated_to ? `escalated to ${d.escalated_to}` : 'past its due time';
      case 'approved':
      case 'rejected':
        return d.comment ? `“${d.comment}”` : '(no comment)';
      case 'cancelled':
        return d.reason ? `“${d.reason}”` : '(no reason given)';
      case 'retry_requested':
        return Array.isArray(d.steps) && d.steps.length ? `steps: ${d.steps.join(', ')}` : '';
      case 'sla_breached':
        return d.deadline_ms ? `deadline was ${fmtDateTime(d.deadline_ms)}` : '';
      case 'ticket_succeeded':
      case 'ticket_failed': {
        const bits = [];
        if (Array.isArray(d.failed_steps) && d.failed_steps.length) bits.push(`failed: ${d.failed_steps.join(', ')}`);
        if (Array.isArray(d.compensated_steps) && d.compensated_steps.length) bits.push(`compensated: ${d.compensated_steps.join(', ')}`);
        return bits.join('; ');
      }
      default:
        return compact(d);
    }
  }

  function trailRow(e, openKeys) {
    const key = `trail/${e.seq}`;
    const plugin = e.plugin ? `${e.plugin.name} ${e.plugin.version}` : null;
    return h('tr', {
      class: `trail-${e.kind}`, 'data-testid': 'trail-event',
      dataset: { seq: e.seq, kind: e.kind, principal: e.principal, step: e.step || '' },
    },
    h('td', { class: 'num' }, String(e.seq)),
    h('td', null, timeEl(e.at_ms, true)),
    h('td', null, h('span', { class: `kind kind-${String(e.kind).replace(/[^a-z_]/g, '')}` }, TRAIL_LABEL[e.kind] || e.kind)),
    h('td', null, e.step || h('span', { class: 'muted' }, '—')),
    h('td', { class: `principal ${e.principal === 'system' ? 'muted' : 'who-name'}` }, e.principal),
    h('td', { class: 'detail' },
      h('span', null, trailDetail(e)),
      h('details', { class: 'raw', dataset: { key }, open: openKeys.has(key) || null },
        h('summary', null, 'Details'),
        h('dl', { class: 'kv small' },
          plugin ? [h('dt', null, 'Plugin'), h('dd', { class: 'mono' }, plugin, h('br'), `wasm sha256 ${e.plugin.wasm_sha256}`)] : null,
          h('dt', null, 'Hash'), h('dd', { class: 'mono' }, e.hash),
          h('dt', null, 'Previous'), h('dd', { class: 'mono' }, e.prev_hash)),
        jsonBlock(e.data, 'Event data'))),
    h('td', { class: 'mono hash', title: e.hash }, shortHash(e.hash)));
  }

  function ticketPage(root, id) {
    document.title = `${id} · itsm`;
    const openKeys = new Set();
    const live = liveIndicator('ticket-live');
    const loadError = h('p', { class: 'error', id: 'ticket-error', role: 'alert', 'data-testid': 'ticket-error', hidden: true });
    const crumbs = h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' });
    const title = pageHeading(id, 'page-title');
    const stateSlot = h('div', { class: 'ticket-state' });
    const meta = h('dl', { class: 'meta kv', id: 'ticket-meta', 'data-testid': 'ticket-meta' });
    const actionStatus = h('div', { class: 'action-status', id: 'action-status', 'data-testid': 'action-status', role: 'status', 'aria-live': 'polite' });
    const approvalSlot = h('div', { id: 'approval-slot' });
    const opsSlot = h('div', { id: 'ops-slot' });
    const stepsList = h('ol', { class: 'timeline', id: 'steps', 'data-testid': 'steps' });
    const relatedBody = h('tbody');
    const relatedSection = h('section', { class: 'section', 'aria-labelledby': 'related-title', hidden: true },
      h('h2', { id: 'related-title' }, 'Related tickets'),
      h('div', { class: 'table-wrap' }, h('table', { class: 'data', id: 'related-table', 'data-testid': 'related-table' },
        h('caption', { class: 'visually-hidden' }, 'Tickets related to this one'),
        h('thead', null, h('tr', null,
          h('th', { scope: 'col' }, 'Relation'),
          h('th', { scope: 'col' }, 'Ticket'),
          h('th', { scope: 'col' }, 'Subject'),
          h('th', { scope: 'col' }, 'Workflow'),
          h('th', { scope: 'col' }, 'State'))),
        relatedBody)));
    const trailStatus = h('div', { id: 'trail-status', 'data-testid': 'trail-status', class: 'trail-status' });
    const trailBody = h('tbody');
    const trailTable = h('table', { class: 'data trail', id: 'trail-table', 'data-testid': 'trail-table' },
      h('caption', { class: 'visually-hidden' }, 'Audit trail, oldest first'),
      h('thead', null, h('tr', null,
        h('th', { scope: 'col' }, '#'),
        h('th', { scope: 'col' }, 'Time'),
        h('th', { scope: 'col' }, 'Event'),
        h('th', { scope: 'col' }, 'Step'),
        h('th', { scope: 'col' }, 'By'),
        h('th', { scope: 'col' }, 'Details'),
        h('th', { scope: 'col' }, 'Hash'))),
      trailBody);
    const body = h('div', { class: 'ticket-body', hidden: true },
      h('div', { class: 'card' }, meta),
      actionStatus, approvalSlot, opsSlot, relatedSection,
      h('section', { class: 'section', 'aria-labelledby': 'steps-title' },
        h('h2', { id: 'steps-title' }, 'Steps'), stepsList),
      h('section', { class: 'section', 'aria-labelledby': 'trail-title' },
        h('h2', { id: 'trail-title' }, 'Audit trail'), trailStatus,
        h('div', { class: 'table-wrap' }, trailTable)));

    const article = h('article', { class: 'page ticket', 'data-testid': 'ticket-page', dataset: { id } },
      crumbs,
      h('div', { class: 'page-head' },
        h('div', null, title, h('p', { class: 'mono subtitle', id: 'ticket-id', 'data-testid': 'ticket-id' }, id)),
        h('div', { class: 'head-right' }, stateSlot, live.el)),
      loadError, body);
    append(root, article);

    // Remember which <details> the user opened or closed across refreshes.
    article.addEventListener('toggle', (ev) => {
      const el = ev.target;
      if (!(el instanceof HTMLDetailsElement) || !el.dataset.key) return;
      const key = el.dataset.key;
      if (el.open) {
        openKeys.add(key);
        openKeys.delete(`closed:${key}`);
      } else {
        openKeys.delete(key);
        openKeys.add(`closed:${key}`);
      }
    }, true);

    let detail = null;
    const last = {};
    let approval = null; // { key, el, refresh(detail) }
    let ops = null; // { key, el }

    function changed(section, value) {
      const key = JSON.stringify(value);
      if (last[section] === key) return false;
      last[section] = key;
      return true;
    }

    function renderHead(t) {
      if (!changed('head', [t.state, t.subject, t.batch, t.workflow])) return;
      title.textContent = t.subject || id;
      document.title = `${t.subject || id} · ${id} · itsm`;
      replaceChildren(crumbs,
        h('a', { href: '#/tickets' }, 'Tickets'), h('span', { 'aria-hidden': 'true' }, ' › '),
        t.batch ? [h('a', { href: batchHref(t.batch) }, 'Batch ', h('span', { class: 'mono' }, t.batch)), h('span', { 'aria-hidden': 'true' }, ' › ')] : null,
        h('span', { 'aria-current': 'page', class: 'mono' }, id));
      replaceChildren(stateSlot, h('span', { class: 'visually-hidden' }, 'State: '),
        badge(t.state, { id: 'ticket-state', 'data-testid': 'ticket-state', class: `badge big state-${t.state}` }));
    }

    function renderMeta(t, sla, view) {
      // The minute makes the relative SLA time ("in 23 h 59 min") move on.
      if (!changed('meta', [view, t.routed_to, t.workflow, t.workflow_version, t.workflow_hash, t.requested_by, t.batch,
        t.created_ms, t.updated_ms, t.sla_deadline_ms, t.sla_breached, t.sla_at_risk, t.compensating, t.inputs,
        Math.floor(Date.now() / 60000)])) return;
      const row = (label, ...value) => [h('dt', null, label), h('dd', null, value)];
      const inputs = t.inputs && typeof t.inputs === 'object' && Object.keys(t.inputs).length ? t.inputs : null;
      replaceChildren(meta,
        row('Subject', h('span', { 'data-testid': 'ticket-subject' }, t.subject)),
        row('Workflow', h('span', { 'data-testid': 'ticket-workflow' }, t.workflow),
          t.workflow_version ? ` v${t.workflow_version}` : '',
          t.workflow_hash ? h('span', { class: 'muted mono small', title: 'workflow definition hash' }, ` #${t.workflow_hash}`) : ''),
        row('Requested by', h('span', { class: 'who-name', 'data-testid': 'ticket-requested-by' }, t.requested_by || '—')),
        t.routed_to ? row('Routed to', h('code', { 'data-testid': 'ticket-routed-to' }, t.routed_to)) : null,
        row('Batch', t.batch ? h('a', { href: batchHref(t.batch), class: 'mono', 'data-testid': 'ticket-batch' }, t.batch) : h('span', { class: 'muted' }, 'none')),
        row('Created', timeEl(t.created_ms)),
        row('Updated', timeEl(t.updated_ms)),
        row('SLA deadline', t.sla_deadline_ms
          ? [timeEl(t.sla_deadline_ms), ' ', h('span', { class: 'muted' }, `(${fmtRelative(t.sla_deadline_ms)})`),
            sla && sla.calendar && !TERMINAL.has(t.state)
              ? [' ', h('span', { 'data-testid': 'sla-business-left' }, `${fmtDuration(sla.remaining_business_ms)} of business time left on ${sla.calendar}`)] : '',
            t.sla_at_risk && !t.sla_breached ? [' ', h('span', { class: 'badge state-waiting_approval', 'data-testid': 'sla-at-risk' }, 'SLA at risk')] : '',
            t.sla_breached ? [' ', h('span', { class: 'badge state-failed', 'data-testid': 'sla-breached' }, 'SLA breached')] : '']
          : h('span', { class: 'muted' }, 'none')),
        t.compensating ? row('Compensation', h('span', { class: 'badge state-waiting_approval' }, 'Undoing completed steps')) : null,
        inputs ? row('Inputs', jsonBlock(inputs, 'Inputs')) : null,
        // The server sends a task holder only their task: say so, so an
        // empty inputs list and a short timeline are not taken for the ticket's.
        view === 'task' ? row('Shown', h('span', { 'data-testid': 'task-view' },
          'your task only: the ticket\'s inputs and its other steps are not shown to you')) : null);
    }

    function waitingSteps(t) {
      return Object.entries(t.steps || {}).filter(([, s]) => s.status === 'waiting_approval').map(([n]) => n);
    }

    function buildApproval(t, trail, steps, rollbackPlan) {
      const groups = steps.map((s) => approvalGroup(trail, s));
      const me = session.me || { name: '', roles: [] };
      const panel = h('section', {
        class: 'card approval', id: 'approval-panel', 'data-testid': 'approval-panel',
        'aria-labelledby': 'approval-title', dataset: { steps: steps.join(',') },
      });
      const heading = h('h2', { id: 'approval-title' },
        `Approval needed: step${steps.length > 1 ? 's' : ''} `,
        steps.map((s, i) => [i ? ', ' : '', h('code', null, s)]));
      const committees = steps.map((s) => committeeOf(trail, s));
      const who = h('p', null,
        steps.map((s, i) => [i ? ' ' : '',
          committees[i] ? ['Step ', h('code', null, s), ` needs approvals from ${committees[i].quorum} of the groups `,
            committees[i].groups.map((g, j) => [j ? ', ' : '', h('code', null, g)]), '; each group votes once.']
            : groups[i] ? ['Step ', h('code', null, s), ' needs an approver in the ', h('code', null, groups[i]), ' group.']
              : ['Step ', h('code', null, s), ' needs an approver.']]),
        ' Requested by ', h('span', { class: 'who-name' }, t.requested_by || 'unknown'), '.');
      append(panel, heading, who);
      // What undoes the change if it fails, read before the vote.
      if (rollbackPlan && rollbackPlan.length) {
        append(panel, h('div', { class: 'rollback-plan', 'data-testid': 'rollback-plan' },
          h('h3', null, 'Rollback plan'),
          h('p', { class: 'muted' }, 'If a step fails for good (its verification included), these run in this order:'),
          h('ol', null, rollbackPlan.map((u) => h('li', { 'data-testid': 'rollback-step', dataset: { step: u.step } },
            h('code', null, u.step), ` (${u.plugin}): `, h('span', { class: 'mono' }, u.undo))))));
      }
      if (!hasRole('approver')) {
        append(panel, h('p', { class: 'muted', 'data-testid': 'approval-not-allowed' },
          `You (${me.name}) cannot decide: that needs the approver role.`));
        return panel;
      }
      const hints = [];
      for (const g of new Set(groups.filter(Boolean))) {
        if (!me.roles.includes(g)) hints.push(`You are not in the ${g} group; the server will likely refuse.`);
      }
      for (const c of committees.filter(Boolean)) {
        if (!c.groups.some((g) => me.roles.includes(g))) hints.push(`You are in none of the groups ${c.groups.join(', ')}; the server will likely refuse.`);
      }
      if (t.requested_by && t.requested_by === me.name) {
        hints.push('You requested this ticket; separation of duties means someone else must decide.');
      }
      const comment = h('textarea', {
        id: 'approval-comment', name: 'comment', rows: '3', maxlength: '2000',
        'data-testid': 'approval-comment', placeholder: 'Why you approve or reject (recorded in the audit trail)',
      });
      const error = h('p', { class: 'error', id: 'approval-error', role: 'alert', 'data-testid': 'approval-error', hidden: true });
      const approveBtn = h('button', { type: 'button', class: 'button primary', id: 'approve-btn', 'data-testid': 'approve' }, 'Approve');
      const rejectBtn = h('button', { type: 'button', class: 'button danger', id: 'reject-btn', 'data-testid': 'reject' }, 'Reject');
      append(panel,
        hints.map((x) => h('p', { class: 'hint' }, x)),
        h('label', { for: 'approval-comment' }, 'Comment'),
        comment,
        error,
        h('div', { class: 'row' }, approveBtn, rejectBtn));
      const decide = async (approve) => {
        approveBtn.disabled = true;
        rejectBtn.disabled = true;
        showMessage(error, '');
        try {
          await api('POST', `/v1/tickets/${encodeURIComponent(id)}/${approve ? 'approve' : 'reject'}`, { comment: comment.value });
          replaceChildren(actionStatus, h('p', { class: approve ? 'ok' : 'warn', 'data-testid': 'decision-sent' },
            `${approve ? 'Approved' : 'Rejected'} ${steps.join(', ')}${comment.value ? ` with comment “${comment.value}”` : ''}. `,
            approve ? 'The ticket moves on.' : ''));
          comment.value = '';
        } catch (e) {
          showMessage(error, e.message);
          approveBtn.disabled = false;
          rejectBtn.disabled = false;
        }
        poll.now();
      };
      approveBtn.addEventListener('click', () => decide(true));
      rejectBtn.addEventListener('click', () => decide(false));
      return panel;
    }

    function renderApproval(t, trail, rollbackPlan) {
      const steps = waitingSteps(t);
      // Keep the panel (and what is typed in it) while the same steps wait.
      const key = steps.length ? JSON.stringify([steps, session.me && session.me.name, t.requested_by]) : null;
      if (approval && approval.key === key) return;
      approval = key ? { key, el: buildApproval(t, trail, steps, rollbackPlan) } : null;
      replaceChildren(approvalSlot, approval ? approval.el : null);
    }

    function renderOps(t) {
      if (!hasRole('operator')) return;
      const canCancel = !TERMINAL.has(t.state);
      const canRetry = t.state === 'failed';
      const key = JSON.stringify([canCancel, canRetry]);
      if (ops && ops.key === key) return;
      if (!canCancel && !canRetry) {
        ops = { key, el: null };
        replaceChildren(opsSlot);
        return;
      }
      const error = h('p', { class: 'error', id: 'ops-error', role: 'alert', 'data-testid': 'ops-error', hidden: true });
      const row = h('div', { class: 'row' });
      const act = async (button, path, bodyValue, done) => {
        button.disabled = true;
        showMessage(error, '');
        try {
          await api('POST', path, bodyValue);
          replaceChildren(actionStatus, h('p', { class: 'ok' }, done));
        } catch (e) {
          showMessage(error, e.message);
        } finally {
          button.disabled = false;
          poll.now();
        }
      };
      if (canRetry) {
        const retry = h('button', { type: 'button', class: 'button', id: 'retry-btn', 'data-testid': 'retry' }, 'Retry failed steps');
        retry.addEventListener('click', () => act(retry, `/v1/tickets/${encodeURIComponent(id)}/retry`, undefined, 'Retry requested.'));
        append(row, retry);
      }
      if (canCancel) {
        const reason = h('input', { id: 'cancel-reason', type: 'text', autocomplete: 'off', 'data-testid': 'cancel-reason', placeholder: 'Why (recorded in the audit trail)' });
        const cancel = h('button', { type: 'button', class: 'button danger', id: 'cancel-btn', 'data-testid': 'cancel' }, 'Cancel ticket');
        cancel.addEventListener('click', () => act(cancel, `/v1/tickets/${encodeURIComponent(id)}/cancel`, { reason: reason.value.trim() }, 'Cancelled.'));
        append(row, h('div', { class: 'field inline' }, h('label', { for: 'cancel-reason' }, 'Cancel reason'), reason), cancel);
      }
      ops = {
        key,
        el: h('section', { class: 'card operator', 'aria-labelledby': 'ops-title', 'data-testid': 'ticket-actions' },
          h('h2', { id: 'ops-title' }, 'Operator actions'), row, error),
      };
      replaceChildren(opsSlot, ops.el);
    }

    function renderSteps(t, trail, workflowSteps) {
      const names = orderedSteps(t, trail, workflowSteps);
      const running = names.some((n) => (t.steps[n].attempts || []).some((a) => a.ended_ms == null));
      // Re-render on change, or every refresh while a call runs (its clock ticks).
      if (!changed('steps', [t.steps, names, trail.length]) && !running) return;
      replaceChildren(stepsList, names.length
        ? names.map((n) => stepBlock(n, t.steps[n], approvalGroup(trail, n), openKeys))
        : h('li', { class: 'muted' }, 'This ticket has no steps.'));
    }

    // A relation names the other ticket; its subject and state come from
    // the list of tickets related to this one, which holds only those the
    // reader may see.
    async function renderRelated(t) {
      const links = t.links || [];
      relatedSection.hidden = links.length === 0;
      if (!links.length) return;
      let list;
      try {
        list = await api('GET', `/v1/tickets?related_to=${encodeURIComponent(id)}&limit=1000`);
      } catch (_) {
        return;
      }
      const byId = new Map(list.tickets.map((x) => [x.id, x]));
      const rows = links.filter((l) => byId.has(l.ticket)).map((l) => [l, byId.get(l.ticket)]);
      if (!changed('related', rows.map(([l, x]) => [l.rel, x.id, x.state]))) return;
      replaceChildren(relatedBody, rows.map(([l, x]) => h('tr', { 'data-testid': 'related-row', dataset: { rel: l.rel, id: x.id } },
        h('td', null, l.rel.replace('_', ' ')),
        h('td', null, h('a', { href: ticketHref(x.id), class: 'mono' }, x.id)),
        h('td', null, x.subject),
        h('td', null, x.workflow),
        h('td', null, badge(x.state)))));
    }

    function renderTrail(d) {
      const trail = d.trail || [];
      if (changed('trailStatus', [d.trail_verified, d.trail_error, trail.length, d.ticket.head])) {
        const verified = d.trail_verified === true;
        trailStatus.className = `trail-status ${verified ? 'verified' : 'broken'}`;
        trailStatus.dataset.verified = String(verified);
        trailStatus.setAttribute('role', verified ? 'status' : 'alert');
        replaceChildren(trailStatus,
          h('span', { class: 'trail-icon', 'aria-hidden': 'true' }, verified ? '✔' : '✖'),
          verified
            ? h('span', null, h('strong', null, 'Verified. '),
              `${trail.length} event${trail.length === 1 ? '' : 's'}; the hash chain is intact up to the head recorded with the ticket`,
              d.ticket.head && d.ticket.head.hash ? [' (', h('span', { class: 'mono', title: d.ticket.head.hash }, shortHash(d.ticket.head.hash)), ')'] : '', '.')
            : h('span', null, h('strong', null, 'Broken: this trail failed verification. '),
              h('span', { 'data-testid': 'trail-error' }, d.trail_error || 'no reason given')));
      }
      if (changed('trail', trail)) {
        replaceChildren(trailBody, trail.map((e) => trailRow(e, openKeys)));
      }
    }

    async function load() {
      let d;
      try {
        d = await api('GET', `/v1/tickets/${encodeURIComponent(id)}`);
      } catch (e) {
        if (!detail) {
          showMessage(loadError, e.message);
          title.textContent = e.status === 404 ? 'Ticket not found' : 'Cannot load ticket';
        }
        live.fail(e.message);
        return;
      }
      detail = d;
      showMessage(loadError, '');
      body.hidden = false;
      const t = d.ticket;
      const trail = d.trail || [];
      renderHead(t);
      renderMeta(t, d.sla, d.view);
      renderApproval(t, trail, d.rollback_plan);
      renderOps(t);
      renderSteps(t, trail, d.workflow_steps);
      await renderRelated(t);
      renderTrail(d);
      live.ok();
    }

    const poll = poller(load, () => {
      if (document.hidden) return 0;
      return detail && TERMINAL.has(detail.ticket.state) ? TICKET_REFRESH_DONE_MS : TICKET_REFRESH_MS;
    });
    const onVisible = () => { if (!document.hidden) poll.now(); };
    document.addEventListener('visibilitychange', onVisible);
    poll.now();
    return {
      stop() {
        poll.stop();
        document.removeEventListener('visibilitychange', onVisible);
      },
    };
  }

  // ---------------------------------------------------------------- start

  async function start() {
    $('signin-form').addEventListener('submit', onSignin);
    $('signout').addEventListener('click', () => signOut());
    window.addEventListener('hashchange', () => route(true));
    let token = null;
    try {
      token = sessionStorage.getItem(TOKEN_KEY);
    } catch (_) { /* storage disabled */ }
    // Back from the identity provider: the server put the access token in
    // the fragment (never sent to a server). Take it, and clear the address.
    if (location.hash.startsWith('#sso=')) {
      token = decodeURIComponent(location.hash.slice('#sso='.length));
      history.replaceState(null, '', `${location.pathname}#/tasks`);
    }
    if (!token) {
      showSignin();
      return;
    }
    try {
      const me = await api('GET', '/v1/me', undefined, token);
      signedIn(token, me);
      route(false);
    } catch (e) {
      if (e.status === 401) {
        try {
          sessionStorage.removeItem(TOKEN_KEY);
        } catch (_) { /* storage disabled */ }
        showSignin(`Please sign in again: ${e.message}`);
      } else {
        showSignin(e.message);
      }
    }
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
