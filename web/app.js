/*
 * latch Connect UI.
 *
 * Speaks the protocol of Nango's Connect UI so that @nangohq/frontend's openConnectUI() works
 * unchanged:
 *   - embedded (iframe): post {type:'ready'} to the parent, receive {type:'session_token', sessionToken};
 *   - connect link (top level): ?session_token=<token>;
 *   - ?apiURL= (default: this page's origin), ?theme=light|dark|system;
 *   - events to the parent: {type:'connect', payload:{providerConfigKey, connectionId}},
 *     {type:'error', payload:{errorType, errorMessage}}, {type:'close'}.
 * The form is built from the provider definition (GET /providers/:provider); the submit call is
 * the one @nangohq/frontend makes (POST /oauth2/auth/:key?connect_session_token=..&params[..]=..,
 * credentials in the JSON body, never in the URL).
 * OAUTH2 (authorization code): a "Connect with <Provider>" button opens the popup at
 * GET /oauth/connect/:key?connect_session_token=..&params[..]=.. (window.open in the click
 * itself, so no popup blocker objects); latch's callback page posts
 * {source:'latch', type:'oauth_result', success, providerConfigKey, connectionId, error:{type,
 * message}} back here (only messages from the API's origin and that window count); a popup
 * closed without a result or blocked by the browser is said in words.
 *
 * No framework, no build step, no inline script or style (CSP script-src/style-src 'self').
 * Server-supplied text is only ever set with textContent.
 */
'use strict';

