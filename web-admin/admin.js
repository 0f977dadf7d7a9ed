// latch admin dashboard: vanilla JS, no inline script, no external resources. Every value from
// the server is put in the page as text (never as HTML). The session lives in an HttpOnly
// cookie; state-changing calls send the CSRF token the server gave at sign-in.
'use strict';
(() => {
  const state = { csrf: null, email: null, env: null, envs: [] };
  const $ = (sel) => document.querySelector(sel);
  const main = $('#main');

  // el('tag', {attrs}, ...children): text children are text nodes, never HTML
  function el(tag, attrs, ...kids) {
    const n = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'text') n.textContent = v;
      else if (k === 'class') n.className = v;
      else if (k.startsWith('on')) n.addEventListener(k.slice(2), v);
      else n.setAttribute(k, v === true ? '' : String(v));
    }
    for (const k of kids.flat()) if (k !== null && k !== undefined) n.append(k instanceof Node ? k : String(k));
    return n;
  }
  function announce(msg) { const a = $('#announce'); a.textContent = ''; setTimeout(() => { a.textContent = msg; }, 30); }
  function when(t) { return t ? new Date(t).toLocaleString() : '—'; }
  function field(id, label, input, hint) {
    if (hint) input.setAttribute('aria-describedby', id + '-hint');
    return el('div', { class: 'field' }, el('label', { for: id, text: label }), input,
      hint ? el('div', { class: 'hint', id: id + '-hint', text: hint }) : null);
  }
  function alertBox(kind, text, id) { return el('div', { class: 'alert alert-' + kind, role: kind === 'error' ? 'alert' : 'status', id, text }); }
  function badge(code, label) { return el('span', { class: 'badge st-' + code, text: label }); }

  class HttpError extends Error { constructor(status, body) { super((body && body.error && body.error.message) || ('HTTP ' + status)); this.status = status; this.body = body; } }
  async function call(method, path, body) {
    const h = { Accept: 'application/json' };
    if (body !== undefined) h['Content-Type'] = 'application/json';
    if (method !== 'GET' && state.csrf) h['X-CSRF-Token'] = state.csrf;
    const r = await fetch('/admin/api/' + path, { method, headers: h, credentials: 'same-origin', body: body === undefined ? undefined : JSON.stringify(body) });
    let json = null;
    try { json = await r.json(); } catch { /* empty */ }
    if (r.status === 401 && path !== 'login' && path !== 'session') { state.csrf = null; go('#/login'); throw new HttpError(401, json); }
    if (!r.ok) throw new HttpError(r.status, json);
    return json;
  }
  const envPath = (p) => 'envs/' + encodeURIComponent(state.env) + '/' + p;
  function errorText(e) {
    const errs = e.body && e.body.error && e.body.error.errors;
    if (Array.isArray(errs) && errs.length) return e.message + ': ' + errs.map((x) => (x.path || []).join('.') + ' ' + x.message).join('; ');
    return e.message;
  }

  function go(hash) { if (location.hash !== hash) location.hash = hash; else route(); }
  function page(title, ...kids) {
    main.replaceChildren(el('h1', { id: 'page-title', tabindex: '-1', text: title }), ...kids);
    document.title = title + ' · latch admin';
    for (const a of document.querySelectorAll('#nav a')) {
      if (location.hash.startsWith('#/' + a.dataset.page)) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    $('#page-title').focus();
  }

  // ---- sign in ----
  function loginPage(message) {
    $('#top').hidden = true;
    const err = el('div', { id: 'login-error' });
    const email = el('input', { id: 'email', type: 'email', autocomplete: 'username', required: true, spellcheck: 'false' });
    const pw = el('input', { id: 'password', type: 'password', autocomplete: 'current-password', required: true });
    const btn = el('button', { class: 'btn', type: 'submit', id: 'login-btn', text: 'Sign in' });
    const form = el('form', { class: 'stack', novalidate: true, onsubmit: async (ev) => {
      ev.preventDefault();
      err.replaceChildren();
      if (!email.value || !pw.value) { err.append(alertBox('error', 'Enter your email and password.')); return; }
      btn.disabled = true;
      try {
        const r = await call('POST', 'login', { email: email.value, password: pw.value });
        state.csrf = r.data.csrf_token; state.email = r.data.email;
        pw.value = '';
        await startApp();
      } catch (e) {
        err.append(alertBox('error', e.message));
        pw.value = '';
        pw.focus();
      } finally { btn.disabled = false; }
    } }, field('email', 'Email', email), field('password', 'Password', pw), err, el('div', { class: 'actions' }, btn));
    main.replaceChildren(el('div', { class: 'card login' },
      el('h1', { id: 'page-title', tabindex: '-1', text: 'Sign in to latch' }),
      message ? alertBox('info', message) : null, form,
      el('p', { class: 'hint', text: 'Accounts are made by an operator with: latch admin create <email>' })));
    document.title = 'Sign in · latch admin';
    email.focus();
  }

  async function startApp() {
    const envs = await call('GET', 'environments');
    state.envs = envs.data;
    const sel = $('#env');
    const keep = state.env;
    sel.replaceChildren(...state.envs.map((e) => el('option', { value: e.id, text: e.name })));
    state.env = keep && state.envs.some((e) => String(e.id) === String(keep)) ? keep : (state.envs[0] && state.envs[0].id);
    sel.value = state.env;
    $('#who').textContent = state.email || '';
    $('#top').hidden = false;
    if (!location.hash || location.hash === '#/login') go('#/connections'); else route();
  }

  // ---- connections ----
  async function connectionsPage(params) {
    const q = params.get('q') || '';
    const input = el('input', { id: 'search', type: 'search', value: q, placeholder: 'connection id, end user id or email' });
    const form = el('form', { role: 'search', class: 'row', onsubmit: (ev) => { ev.preventDefault(); go('#/connections?q=' + encodeURIComponent(input.value)); } },
      field('search', 'Search connections', input), el('button', { class: 'btn', type: 'submit', text: 'Search' }));
    const out = el('div', { id: 'connections' }, el('p', { class: 'muted', text: 'Loading…' }));
    page('Connections', el('div', { class: 'card' }, form), out);
    try {
      const r = await call('GET', envPath('connections' + (q ? '?q=' + encodeURIComponent(q) : '')));
      if (!r.data.length) { out.replaceChildren(el('p', { class: 'card', text: q ? 'No connection matches “' + q + '”.' : 'No connections yet. Create a connect link and send it to a customer.' })); return; }
      const rows = r.data.map((c) => el('tr', {},
        el('td', { 'data-label': 'Connection' }, el('a', { href: '#/connection?int=' + encodeURIComponent(c.provider_config_key) + '&id=' + encodeURIComponent(c.connection_id), class: 'mono', text: c.connection_id })),
        el('td', { 'data-label': 'Integration', text: c.provider_config_key }),
        el('td', { 'data-label': 'End user', text: c.end_user ? [c.end_user.display_name, c.end_user.email || c.end_user.id].filter(Boolean).join(' · ') : '—' }),
        el('td', { 'data-label': 'Status' }, badge(c.status, c.status_label)),
        el('td', { 'data-label': 'Last refresh', text: when(c.last_refresh) }),
        el('td', { 'data-label': 'Expires', text: when(c.expires_at) })));
      out.replaceChildren(el('div', { class: 'card table-wrap' }, el('table', { class: 'cards' },
        el('caption', { text: r.data.length + (r.has_more ? '+' : '') + ' connection' + (r.data.length === 1 ? '' : 's') }),
        el('thead', {}, el('tr', {}, ...['Connection', 'Integration', 'End user', 'Status', 'Last refresh', 'Expires'].map((t) => el('th', { scope: 'col', text: t })))),
        el('tbody', {}, rows))));
    } catch (e) { out.replaceChildren(alertBox('error', errorText(e))); }
  }

  async function connectionPage(params) {
    const key = params.get('int'); const id = params.get('id');
    const qs = 'integration=' + encodeURIComponent(key) + '&connection_id=' + encodeURIComponent(id);
    page('Connection ' + id, el('p', { class: 'muted', text: 'Loading…' }));
    let c;
    try { c = (await call('GET', envPath('connection?' + qs))).data; } catch (e) { main.append(alertBox('error', errorText(e))); return; }
    const err = c.last_error;
    const linkOut = el('div', { id: 'reconnect-out' });
    const facts = el('dl', { class: 'facts' },
      el('dt', { text: 'Status' }), el('dd', {}, badge(c.status, c.status_label)),
      el('dt', { text: 'Integration' }), el('dd', { text: c.provider_config_key + ' (' + c.provider + ')' }),
      el('dt', { text: 'End user' }), el('dd', { text: c.end_user ? [c.end_user.display_name, c.end_user.email, c.end_user.id].filter(Boolean).join(' · ') : '—' }),
      el('dt', { text: 'Token expires' }), el('dd', { text: when(c.expires_at) }),
      el('dt', { text: 'Last refresh' }), el('dd', { text: when(c.last_refresh) }),
      el('dt', { text: 'Last refresh failure' }), el('dd', { text: when(c.last_refresh_failure) }),
      el('dt', { text: 'Refresh attempts' }), el('dd', { text: String(c.refresh_attempts) }),
      el('dt', { text: 'Last used' }), el('dd', { text: when(c.last_fetched_at) }),
      el('dt', { text: 'Created' }), el('dd', { text: when(c.created_at) }));
    const history = el('div', { id: 'history' }, el('p', { class: 'muted', text: 'Loading…' }));
    main.replaceChildren(main.firstChild,
      el('section', { class: 'card', 'aria-labelledby': 'h-facts' }, el('h2', { id: 'h-facts', text: 'At a glance' }), facts),
      err ? el('section', { class: 'card', 'aria-labelledby': 'h-err' }, el('h2', { id: 'h-err', text: 'Last error' }),
        el('p', {}, el('strong', { text: err.type + (err.reason ? ' · ' + err.reason : '') })),
        el('pre', { id: 'last-error', text: err.description || '' })) : null,
      el('section', { class: 'card', 'aria-labelledby': 'h-hist' }, el('h2', { id: 'h-hist', text: 'History' }), history),
      el('section', { class: 'card', 'aria-labelledby': 'h-meta' }, el('h2', { id: 'h-meta', text: 'Metadata' }),
        el('pre', { id: 'metadata', text: JSON.stringify(c.metadata, null, 2) }),
        el('h2', { text: 'Connection configuration' }), el('pre', { text: JSON.stringify(c.connection_config, null, 2) })),
      el('section', { class: 'card', 'aria-labelledby': 'h-act' }, el('h2', { id: 'h-act', text: 'Actions' }),
        el('div', { class: 'actions' },
          el('button', { class: 'btn', type: 'button', id: 'reconnect-btn', text: 'Create a reconnect link', onclick: async () => {
            linkOut.replaceChildren();
            try {
              const r = await call('POST', envPath('connect-links'), { integration: key, connection_id: id });
              linkOut.replaceChildren(linkResult(r.data));
            } catch (e) { linkOut.replaceChildren(alertBox('error', errorText(e))); }
          } }),
          el('button', { class: 'btn btn-danger', type: 'button', id: 'delete-btn', text: 'Delete connection', onclick: async () => {
            if (!confirm('Delete connection ' + id + '? Its credentials are removed; the customer must link again.')) return;
            try { await call('DELETE', envPath('connection?' + qs)); announce('Connection deleted.'); go('#/connections'); } catch (e) { linkOut.replaceChildren(alertBox('error', errorText(e))); }
          } })), linkOut));
    $('#page-title').focus();
    try {
      const h = await call('GET', envPath('connection/history?' + qs));
      history.replaceChildren(opsTable(h.data, 'History of this connection'));
    } catch (e) {
      history.replaceChildren(alertBox('error', errorText(e)));
    }
  }

  // One line of an operation's kind-specific details (GET /latch/operations, docs/api.md).
  function opDetail(o) {
    const d = o.details || {};
    const parts = [];
    if (d.what) parts.push(d.what + (d.actor ? ' by ' + d.actor : ''));
    if (d.method) parts.push(d.method + ' ' + (d.endpoint || ''));
    if (d.upstream_status !== undefined) parts.push('upstream ' + d.upstream_status);
    if (d.refreshed_after_401) parts.push('refreshed after 401');
    if (d.why) parts.push('why ' + d.why);
    if (d.reason) parts.push('reason ' + d.reason);
    if (d.terminal) parts.push('terminal');
    if (d.type) parts.push(d.type + (d.operation ? '/' + d.operation : ''));
    if (d.status !== undefined) parts.push('status ' + d.status);
    if (d.attempt !== undefined) parts.push('attempt ' + d.attempt);
    return parts.join(' · ');
  }

  // ops: rows of GET /latch/operations (struct store_op): id, started_at, kind, outcome, error,
  // integration, provider, connection_id, end_user_id, duration_ms, details.
  function opsTable(ops, caption, withConnection) {
    if (!ops.length) return el('p', { class: 'muted', text: 'Nothing recorded yet.' });
    const cols = ['Time', 'Kind', 'Outcome', 'Error'].concat(withConnection ? ['Connection'] : [], ['Duration', 'Detail']);
    return el('div', { class: 'table-wrap' }, el('table', { class: 'cards' }, el('caption', { text: caption }),
      el('thead', {}, el('tr', {}, ...cols.map((t) => el('th', { scope: 'col', text: t })))),
      el('tbody', {}, ops.map((o) => el('tr', { 'data-op': o.id },
        el('td', { 'data-label': 'Time', text: when(o.started_at) }),
        el('td', { 'data-label': 'Kind', text: o.kind }),
        el('td', { 'data-label': 'Outcome' }, badge(o.outcome, o.outcome)),
        el('td', { 'data-label': 'Error', class: 'mono', text: o.error || '—' }),
        withConnection ? el('td', { 'data-label': 'Connection', class: 'mono', text: [o.integration, o.connection_id].filter(Boolean).join(' / ') || '—' }) : null,
        el('td', { 'data-label': 'Duration', text: o.duration_ms + ' ms' }),
        el('td', { 'data-label': 'Detail', class: 'mono', text: opDetail(o) }))))));
  }

  function linkResult(d) {
    return el('div', { class: 'alert alert-ok', role: 'status' },
      el('p', { text: 'Send this link to the customer. It works once and expires at ' + when(d.expires_at) + '.' }),
      el('label', { for: 'link-value', text: 'Connect link' }),
      el('input', { id: 'link-value', type: 'text', readonly: true, class: 'mono', value: d.connect_link }));
  }

  // ---- integrations ----
  async function integrationsPage() {
    const list = el('div', { id: 'integrations' });
    const provSel = el('select', { id: 'new-provider', required: true });
    const key = el('input', { id: 'new-key', type: 'text', required: true, spellcheck: 'false', autocomplete: 'off' });
    const name = el('input', { id: 'new-name', type: 'text', autocomplete: 'off' });
    const msg = el('div', { id: 'int-msg' });
    const form = el('form', { class: 'stack', onsubmit: async (ev) => {
      ev.preventDefault(); msg.replaceChildren();
      try {
        const body = { unique_key: key.value.trim(), provider: provSel.value };
        if (name.value.trim()) body.display_name = name.value.trim();
        await call('POST', envPath('integrations'), body);
        msg.append(alertBox('ok', 'Integration ' + body.unique_key + ' created.'));
        key.value = ''; name.value = '';
        await load();
      } catch (e) { msg.append(alertBox('error', errorText(e))); }
    } }, el('div', { class: 'row' }, field('new-provider', 'Provider', provSel), field('new-key', 'Unique key', key, 'Your name for it in API calls, e.g. ninjaone'), field('new-name', 'Display name (optional)', name)),
    el('div', { class: 'actions' }, el('button', { class: 'btn', type: 'submit', id: 'create-int', text: 'Create integration' })), msg);
    page('Integrations', list, el('section', { class: 'card', 'aria-labelledby': 'h-new' }, el('h2', { id: 'h-new', text: 'New integration' }), form));
    try {
      const p = await call('GET', 'providers');
      provSel.replaceChildren(...p.data.map((x) => el('option', { value: x.name, text: x.display_name + ' (' + x.name + ')' })));
    } catch (e) { msg.append(alertBox('error', errorText(e))); }
    async function load() {
      try {
        const r = await call('GET', envPath('integrations'));
        if (!r.data.length) { list.replaceChildren(el('p', { class: 'card', text: 'No integrations yet.' })); return; }
        list.replaceChildren(el('div', { class: 'card table-wrap' }, el('table', { class: 'cards' }, el('caption', { text: 'Integrations' }),
          el('thead', {}, el('tr', {}, ...['Unique key', 'Provider', 'Display name', 'Created', 'Actions'].map((t) => el('th', { scope: 'col', text: t })))),
          el('tbody', {}, r.data.map((i) => el('tr', {},
            el('td', { 'data-label': 'Unique key', class: 'mono', text: i.unique_key }),
            el('td', { 'data-label': 'Provider', text: i.provider_name }),
            el('td', { 'data-label': 'Display name', text: i.display_name || '—' }),
            el('td', { 'data-label': 'Created', text: when(i.created_at) }),
            el('td', { 'data-label': 'Actions' }, el('div', { class: 'actions' },
              el('button', { class: 'btn btn-quiet', type: 'button', 'aria-label': 'Rename ' + i.unique_key, text: 'Rename', onclick: async () => {
                const dn = prompt('Display name for ' + i.unique_key, i.display_name || '');
                if (dn === null) return;
                try { await call('PATCH', envPath('integrations/' + encodeURIComponent(i.unique_key)), { display_name: dn }); announce('Saved.'); await load(); } catch (e) { msg.replaceChildren(alertBox('error', errorText(e))); }
              } }),
              el('button', { class: 'btn btn-danger', type: 'button', 'aria-label': 'Delete ' + i.unique_key, text: 'Delete', onclick: async () => {
                if (!confirm('Delete integration ' + i.unique_key + ' and all its connections?')) return;
                try { await call('DELETE', envPath('integrations/' + encodeURIComponent(i.unique_key))); announce('Integration deleted.'); await load(); } catch (e) { msg.replaceChildren(alertBox('error', errorText(e))); }
              } })))))))));
      } catch (e) { list.replaceChildren(alertBox('error', errorText(e))); }
    }
    await load();
  }

  // ---- connect link ----
  async function linkPage() {
    const sel = el('select', { id: 'link-int', required: true });
    const uid = el('input', { id: 'link-user', type: 'text', required: true, autocomplete: 'off' });
    const mail = el('input', { id: 'link-email', type: 'email', autocomplete: 'off' });
    const dn = el('input', { id: 'link-name', type: 'text', autocomplete: 'off' });
    const out = el('div', { id: 'link-out' });
    page('Create a connect link', el('div', { class: 'card' }, el('p', { class: 'muted', text: 'A link your customer opens to connect their account. It is valid for 30 minutes.' }),
      el('form', { class: 'stack', onsubmit: async (ev) => {
        ev.preventDefault(); out.replaceChildren();
        try {
          const r = await call('POST', envPath('connect-links'), { integration: sel.value, end_user_id: uid.value.trim(), end_user_email: mail.value.trim(), display_name: dn.value.trim() });
          out.append(linkResult(r.data));
        } catch (e) { out.append(alertBox('error', errorText(e))); }
      } }, field('link-int', 'Integration', sel), el('div', { class: 'row' }, field('link-user', 'End user id', uid, 'Your id for this customer'), field('link-email', 'End user email (optional)', mail), field('link-name', 'Display name (optional)', dn)),
      el('div', { class: 'actions' }, el('button', { class: 'btn', type: 'submit', id: 'link-btn', text: 'Create link' })), out)));
    try {
      const r = await call('GET', envPath('integrations'));
      sel.replaceChildren(...r.data.map((i) => el('option', { value: i.unique_key, text: i.unique_key + ' · ' + i.provider_name })));
      if (!r.data.length) out.append(alertBox('info', 'Create an integration first.'));
    } catch (e) { out.append(alertBox('error', errorText(e))); }
  }

  // ---- operations log ----
  async function logPage(params) {
    const opt = (v, t) => el('option', { value: v, text: t });
    const kind = el('select', { id: 'f-kind' }, opt('', 'Any'),
      ...['link', 'reconnect', 'refresh', 'proxy', 'webhook', 'management'].map((k) => opt(k, k)));
    const outcome = el('select', { id: 'f-outcome' }, opt('', 'Any'), opt('success', 'success'), opt('failure', 'failure'));
    const integ = el('input', { id: 'f-integration', type: 'text', value: params.get('integration') || '', spellcheck: 'false' });
    const conn = el('input', { id: 'f-connection', type: 'text', value: params.get('connection_id') || '', spellcheck: 'false' });
    kind.value = params.get('kind') || '';
    outcome.value = params.get('outcome') || '';
    const out = el('div', { id: 'ops' }, el('p', { class: 'muted', text: 'Loading…' }));
    const filters = () => {
      const q = new URLSearchParams();
      if (kind.value) q.set('kind', kind.value);
      if (outcome.value) q.set('outcome', outcome.value);
      if (integ.value) q.set('integration', integ.value);
      if (conn.value) q.set('connection_id', conn.value);
      return q;
    };
    page('Operations log', el('div', { class: 'card' }, el('form', { class: 'row', onsubmit: (ev) => {
      ev.preventDefault(); const q = filters(); go('#/log' + (q.size ? '?' + q : ''));
    } }, field('f-kind', 'Kind', kind), field('f-outcome', 'Outcome', outcome), field('f-integration', 'Integration', integ),
    field('f-connection', 'Connection id', conn), el('button', { class: 'btn', type: 'submit', text: 'Filter' }))), out);
    try {
      const q = filters();
      if (params.get('cursor')) q.set('cursor', params.get('cursor'));
      const r = await call('GET', envPath('operations' + (q.size ? '?' + q : '')));
      const next = filters();
      if (r.next_cursor) next.set('cursor', r.next_cursor);
      out.replaceChildren(el('div', { class: 'card' }, opsTable(r.data, 'Operations, newest first', true),
        r.next_cursor ? el('p', {}, el('a', { id: 'ops-older', href: '#/log?' + next, text: 'Older operations' })) : null));
    } catch (e) {
      out.replaceChildren(alertBox('error', errorText(e)));
    }
  }

  // ---- settings ----
  async function settingsPage() {
    page('Environment settings', el('p', { class: 'muted', text: 'Loading…' }));
    let s;
    try { s = (await call('GET', envPath('settings'))).data; } catch (e) { main.append(alertBox('error', errorText(e))); return; }
    const url1 = el('input', { id: 'wh-url', type: 'url', value: s.webhook_url || '', spellcheck: 'false' });
    const url2 = el('input', { id: 'wh-url2', type: 'url', value: s.webhook_url_secondary || '', spellcheck: 'false' });
    const onCreate = el('input', { id: 'wh-create', type: 'checkbox', checked: s.on_auth_creation });
    const onErr = el('input', { id: 'wh-err', type: 'checkbox', checked: s.on_auth_refresh_error });
    const whMsg = el('div', { id: 'wh-msg' });
    const testOut = el('div', { id: 'wh-test-out' });
    const keysOut = el('div', { id: 'keys' });
    const keyMsg = el('div', { id: 'key-msg' });
    const label = el('input', { id: 'key-label', type: 'text', required: true, autocomplete: 'off' });
    main.replaceChildren(main.firstChild,
      el('section', { class: 'card', 'aria-labelledby': 'h-wh' }, el('h2', { id: 'h-wh', text: 'Webhooks' }),
        el('form', { class: 'stack', onsubmit: async (ev) => {
          ev.preventDefault(); whMsg.replaceChildren();
          try {
            await call('PATCH', envPath('settings'), { webhook_url: url1.value.trim(), webhook_url_secondary: url2.value.trim(), on_auth_creation: onCreate.checked, on_auth_refresh_error: onErr.checked });
            whMsg.append(alertBox('ok', 'Webhook settings saved.'));
          } catch (e) { whMsg.append(alertBox('error', errorText(e))); }
        } }, field('wh-url', 'Webhook URL', url1), field('wh-url2', 'Secondary webhook URL (optional)', url2),
        el('div', { class: 'check' }, onCreate, el('label', { for: 'wh-create', text: 'Send auth webhooks when a connection is created' })),
        el('div', { class: 'check' }, onErr, el('label', { for: 'wh-err', text: 'Send auth webhooks when a refresh fails' })),
        el('div', { class: 'actions' }, el('button', { class: 'btn', type: 'submit', id: 'wh-save', text: 'Save webhooks' }),
          el('button', { class: 'btn btn-quiet', type: 'button', id: 'wh-test', text: 'Send a test webhook', onclick: async (ev) => {
            const b = ev.currentTarget; b.disabled = true; testOut.replaceChildren(el('p', { class: 'muted', text: 'Sending…' }));
            try {
              const r = await call('POST', envPath('webhook-test'));
              testOut.replaceChildren(...r.data.map((x) => alertBox(x.ok ? 'ok' : 'error',
                (x.which === 'primary' ? 'Primary' : 'Secondary') + ' ' + x.url + ': ' + (x.status ? 'HTTP ' + x.status : 'no answer') + (x.error ? ' (' + x.error + ')' : '') + ' in ' + x.duration_ms + ' ms')));
            } catch (e) { testOut.replaceChildren(alertBox('error', errorText(e))); }
            b.disabled = false;
          } })), whMsg, testOut),
        el('h2', { text: 'Webhook signing key' }),
        el('p', {}, 'Fingerprint (SHA-256, first 16 hex digits): ', el('span', { class: 'mono', id: 'wh-fp', text: s.webhook_signing_key_fingerprint || '—' })),
        el('p', { class: 'hint', text: 'The key itself is never shown here. An operator prints it with: latch env webhook-key ' + s.name })),
      el('section', { class: 'card', 'aria-labelledby': 'h-keys' }, el('h2', { id: 'h-keys', text: 'API secret keys' }), keysOut,
        el('form', { class: 'row', onsubmit: async (ev) => {
          ev.preventDefault(); keyMsg.replaceChildren();
          try {
            const r = await call('POST', envPath('api-keys'), { label: label.value.trim() });
            label.value = '';
            keyMsg.append(el('div', { class: 'alert alert-info secret-once', role: 'status' },
              el('p', {}, el('strong', { text: 'Copy this key now: it is shown only once.' })),
              el('label', { for: 'new-key-value', text: 'New secret key (' + r.data.label + ')' }),
              el('input', { id: 'new-key-value', type: 'text', readonly: true, class: 'mono', value: r.data.secret_key })));
            await loadKeys();
          } catch (e) { keyMsg.append(alertBox('error', errorText(e))); }
        } }, field('key-label', 'Label for a new key', label), el('button', { class: 'btn', type: 'submit', id: 'key-create', text: 'Create key' })), keyMsg));
    $('#page-title').focus();
    async function loadKeys() {
      try {
        const r = await call('GET', envPath('api-keys'));
        keysOut.replaceChildren(el('div', { class: 'table-wrap' }, el('table', { class: 'cards' }, el('caption', { text: 'Keys of this environment' }),
          el('thead', {}, el('tr', {}, ...['Label', 'Created', 'State', 'Actions'].map((t) => el('th', { scope: 'col', text: t })))),
          el('tbody', {}, r.data.map((k) => el('tr', {},
            el('td', { 'data-label': 'Label', text: k.label || '—' }),
            el('td', { 'data-label': 'Created', text: when(k.created_at) }),
            el('td', { 'data-label': 'State', text: k.active ? 'Active' : 'Revoked ' + when(k.revoked_at) }),
            el('td', { 'data-label': 'Actions' }, k.active ? el('div', { class: 'actions' },
              el('button', { class: 'btn btn-quiet', type: 'button', 'aria-label': 'Relabel key ' + (k.label || k.id), text: 'Relabel', onclick: async () => {
                const l = prompt('New label', k.label || ''); if (!l) return;
                try { await call('PATCH', envPath('api-keys/' + k.id), { label: l }); await loadKeys(); } catch (e) { keyMsg.replaceChildren(alertBox('error', errorText(e))); }
              } }),
              el('button', { class: 'btn btn-danger', type: 'button', 'aria-label': 'Revoke key ' + (k.label || k.id), text: 'Revoke', onclick: async () => {
                if (!confirm('Revoke key ' + (k.label || k.id) + '? Backends using it stop working within seconds.')) return;
                try { await call('DELETE', envPath('api-keys/' + k.id)); announce('Key revoked.'); await loadKeys(); } catch (e) { keyMsg.replaceChildren(alertBox('error', errorText(e))); }
              } })) : '—')))))));
      } catch (e) { keysOut.replaceChildren(alertBox('error', errorText(e))); }
    }
    await loadKeys();
  }

  // ---- routing ----
  async function route() {
    const h = location.hash || '#/connections';
    const [p, qs] = h.slice(2).split('?');
    const params = new URLSearchParams(qs || '');
    if (p === 'login' || !state.csrf) {
      if (!state.csrf) {
        try { const s = await call('GET', 'session'); state.csrf = s.data.csrf_token; state.email = s.data.email; await startApp(); return; } catch { /* not signed in */ }
      }
      loginPage(); return;
    }
    try {
      if (p === 'connections') await connectionsPage(params);
      else if (p === 'connection') await connectionPage(params);
      else if (p === 'integrations') await integrationsPage();
      else if (p === 'link') await linkPage();
      else if (p === 'log') await logPage(params);
      else if (p === 'settings') await settingsPage();
      else go('#/connections');
    } catch (e) { if (e.status !== 401) main.append(alertBox('error', errorText(e))); }
  }

  window.addEventListener('hashchange', route);
  document.addEventListener('DOMContentLoaded', () => {
    $('#env').addEventListener('change', (ev) => { state.env = ev.target.value; route(); });
    $('#logout').addEventListener('click', async () => {
      try { await call('POST', 'logout'); } catch { /* signed out anyway */ }
      state.csrf = null; state.email = null;
      location.hash = '#/login';
      loginPage('You are signed out.');
    });
    route();
  });
})();