(function () {
  // ---------------------------------------------------------------------------------------------
  // Static data

  // Titles for credential fields that providers.yaml usually leaves undescribed (as Nango's UI does).
  const BASE_FIELDS = {
    client_id: { title: 'Client ID' },
    client_secret: { title: 'Client Secret', secret: true },
    client_certificate: { title: 'Client Certificate', secret: true },
    client_private_key: { title: 'Private Key', secret: true },
    apiKey: { title: 'API Key', secret: true },
    username: { title: 'User Name' },
    password: { title: 'Password', secret: true }
  };

  // Auth modes this page can complete, the credential fields they always have, and the route
  // @nangohq/frontend posts them to.
  const AUTH_MODES = {
    OAUTH2_CC: { base: ['client_id', 'client_secret'], route: '/oauth2/auth/',
      body: ['client_id', 'client_secret', 'client_certificate', 'client_private_key'] },
    API_KEY: { base: ['apiKey'], route: '/api-auth/api-key/', body: ['apiKey'] },
    BASIC: { base: ['username', 'password'], route: '/api-auth/basic/', body: ['username', 'password'] },
    OAUTH2: { base: [], route: '/oauth/connect/', body: [], popup: true }
  };

  // The OAuth popup: its size, how often we look whether the user closed it, and how long a
  // closed popup's result may still take to arrive.
  const POPUP_FEATURES = 'popup=yes,width=600,height=720';
  const POPUP_POLL_MS = 500;
  const POPUP_CLOSED_GRACE_MS = 1500;

  // Optional per-provider help, used when the provider definition has no `connect_guide` of its
  // own. Shape: {intro, steps[], app_location, scopes}. Text only: rendered with textContent,
  // except that **bold** marks are turned into <strong>.
  const GUIDES = {
    'ninjaone-rmm': {
      intro: 'You need an API client app in NinjaOne. Only a NinjaOne system administrator can create one.',
      steps: [
        'In NinjaOne, go to **Administration > Apps > API > Client App IDs** and click **Add**.',
        'Set Application platform to **API Services (machine-to-machine)**.',
        'Tick the scopes **Monitoring** and **Management** (add **Control** only if you need remote access), and the allowed grant type **Client Credentials**.',
        'Save, then copy the **Client ID** and **Client Secret**. The secret is shown only once.'
      ],
      app_location: 'Administration > Apps > API',
      scopes: 'Monitoring and Management (and Control if you need remote access)'
    },
    'ninjaone-rmm-oauth2': {
      intro: 'You will sign in to NinjaOne in a new window and allow this app to access your NinjaOne account. Your NinjaOne password is never shared with this page.',
      steps: [
        'Choose your **Instance**: the address in your browser\u2019s address bar when you are signed in to NinjaOne (for example eu.ninjarmm.com).',
        'Press the **Connect with** button below and sign in to NinjaOne in the window that opens.',
        'Review the requested access (**Monitoring**, **Management**, **Control** and **Offline access**, so the connection keeps working) and click **Allow**.'
      ]
    }
  };

  const NO_TOKEN_TIMEOUT_MS = 10000;
  const TYPE_DEBOUNCE_MS = 450;

  // ---------------------------------------------------------------------------------------------
  // Small helpers

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    if (attrs) {
      for (const k of Object.keys(attrs)) {
        const v = attrs[k];
        if (v === undefined || v === null || v === false) continue;
        if (k === 'text') node.textContent = v;
        else if (k === 'class') node.className = v;
        else if (k === 'style') throw new Error('no inline styles (CSP)');
        else node.setAttribute(k, v === true ? '' : String(v));
      }
    }
    for (const c of children || []) if (c) node.append(c);
    return node;
  }

  // Renders "a **b** c" as text with <strong> runs; never parses HTML.
  function richText(node, text) {
    node.textContent = '';
    String(text).split(/\*\*/).forEach((part, i) => {
      if (!part) return;
      node.append(i % 2 ? el('strong', { text: part }) : document.createTextNode(part));
    });
    return node;
  }

  function str(v) { return typeof v === 'string' ? v : v === undefined || v === null ? '' : String(v); }

  function safeHttpUrl(u) {
    try {
      const url = new URL(String(u), location.href);
      return url.protocol === 'https:' || url.protocol === 'http:' ? url.href : null;
    } catch { return null; }
  }

  function isEmbedded() {
    try { return window.self !== window.top; } catch { return true; }
  }

  // ---------------------------------------------------------------------------------------------
  // State

  const query = new URLSearchParams(location.search);
  const embedded = isEmbedded();

  const state = {
    token: null,
    apiURL: resolveApiURL(query.get('apiURL')),
    themeOverride: validTheme(query.get('theme')),
    session: null,
    integrations: [],
    integration: null,
    provider: null,
    mode: null,
    fields: [],
    single: false,
    submitting: false,
    done: false,
    loadSeq: 0,
    settings: null,
    guide: null,
    popup: null
  };

  function resolveApiURL(v) {
    // Only http(s). The page's CSP (connect-src) is what limits where requests may go.
    const u = v ? safeHttpUrl(v) : null;
    return (u || location.origin).replace(/\/+$/, '');
  }

  function validTheme(t) { return t === 'light' || t === 'dark' || t === 'system' ? t : null; }

  // ---------------------------------------------------------------------------------------------
  // Parent window messaging

  function post(msg) {
    if (!embedded) return;
    try { window.parent.postMessage(msg, '*'); } catch { /* parent gone */ }
  }

  function close() {
    post({ type: 'close' });
  }

  window.addEventListener('message', (evt) => {
    if (evt.source !== window.parent || evt.source === window) return;
    const d = evt.data;
    if (!d || typeof d !== 'object' || typeof d.type !== 'string') return;
    if (d.type === 'session_token' && typeof d.sessionToken === 'string' && d.sessionToken) {
      if (d.sessionToken === state.token || state.done || state.submitting) return;
      start(d.sessionToken);
    }
  });

  // ---------------------------------------------------------------------------------------------
  // Theme

  const darkQuery = window.matchMedia ? window.matchMedia('(prefers-color-scheme: dark)') : null;

  function applyTheme() {
    const root = document.documentElement;
    const defaultTheme = state.settings && validTheme(state.settings.defaultTheme);
    const mode = state.themeOverride || defaultTheme || 'system';
    if (mode === 'light' || mode === 'dark') root.dataset.theme = mode;
    else delete root.dataset.theme;
    applyAccent();
  }

  function effectiveScheme() {
    const t = document.documentElement.dataset.theme;
    if (t === 'light' || t === 'dark') return t;
    return darkQuery && darkQuery.matches ? 'dark' : 'light';
  }

  // connectUISettings.theme.{light,dark}.primary -> the accent colour (CSSOM: allowed by the CSP).
  function applyAccent() {
    const root = document.documentElement;
    const theme = state.settings && state.settings.theme;
    const c = theme && theme[effectiveScheme()] && theme[effectiveScheme()].primary;
    const rgb = parseHex(c);
    for (const v of ['--accent', '--on-accent', '--ring', '--link']) root.style.removeProperty(v);
    if (!rgb) return;
    root.style.setProperty('--accent', c);
    // Pick the readable text colour for buttons on the accent.
    root.style.setProperty('--on-accent', contrast(rgb, [255, 255, 255]) >= contrast(rgb, [17, 24, 39]) ? '#ffffff' : '#111827');
    // Use the brand colour for focus rings and links only where it stays readable on the card
    // (WCAG: 3:1 for the ring, 4.5:1 for link text); otherwise keep the built-in colours.
    const card = effectiveScheme() === 'dark' ? [22, 26, 34] : [255, 255, 255];
    if (contrast(rgb, card) >= 3) root.style.setProperty('--ring', c);
    if (contrast(rgb, card) >= 4.5) root.style.setProperty('--link', c);
  }

  function parseHex(c) {
    if (typeof c !== 'string') return null;
    const m = /^#([0-9a-f]{3}|[0-9a-f]{6})$/i.exec(c.trim());
    if (!m) return null;
    let h = m[1];
    if (h.length === 3) h = h.split('').map((x) => x + x).join('');
    return [0, 2, 4].map((i) => parseInt(h.slice(i, i + 2), 16));
  }

  function luminance(rgb) {
    const [r, g, b] = rgb.map((v) => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  }

  function contrast(a, b) {
    const la = luminance(a), lb = luminance(b);
    return (Math.max(la, lb) + 0.05) / (Math.min(la, lb) + 0.05);
  }

  if (darkQuery) {
    const onChange = () => applyAccent();
    if (darkQuery.addEventListener) darkQuery.addEventListener('change', onChange);
    else if (darkQuery.addListener) darkQuery.addListener(onChange);
  }

  // ---------------------------------------------------------------------------------------------
  // Views

  const VIEWS = ['loading', 'fatal', 'list', 'form', 'success'];

  function showView(name) {
    for (const v of VIEWS) $('view-' + v).hidden = v !== name;
    $('card').setAttribute('aria-busy', name === 'loading' ? 'true' : 'false');
    $('back-btn').hidden = !(name === 'form' && !state.single && state.integrations.length > 1);
    $('close-btn').hidden = !embedded;
    $('card-bar').hidden = $('back-btn').hidden && $('close-btn').hidden;
    updateHelpLink(name);
  }

  function announce(text) {
    const s = $('status');
    s.textContent = '';
    // A fresh text node after a tick makes screen readers announce repeated messages too.
    setTimeout(() => { s.textContent = text; }, 30);
  }

  function focusEl(node) {
    if (!node) return;
    try { node.focus({ preventScroll: false }); } catch { node.focus(); }
  }

  function showLoading(text) {
    $('loading-text').textContent = text || 'Loading…';
    showView('loading');
  }

  function showFatal(title, text, opts) {
    opts = opts || {};
    document.title = title;
    $('fatal-title').textContent = title;
    $('fatal-text').textContent = text;
    const retry = $('fatal-retry');
    retry.hidden = !opts.retry;
    retry.onclick = opts.retry || null;
    showView('fatal');
    announce(title + '. ' + text);
    focusEl($('fatal-title'));
  }

  function showExpired() {
    showFatal('This link has expired',
      'For your security, connection links only work for a short time. Ask the person who sent it to you for a new link.');
    post({ type: 'error', payload: { errorType: 'missing_connect_session_token', errorMessage: 'The connect session has expired or is not valid.' } });
  }

  function updateHelpLink(view) {
    const url = view === 'form' || view === 'success' ? docsConnect() : null;
    const safe = url ? safeHttpUrl(url) : null;
    $('help-row').hidden = !(safe && view === 'form');
    if (safe) $('help-link').href = safe;
  }

  // ---------------------------------------------------------------------------------------------
  // API

  class ApiError extends Error {
    constructor(status, code, message, body, headers) {
      super(message || code || ('HTTP ' + status));
      this.status = status;
      this.code = code || null;
      this.body = body || null;
      this.headers = headers || null;
    }
  }

  async function readJson(res) {
    try { return await res.json(); } catch { return null; }
  }

  function toApiError(res, body) {
    const e = body && typeof body === 'object' && body.error && typeof body.error === 'object' ? body.error : null;
    return new ApiError(res.status, e && str(e.code), e && str(e.message), e, res.headers);
  }

  async function apiGet(path) {
    let res;
    try {
      res = await fetch(state.apiURL + path, {
        headers: { Authorization: 'Bearer ' + state.token, Accept: 'application/json' },
        credentials: 'omit',
        cache: 'no-store'
      });
    } catch (err) {
      throw new ApiError(0, 'network_error', 'Could not reach the server.');
    }
    const body = await readJson(res);
    if (!res.ok || !body || body.error) throw toApiError(res, body);
    return body;
  }

  function isSessionError(e) {
    return e instanceof ApiError && (e.status === 401 ||
      e.code === 'unknown_connect_session_token' || e.code === 'invalid_connect_session_token_format');
  }

  // ---------------------------------------------------------------------------------------------
  // Start: session + integrations

  async function start(token) {
    state.token = token;
    state.integration = null;
    state.provider = null;
    const seq = ++state.loadSeq;
    showLoading();
    announce('Loading');
    try {
      const [sess, ints] = await Promise.all([apiGet('/connect/session'), apiGet('/integrations')]);
      if (seq !== state.loadSeq) return;
      state.session = (sess && sess.data) || {};
      state.settings = state.session.connectUISettings || null;
      applyTheme();
      $('watermark').hidden = !(state.settings && state.settings.showWatermark !== false);

      // latch's extension: an integration whose provider this latch cannot link is never offered
      let list = Array.isArray(ints && ints.data)
        ? ints.data.filter((i) => i && typeof i.unique_key === 'string' && !(i.latch && i.latch.linkable === false))
        : [];
      const allowed = state.session.allowed_integrations;
      if (Array.isArray(allowed) && allowed.length > 0) list = list.filter((i) => allowed.includes(i.unique_key));
      state.integrations = list;

      if (list.length === 0) {
        showFatal('Nothing to connect', 'This link does not allow connecting any app. Ask the person who sent it to you for a new link.');
        return;
      }
      if (list.length === 1) {
        state.single = true;
        await openIntegration(list[0], seq);
        return;
      }
      state.single = false;
      renderList();
    } catch (e) {
      if (seq !== state.loadSeq) return;
      handleLoadError(e);
    }
  }

  function handleLoadError(e) {
    if (isSessionError(e)) { showExpired(); return; }
    if (e instanceof ApiError && e.status === 0) {
      showFatal('Can\u2019t reach the server', 'Check your internet connection and try again.', { retry: () => start(state.token) });
      return;
    }
    if (e instanceof ApiError && e.status === 429) {
      showFatal('Too many attempts', 'Please wait a minute, then try again.', { retry: () => start(state.token) });
      return;
    }
    showFatal('Something went wrong', (humanMessage(e) || 'This page could not be loaded.') + ' Try again in a moment.',
      { retry: () => start(state.token) });
  }

  // ---------------------------------------------------------------------------------------------
  // Integration list

  function logoFor(integration, provider, cls) {
    const name = displayName(integration, provider);
    const box = el('span', { class: 'logo ' + (cls || '') });
    const url = integration && integration.logo ? safeHttpUrl(integration.logo) : null;
    const initial = () => {
      box.textContent = (name.trim()[0] || '?').toUpperCase();
      box.classList.add('logo-initial');
    };
    if (url) {
      const img = el('img', { alt: '', src: url, width: 40, height: 40, decoding: 'async', referrerpolicy: 'no-referrer' });
      img.onerror = initial;
      box.append(img);
    } else {
      initial();
    }
    return box;
  }

  function displayName(integration, provider) {
    return str((integration && integration.display_name) || (provider && provider.display_name) ||
      (integration && integration.unique_key) || 'your account');
  }

  function renderList() {
    const ul = $('integration-list');
    ul.textContent = '';
    for (const it of state.integrations) {
      const btn = el('button', { type: 'button', class: 'int-btn' }, [
        logoFor(it, null, 'logo-sm'),
        el('span', { class: 'int-name', text: displayName(it, null) }),
        (() => {
          const s = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
          s.setAttribute('viewBox', '0 0 24 24'); s.setAttribute('width', '18'); s.setAttribute('height', '18');
          s.setAttribute('aria-hidden', 'true'); s.setAttribute('class', 'int-chev');
          const p = document.createElementNS('http://www.w3.org/2000/svg', 'path');
          p.setAttribute('d', 'M9 5l7 7-7 7'); p.setAttribute('fill', 'none'); p.setAttribute('stroke', 'currentColor');
          p.setAttribute('stroke-width', '2'); p.setAttribute('stroke-linecap', 'round'); p.setAttribute('stroke-linejoin', 'round');
          s.append(p);
          return s;
        })()
      ]);
      btn.addEventListener('click', () => openIntegration(it, state.loadSeq));
      ul.append(el('li', null, [btn]));
    }
    document.title = 'Choose an app to connect';
    showView('list');
    announce('Choose an app to connect');
    const first = ul.querySelector('button');
    focusEl(first || $('list-title'));
  }

  // ---------------------------------------------------------------------------------------------
  // Provider + form

  async function openIntegration(integration, seq) {
    state.integration = integration;
    showLoading();
    let provider;
    try {
      const res = await apiGet('/providers/' + encodeURIComponent(integration.provider || integration.unique_key));
      provider = res && res.data;
    } catch (e) {
      if (seq !== state.loadSeq) return;
      handleLoadError(e);
      return;
    }
    if (seq !== state.loadSeq || state.integration !== integration) return;
    if (!provider || typeof provider !== 'object') {
      showFatal('Something went wrong', 'The app\u2019s definition could not be loaded. Try again in a moment.', { retry: () => openIntegration(integration, seq) });
      return;
    }
    state.provider = provider;
    const mode = AUTH_MODES[provider.auth_mode];
    if (!mode || (provider.latch && provider.latch.linkable === false)) {
      showFatal('Can\u2019t connect here', displayName(integration, provider) + ' can\u2019t be connected from this page. Contact the person who sent you this link.');
      return;
    }
    state.mode = mode;
    buildForm();
  }

  function docsConnect() {
    const key = state.integration && state.integration.unique_key;
    const ov = state.session && state.session.overrides && key && state.session.overrides[key];
    if (ov && ov.docs_connect) return ov.docs_connect;
    const p = state.provider;
    return p ? (p.docs_connect || p.setup_guide_url || null) : null;
  }

  function docsOverridden() {
    const key = state.integration && state.integration.unique_key;
    const ov = state.session && state.session.overrides && key && state.session.overrides[key];
    return !!(ov && ov.docs_connect);
  }

  function presetParams() {
    const key = state.integration && state.integration.unique_key;
    const d = state.session && state.session.integrations_config_defaults;
    const cc = d && key && d[key] && d[key].connection_config;
    return cc && typeof cc === 'object' ? cc : {};
  }

  // Field list in Nango's order: connection_config with `order` first, then credentials
  // (from 100), then the remaining connection_config.
  function collectFields() {
    const p = state.provider;
    const it = state.integration;
    const preset = presetParams();
    const preconfCreds = Array.isArray(it.preconfigured_credentials) ? it.preconfigured_credentials : [];
    const labels = it.credentials_label && typeof it.credentials_label === 'object' ? it.credentials_label : {};
    const out = [];
    let order = 99;

    const creds = p.credentials && typeof p.credentials === 'object' ? p.credentials : {};
    const credNames = state.mode.base.slice();
    if (p.auth_mode === 'OAUTH2_CC' && p.require_client_certificate === true) credNames.push('client_certificate', 'client_private_key');
    for (const name of Object.keys(creds)) if (!credNames.includes(name)) credNames.push(name);

    for (const name of credNames) {
      const def = creds[name] && typeof creds[name] === 'object' ? creds[name] : {};
      if (def.automated || preconfCreds.includes(name)) continue;
      const base = BASE_FIELDS[name] || {};
      let optional = def.optional === true;
      if (name === 'client_secret' && p.token_request_auth_method === 'private_key_jwt') optional = true;
      out.push(makeField('credentials', name, def, {
        order: ++order,
        title: str(labels[name]) || str(def.title) || base.title || name,
        secret: def.secret === true || base.secret === true,
        optional,
        hidden: def.hidden === true,
        value: def.default_value !== undefined ? str(def.default_value) : ''
      }));
    }

    const cc = p.connection_config && typeof p.connection_config === 'object' ? p.connection_config : {};
    for (const name of Object.keys(cc)) {
      const def = cc[name] && typeof cc[name] === 'object' ? cc[name] : {};
      if (def.automated) continue;
      const isPreset = preset[name] !== undefined && preset[name] !== null;
      const optional = def.optional === true;
      const en = Array.isArray(def.enum) ? def.enum.map(str) : null;
      let value = '';
      if (isPreset) value = str(preset[name]);
      else if (def.default_value !== undefined) value = str(def.default_value);
      else if (en && en.length && !optional && !def.hidden) value = en[0];
      out.push(makeField('params', name, def, {
        order: typeof def.order === 'number' ? def.order : ++order,
        title: str(def.title) || humanize(name),
        secret: def.secret === true,
        optional,
        hidden: isPreset || def.hidden === true,
        value
      }));
    }
    // Stable sort on order.
    return out.map((f, i) => [f, i]).sort((a, b) => a[0].order - b[0].order || a[1] - b[1]).map((x) => x[0]);
  }

  function humanize(name) {
    const s = name.replace(/[_-]+/g, ' ').replace(/([a-z])([A-Z])/g, '$1 $2').trim();
    return s.charAt(0).toUpperCase() + s.slice(1);
  }

  function makeField(group, name, def, o) {
    let re = null;
    if (typeof def.pattern === 'string' && def.pattern) {
      try { re = new RegExp(def.pattern); } catch { re = null; }
    }
    return {
      key: group + '.' + name,
      id: 'f-' + group + '-' + name.replace(/[^A-Za-z0-9_-]/g, '_'),
      group, name, def,
      title: o.title,
      secret: o.secret,
      optional: o.optional,
      hidden: o.hidden,
      order: o.order,
      value: o.value,
      enumValues: Array.isArray(def.enum) && def.enum.length ? def.enum.map(str) : null,
      re,
      touched: false,
      clientError: null,
      serverError: null,
      timer: null,
      input: null,
      errorEl: null,
      control: null,
      helpId: null
    };
  }

  function resolveGuide() {
    const p = state.provider;
    const g = p && p.connect_guide && typeof p.connect_guide === 'object' ? p.connect_guide : GUIDES[p && p.name] || null;
    return g;
  }

  function buildForm() {
    const p = state.provider;
    const it = state.integration;
    const name = displayName(it, p);
    const reconnecting = state.session && state.session.isReconnecting === true;
    state.fields = collectFields();
    state.guide = resolveGuide();

    // Header
    const logoSlot = $('form-logo');
    const logo = logoFor(it, p, '');
    logo.id = 'form-logo';
    logoSlot.replaceWith(logo);
    $('form-title').textContent = (reconnecting ? 'Reconnect ' : 'Connect ') + name;
    $('form-subtitle').textContent = state.mode.popup
      ? (reconnecting ? 'Sign in to ' + name + ' again to renew your existing connection.'
        : 'Sign in to ' + name + ' in a new window and allow access. Your password is never shared with this page.')
      : reconnecting
        ? 'Enter the new details to update your existing ' + name + ' connection.'
        : 'Enter the details below to link your ' + name + ' account. They are stored encrypted and never shown again.';
    document.title = (reconnecting ? 'Reconnect ' : 'Connect ') + name;

    renderGuide(name);
    hideAlert();

    // Fields
    const box = $('fields');
    box.textContent = '';
    for (const f of state.fields) {
      if (f.hidden) continue;
      box.append(renderField(f));
    }
    setSubmitting(false);

    showView('form');
    announce((reconnecting ? 'Reconnect ' : 'Connect ') + name);
    const first = state.fields.find((f) => !f.hidden && f.input);
    focusEl(first ? first.input : $('form-title'));
  }

  function renderGuide(name) {
    const g = state.guide;
    const p = state.provider;
    const details = $('guide');
    const steps = $('guide-steps');
    steps.textContent = '';
    const url = safeHttpUrl(p.setup_guide_url || docsConnect() || '');
    let intro = g && g.intro ? str(g.intro) : '';
    if (!intro && p.auth_mode === 'OAUTH2_CC') {
      intro = 'You need the Client ID and Client Secret of an API app created in ' + name +
        ' that uses the client-credentials grant.';
    }
    richText($('guide-intro'), intro);
    $('guide-intro').hidden = !intro;
    if (g && Array.isArray(g.steps)) for (const s of g.steps) steps.append(richText(el('li'), str(s)));
    steps.hidden = steps.childElementCount === 0;
    $('guide-link-row').hidden = !url;
    if (url) $('guide-link').href = url;
    details.hidden = !intro && steps.hidden && !url;
  }

  function renderField(f) {
    const def = f.def;
    const helpId = f.id + '-help';
    const errId = f.id + '-error';
    f.helpId = def.description ? helpId : null;

    const label = el('label', { for: f.id }, [document.createTextNode(f.title)]);
    if (f.optional) label.append(el('span', { class: 'optional-tag', text: '(optional)' }));
    const labelRow = el('div', { class: 'label-row' }, [label]);

    const docs = docsConnect();
    if (docs && (def.doc_section || docsOverridden())) {
      const href = safeHttpUrl(docsOverridden() ? docs : docs + str(def.doc_section));
      if (href) {
        labelRow.append(el('a', {
          class: 'doc-link', href, target: '_blank', rel: 'noopener noreferrer',
          // the accessible name starts with the visible text (WCAG 2.5.3 label in name)
          'aria-label': 'Where do I find this? ' + f.title + ' (opens in a new tab)',
          text: 'Where do I find this?'
        }));
      }
    }

    let input;
    if (f.enumValues) {
      input = el('select', { id: f.id, name: f.key, 'aria-required': f.optional ? 'false' : 'true' });
      if (f.optional || !f.value) input.append(el('option', { value: '', text: f.optional ? '(none)' : 'Select…' }));
      for (const v of f.enumValues) input.append(el('option', { value: v, text: v }));
      input.value = f.value;
    } else {
      input = el('input', {
        id: f.id, name: f.key,
        type: f.secret ? 'password' : 'text',
        autocomplete: 'off',
        autocapitalize: 'off',
        autocorrect: 'off',
        spellcheck: 'false',
        'aria-required': f.optional ? 'false' : 'true',
        placeholder: def.example !== undefined ? str(def.example) : null,
        inputmode: def.format === 'email' ? 'email' : def.format === 'uri' ? 'url' : null,
        class: f.secret ? 'is-secret' : null,
        maxlength: 1024
      });
      input.value = f.value;
    }
    f.input = input;

    const control = el('div', { class: 'control' });
    if (def.prefix) control.append(el('span', { class: 'affix', text: str(def.prefix), 'aria-hidden': 'true' }));
    control.append(input);
    if (def.suffix) control.append(el('span', { class: 'affix', text: str(def.suffix), 'aria-hidden': 'true' }));
    if (f.secret && input.tagName === 'INPUT') {
      const toggle = el('button', {
        type: 'button', class: 'reveal', 'aria-controls': f.id, 'aria-pressed': 'false',
        'aria-label': 'Show ' + f.title, text: 'Show'
      });
      toggle.addEventListener('click', () => {
        const show = input.type === 'password';
        input.type = show ? 'text' : 'password';
        toggle.textContent = show ? 'Hide' : 'Show';
        toggle.setAttribute('aria-pressed', show ? 'true' : 'false');
        toggle.setAttribute('aria-label', (show ? 'Hide ' : 'Show ') + f.title);
      });
      control.append(toggle);
    }
    f.control = control;

    const errorEl = el('p', { id: errId, class: 'field-error', hidden: true });
    f.errorEl = errorEl;

    const wrap = el('div', { class: 'field', 'data-key': f.key }, [labelRow]);
    if (def.description) wrap.append(el('p', { id: helpId, class: 'help', text: str(def.description) }));
    wrap.append(control, errorEl);
    updateDescribedBy(f);

    const onInput = () => {
      f.touched = true;
      f.serverError = null;
      if (f.timer) clearTimeout(f.timer);
      // Re-check at once when fixing an error; otherwise wait for a pause in typing.
      if (f.clientError || input.tagName === 'SELECT') checkField(f, true);
      else f.timer = setTimeout(() => checkField(f, true), TYPE_DEBOUNCE_MS);
      if (!state.fields.some((x) => x.serverError)) hideAlertIfFieldScoped();
    };
    input.addEventListener('input', onInput);
    input.addEventListener('change', onInput);
    input.addEventListener('blur', () => {
      if (def.format === 'hostname' && input.tagName === 'INPUT') {
        const n = normalizeHost(input.value);
        if (n !== input.value) input.value = n;
      }
      if (f.touched) { if (f.timer) clearTimeout(f.timer); checkField(f, true); }
    });
    return wrap;
  }

  function updateDescribedBy(f) {
    const ids = [];
    if (f.helpId) ids.push(f.helpId);
    if (!f.errorEl.hidden) ids.push(f.errorEl.id);
    if (ids.length) f.input.setAttribute('aria-describedby', ids.join(' '));
    else f.input.removeAttribute('aria-describedby');
  }

  function normalizeHost(v) {
    let s = v.trim();
    s = s.replace(/^[a-z][a-z0-9+.-]*:\/\//i, '');
    s = s.replace(/[/?#].*$/, '');
    return s;
  }

  function fieldValue(f) {
    if (f.hidden || !f.input) return str(f.value);
    return f.input.value.trim();
  }

  function validate(f, v) {
    if (f.hidden) return null; // hidden fields behave as optional (as in Nango)
    const def = f.def;
    if (v === '') {
      if (f.optional || def.default_value !== undefined) return null;
      return f.enumValues ? 'Choose a ' + f.title + '.' : 'Enter the ' + f.title + '.';
    }
    if (f.enumValues && !f.enumValues.includes(v)) return 'Choose a ' + f.title + ' from the list.';
    if (def.format === 'hostname' && !/^[a-zA-Z0-9.-]+$/.test(v)) {
      return 'Enter a host name only' + (def.example ? ', like ' + str(def.example) : '') + ' (no https:// and no path).';
    }
    if (def.format === 'uuid' && !/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(v)) return 'Incorrect ' + f.title + ': expected a UUID.';
    if (def.format === 'uri') {
      const u = safeHttpUrl(v);
      if (!u || !/^https?:\/\//i.test(v)) return 'Enter a full URL, starting with https://';
    }
    if (def.format === 'email' && !/^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(v)) return 'Enter a valid email address.';
    if (f.re && !f.re.test(v)) return 'Incorrect ' + f.title + '. Check that you copied the whole value.';
    return null;
  }

  // Validates one field and shows/hides its message. Returns true when valid.
  function checkField(f, show) {
    if (f.hidden || !f.input) return validate(f, fieldValue(f)) === null;
    f.clientError = validate(f, fieldValue(f));
    if (show) renderFieldState(f);
    return f.clientError === null;
  }

  function renderFieldState(f) {
    const msg = f.clientError || f.serverError;
    f.errorEl.textContent = msg || '';
    f.errorEl.hidden = !msg;
    f.input.setAttribute('aria-invalid', msg ? 'true' : 'false');
    f.control.classList.toggle('is-invalid', !!msg);
    updateDescribedBy(f);
  }

  // ---------------------------------------------------------------------------------------------
  // Alert

  let alertFieldScoped = false;

  function showAlert(title, text, fieldScoped) {
    $('form-alert-title').textContent = title;
    $('form-alert-text').textContent = text;
    alertFieldScoped = !!fieldScoped;
    const a = $('form-alert');
    a.hidden = false;
    focusEl(a);
  }

  function hideAlert() {
    $('form-alert').hidden = true;
    $('form-alert-title').textContent = '';
    $('form-alert-text').textContent = '';
  }

  function hideAlertIfFieldScoped() {
    if (alertFieldScoped) hideAlert();
  }

  // ---------------------------------------------------------------------------------------------
  // Submit

  function setSubmitting(on) {
    state.submitting = on;
    const btn = $('submit-btn');
    btn.disabled = on;
    btn.classList.toggle('is-busy', on);
    btn.setAttribute('aria-busy', on ? 'true' : 'false');
    $('submit-label').textContent = on ? (state.mode && state.mode.popup ? 'Waiting for ' + providerShortName() + '…' : 'Connecting…') : idleLabel();
    for (const f of state.fields) if (f.input) f.input.readOnly = on && f.input.tagName === 'INPUT';
    for (const f of state.fields) if (f.input && f.input.tagName === 'SELECT') f.input.disabled = on;
  }

  function idleLabel() {
    const reconnecting = state.session && state.session.isReconnecting === true;
    if (state.mode && state.mode.popup) return (reconnecting ? 'Reconnect with ' : 'Connect with ') + providerShortName();
    return reconnecting ? 'Reconnect' : 'Connect';
  }

  function buildSubmit() {
    const it = state.integration;
    const mode = state.mode;
    const q = ['connect_session_token=' + encodeURIComponent(state.token)];
    const body = {};
    for (const f of state.fields) {
      const v = fieldValue(f);
      if (f.group === 'params') {
        if (v === '' && (f.optional || f.hidden)) continue;
        q.push('params[' + encodeURIComponent(f.name) + ']=' + encodeURIComponent(v));
      } else if (mode.body.includes(f.name)) {
        if (v === '' && f.optional) continue;
        body[f.name] = v;
      }
    }
    const url = state.apiURL + mode.route + encodeURIComponent(it.unique_key) + '?' + q.join('&');
    return { url, body };
  }

  async function onSubmit(evt) {
    evt.preventDefault();
    if (state.submitting || state.done || !state.provider) return;

    let firstBad = null;
    for (const f of state.fields) {
      f.serverError = null;
      f.touched = true;
      if (f.timer) clearTimeout(f.timer);
      const ok = checkField(f, true);
      if (!ok && !firstBad && f.input) firstBad = f;
    }
    if (firstBad) {
      announce('Please fix the highlighted fields.');
      focusEl(firstBad.input);
      return;
    }
    // A hidden (preset) field that fails validation cannot be fixed by the user.
    const badPreset = state.fields.find((f) => f.hidden && f.group === 'params' && f.re && fieldValue(f) && !f.re.test(fieldValue(f)));
    if (badPreset) {
      showAlert('This link is misconfigured', 'The preset ' + badPreset.title + ' is not valid. Ask the person who sent you this link for a new one.');
      return;
    }

    hideAlert();
    const { url, body } = buildSubmit();
    if (state.mode.popup) {
      startPopup(url);
      return;
    }
    setSubmitting(true);
    const name = displayName(state.integration, state.provider);
    announce('Connecting to ' + name + '…');

    let res, json;
    try {
      res = await fetch(url, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
        credentials: 'omit',
        cache: 'no-store'
      });
      json = await readJson(res);
    } catch {
      setSubmitting(false);
      failWith('unknown_error', 'Can\u2019t reach the server', 'Check your internet connection and try again.', false);
      return;
    }

    if (res.ok && json && !json.error && typeof json.connectionId === 'string') {
      succeed({ providerConfigKey: str(json.providerConfigKey) || state.integration.unique_key, connectionId: json.connectionId });
      return;
    }
    setSubmitting(false);
    handleSubmitError(res.ok ? new ApiError(res.status, 'bad_response', 'The server answered unexpectedly.') : toApiError(res, json));
  }

  // ---------------------------------------------------------------------------------------------
  // OAUTH2: the popup

  function stopPopup() {
    const pop = state.popup;
    if (!pop) return;
    state.popup = null;
    clearInterval(pop.timer);
    clearTimeout(pop.grace);
    window.removeEventListener('message', pop.onMessage);
  }

  // Called in the click (submit) handler itself: window.open must run before any await.
  function startPopup(url) {
    stopPopup();
    const name = providerShortName();
    const win = window.open(url, 'latch-oauth', POPUP_FEATURES);
    if (!win || win.closed || typeof win.closed === 'undefined') {
      failWith('blocked_by_browser', 'Your browser blocked the sign-in window',
        'Allow pop-ups for this page (look for the icon in the address bar), then press “' + idleLabel() + '” again.', false);
      return;
    }
    let apiOrigin;
    try { apiOrigin = new URL(state.apiURL, window.location.href).origin; } catch { apiOrigin = window.location.origin; }
    const pop = { win, timer: 0, grace: 0, onMessage: null };
    pop.onMessage = (evt) => {
      if (evt.origin !== apiOrigin || evt.source !== win) return;
      const d = evt.data;
      if (!d || typeof d !== 'object' || d.source !== 'latch' || d.type !== 'oauth_result') return;
      stopPopup();
      setSubmitting(false);
      if (d.success === true && typeof d.connectionId === 'string') {
        succeed({ providerConfigKey: str(d.providerConfigKey) || state.integration.unique_key, connectionId: d.connectionId });
        return;
      }
      const err = d.error && typeof d.error === 'object' ? d.error : {};
      popupFailed(str(err.type) || 'unknown_error', str(err.message));
    };
    window.addEventListener('message', pop.onMessage);
    pop.timer = setInterval(() => {
      if (!win.closed || pop.grace) return;
      // a result posted just before closing may still be queued: wait a moment for it
      pop.grace = setTimeout(() => {
        if (state.popup !== pop) return;
        stopPopup();
        setSubmitting(false);
        failWith('window_closed', 'The sign-in window was closed',
          'The connection to ' + name + ' was not completed. Press “' + idleLabel() + '” to try again.', false);
      }, POPUP_CLOSED_GRACE_MS);
    }, POPUP_POLL_MS);
    state.popup = pop;
    setSubmitting(true);
    announce('A window opened to sign in to ' + name + '. Finish there, then come back here.');
  }

  function popupFailed(type, message) {
    const name = providerShortName();
    if (type === 'connect_session_expired' || type === 'unknown_connect_session_token' || type === 'connect_session_used') {
      showExpired();
      return;
    }
    if (type === 'access_denied') {
      failWith(type, 'Access was not allowed', 'You declined access in ' + name + ', so nothing was connected. Press “' + idleLabel() + '” and allow access to connect.', false);
      return;
    }
    failWith(type, 'The connection to ' + name + ' did not complete', message || 'Try again in a moment.', false);
  }

  function succeed(result) {
    state.done = true;
    const name = displayName(state.integration, state.provider);
    $('success-title').textContent = 'Connected';
    $('success-text').textContent = 'You are now connected to ' + name + '.' + (embedded ? '' : ' You can close this tab.');
    $('done-btn').hidden = !embedded;
    document.title = 'Connected to ' + name;
    // Forget what was typed: nothing sensitive stays in the DOM.
    for (const f of state.fields) if (f.input) f.input.value = '';
    $('fields').textContent = '';
    showView('success');
    announce('You are now connected to ' + name + '.');
    focusEl(embedded ? $('done-btn') : $('success-title'));
    post({ type: 'connect', payload: result });
  }

  function failWith(errorType, title, text, fieldScoped) {
    showAlert(title, text, fieldScoped);
    post({ type: 'error', payload: { errorType, errorMessage: title + '. ' + text } });
  }

  function fieldsByGroup(group) { return state.fields.filter((f) => !f.hidden && f.input && f.group === group); }

  function flagFields(fields, msg) {
    for (const f of fields) { f.serverError = msg; renderFieldState(f); }
  }

  function providerShortName() {
    // "NinjaOne RMM" -> use the provider's display name as is; it is what users know.
    return displayName(null, state.provider);
  }

  function reasonOf(e) {
    const b = e.body || {};
    const r = b.reason || (b.payload && typeof b.payload === 'object' && b.payload.reason) || null;
    return typeof r === 'string' ? r : null;
  }

  function scopesOf(e) {
    const b = e.body || {};
    const cand = b.scopes || b.requested_scopes || b.scope || (b.payload && typeof b.payload === 'object' && (b.payload.scopes || b.payload.scope));
    if (Array.isArray(cand)) return cand.map(str).filter(Boolean);
    if (typeof cand === 'string' && cand) return cand.split(/[\s,]+/).filter(Boolean);
    return null;
  }

  // latch extension: integration_config.oauth_scopes ("monitoring,management") = what is requested.
  function integrationScopes() {
    const ic = state.integration && state.integration.integration_config;
    const sc = ic && typeof ic.oauth_scopes === 'string' ? ic.oauth_scopes : '';
    const list = sc.split(/[\s,]+/).filter(Boolean);
    return list.length ? list : null;
  }

  // Server messages are shown when they read like a sentence (latch's are written for users);
  // Nango-style "Failed to fetch ...: {json}" dumps are not.
  function humanMessage(e) {
    const m = e && typeof e.message === 'string' ? e.message.trim() : '';
    if (!m || m === e.code || m.length > 400 || /[{}]/.test(m)) return '';
    return /[.!?]$/.test(m) ? m : m + '.';
  }

  function titleCase(s) { return s.charAt(0).toUpperCase() + s.slice(1); }

  function handleSubmitError(e) {
    const pname = providerShortName();
    const creds = fieldsByGroup('credentials');
    const params = fieldsByGroup('params');

    if (isSessionError(e)) { showExpired(); return; }

    if (e.code === 'client_credentials_fetch_error' || reasonOf(e)) {
      const reason = reasonOf(e) || 'upstream_error';
      if (reason === 'invalid_client') {
        const credTitles = creds.map((f) => f.title);
        const what = credTitles.length === 2 ? 'this ' + credTitles[0] + ' and ' + credTitles[1] : 'these credentials';
        let text = 'Check that you copied both from the same app';
        const hostField = params.find((f) => f.enumValues || f.def.format === 'hostname');
        if (hostField) {
          const chosen = fieldValue(hostField);
          text += ', and that the ' + hostField.title + ' matches the address where you sign in to ' + pname +
            (chosen ? ' (you chose ' + chosen + ')' : '') + '.';
        } else {
          text += '.';
        }
        flagFields(creds, 'Check this value.');
        if (hostField) flagFields([hostField], 'Is this where you sign in to ' + pname + '?');
        failWith('connection_validation_failed', pname + ' rejected ' + what, text, false);
        return;
      }
      if (reason === 'invalid_scope') {
        const g = state.guide || {};
        const scopes = scopesOf(e) || integrationScopes();
        const wanted = scopes ? scopes.map(titleCase).join(', ') : (g.scopes ? str(g.scopes) : 'the scopes this integration needs');
        const where = g.app_location ? ' (' + str(g.app_location) + ')' : '';
        failWith('connection_validation_failed', 'Your ' + pname + ' app is missing permissions',
          'In ' + pname + ', edit the API app' + where + ' and add these scopes: ' + wanted + '. Save, then try again.', false);
        return;
      }
      if (reason === 'timeout' || reason === 'unreachable') {
        failWith('unknown_error', pname + ' could not be reached',
          (reason === 'timeout' ? pname + ' did not answer in time. ' : 'We could not connect to ' + pname + '. ') +
          'This is usually temporary: try again in a minute.', false);
        return;
      }
      if (reason === 'denied' || reason === 'invalid_input') {
        const hostField = params.find((f) => f.enumValues || f.def.format === 'hostname');
        if (hostField) flagFields([hostField], 'Check this value.');
        failWith('connection_validation_failed', 'This address can\u2019t be used',
          humanMessage(e) || 'The server is not allowed to contact ' + pname + ' at this address. Check the details and try again.', false);
        return;
      }
      if (reason === 'bad_response') {
        failWith('unknown_error', pname + ' answered unexpectedly',
          'This is usually temporary on ' + pname + '\u2019s side. Try again later.', false);
        return;
      }
      failWith('unknown_error', pname + ' returned an error',
        (humanMessage(e) || 'Check the details and try again.'), false);
      return;
    }

    if (e.code === 'invalid_connection_config' || e.code === 'invalid_credentials' ||
        e.code === 'invalid_body' || e.code === 'invalid_query_params') {
      const errs = Array.isArray(e.body && e.body.errors) ? e.body.errors : [];
      const hit = [];
      for (const it of errs) {
        const path = Array.isArray(it && it.path) ? it.path.map(str) : [];
        const f = matchField(path);
        if (f && !f.hidden) {
          f.serverError = str(it.message) || 'Check this value.';
          renderFieldState(f);
          hit.push(f);
        }
      }
      if (hit.length) {
        failWith('connection_validation_failed', 'Check the highlighted fields',
          hit.map((f) => f.title + ': ' + f.serverError).join(' '), true);
      } else {
        const presetBad = errs.some((it) => { const f = matchField(Array.isArray(it && it.path) ? it.path.map(str) : []); return f && f.hidden; });
        failWith('connection_validation_failed', presetBad ? 'This link is misconfigured' : 'Some details are not valid',
          presetBad ? 'A preset value is not valid. Ask the person who sent you this link for a new one.'
            : (humanMessage(e) || 'Check the details and try again.'), false);
      }
      return;
    }

    if (e.status === 429 || e.code === 'too_many_request' || e.code === 'too_many_requests') {
      const ra = e.headers && parseInt(e.headers.get('Retry-After') || '', 10);
      failWith('unknown_error', 'Too many attempts',
        'Please wait ' + (ra > 0 && ra < 3600 ? (ra < 90 ? ra + ' seconds' : Math.ceil(ra / 60) + ' minutes') : 'a minute') + ', then try again.', false);
      return;
    }
    if (e.code === 'integration_not_allowed') {
      failWith('unknown_error', 'Not allowed by this link',
        'This link does not allow connecting ' + displayName(state.integration, state.provider) + '. Ask the person who sent it to you for a new link.', false);
      return;
    }
    if (e.code === 'resource_capped') {
      failWith('resource_capped', 'Connection limit reached',
        'No more connections can be created right now. Contact the person who sent you this link.', false);
      return;
    }
    if (e.code === 'connection_test_failed' || e.code === 'connection_validation_failed') {
      flagFields(creds, 'Check this value.');
      failWith(e.code, pname + ' rejected these details', humanMessage(e) || 'Check the details and try again.', false);
      return;
    }
    const status = e.status ? ' (HTTP ' + e.status + ')' : '';
    failWith('unknown_error', 'Something went wrong', (humanMessage(e) || 'The connection could not be created' + status + '.') + ' Try again in a moment.', false);
  }

  function matchField(path) {
    if (!path.length) return null;
    const [g, n] = path;
    const group = g === 'params' || g === 'connection_config' || g === 'connectionConfig' ? 'params'
      : g === 'credentials' ? 'credentials' : null;
    if (group && n) return state.fields.find((f) => f.group === group && f.name === n) || null;
    // A bare field name: match either group.
    return state.fields.find((f) => f.name === g) || null;
  }

  // ---------------------------------------------------------------------------------------------
  // Wiring

  function init() {
    if (embedded) document.documentElement.classList.add('embedded');
    applyTheme();

    $('connect-form').addEventListener('submit', onSubmit);
    $('close-btn').addEventListener('click', close);
    $('done-btn').addEventListener('click', close);
    $('back-btn').addEventListener('click', () => {
      if (state.submitting) return;
      state.integration = null;
      state.provider = null;
      state.loadSeq++;
      renderList();
    });
    document.addEventListener('keydown', (e) => {
      if (e.key === 'Escape' && embedded && !e.defaultPrevented) {
        e.preventDefault();
        close();
      }
    });

    $('close-btn').hidden = !embedded;

    // Tell the parent we are listening (it answers with the session token).
    post({ type: 'ready' });

    const inUrl = query.get('session_token');
    if (inUrl) {
      start(inUrl);
    } else if (!embedded) {
      showFatal('Open this page from your app',
        'This page needs a connection link. Start the connection again from the app that sent you here.');
    } else {
      setTimeout(() => {
        if (!state.token) {
          showFatal('Open this page from your app',
            'The connection could not be started. Close this window and try again.');
        }
      }, NO_TOKEN_TIMEOUT_MS);
    }
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
