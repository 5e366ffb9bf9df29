// The xpod dashboard: nodes, pods (migrate, progress), edges and their services (a terminal),
// sandboxes (stop and delete, a terminal: terminal.html), certificates and the audit log of one cluster, kept live by the center's event
// stream (GET /api/v1/events says what changed; only that is fetched again). The admin key
// stays in this tab's sessionStorage and goes only to this origin's API.
import './style.css';

const $ = (sel) => document.querySelector(sel);
const KEY = 'xpod.adminKey';
const state = { nodes: [], pods: [], sandboxes: [], certs: null, audit: [] };
let stream = null;

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(KEY)}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const r = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  let value = null;
  try {
    value = text ? JSON.parse(text) : null;
  } catch {
    value = { message: text };
  }
  if (r.status === 401) signOut('The key was refused; sign in again.');
  if (!r.ok) throw new Error(value?.message || `${method} ${path}: ${r.status}`);
  return value;
}

const loaders = {
  nodes: async () => (state.nodes = (await api('GET', '/.cluster/nodes')).nodes),
  pods: async () => (state.pods = (await api('GET', '/.cluster/pods')).pods),
  sandboxes: async () =>
    (state.sandboxes = (await api('GET', '/api/v1/sandboxes?limit=1000')).sandboxes),
  certs: async () => (state.certs = await api('GET', '/.cluster/certs')),
  audit: async () => (state.audit = (await api('GET', '/api/v1/audit?limit=20')).entries),
};

const ago = (ms) => {
  if (!ms) return '-';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  return s < 120 ? `${s} s ago` : s < 7200 ? `${Math.round(s / 60)} min ago` : new Date(ms).toLocaleString();
};
const day = (ms) => (ms ? new Date(ms).toISOString().slice(0, 10) : '-');

function table(id, head, rows) {
  const t = $(id);
  t.replaceChildren(
    el('thead', {}, el('tr', {}, head.map((h) => el('th', {}, h)))),
    el(
      'tbody',
      {},
      rows.length
        ? rows
        : el('tr', {}, el('td', { colspan: head.length, class: 'empty' }, 'none')),
    ),
  );
}

function renderNodes() {
  table(
    '#nodes',
    ['node', 'role', 'region', 'status', 'last heartbeat', 'transport', 'version', 'node certificate until'],
    state.nodes.map((n) =>
      el(
        'tr',
        { 'data-node': n.nodeId, 'data-type': n.nodeType },
        el('td', {}, n.nodeId),
        el('td', {}, n.nodeType),
        el('td', {}, n.region),
        el('td', {}, el('span', { class: `badge ${n.status}` }, n.status)),
        el('td', {}, ago(n.lastHeartbeat)),
        el('td', {}, n.capacity?.transport ?? (n.nodeType === 'center' ? 'mesh' : '-')),
        el('td', {}, n.version || '-'),
        el('td', { class: 'cert' }, day(n.capacity?.certNotAfter)),
      ),
    ),
  );
}

function progressBar(p) {
  const pct = p.migrationStatus === 'done' ? 100 : (p.migrationProgress ?? 0);
  const bar = el('div', { class: 'bar' });
  bar.style.width = `${pct}%`; // CSSOM: the page's CSP allows no inline style attributes
  return el(
    'div',
    { class: 'progress', role: 'progressbar', 'aria-valuenow': pct, 'data-status': p.migrationStatus },
    bar,
    el('span', {}, `${pct} % ${p.migrationStatus}`),
  );
}

async function migrate(pod, target, button) {
  button.disabled = true;
  try {
    await api('POST', `/.cluster/pods/${encodeURIComponent(pod)}/migrate`, { targetNode: target });
    await loaders.pods();
    render();
  } catch (e) {
    showError(e);
  } finally {
    button.disabled = false;
  }
}

function renderPods() {
  // Pods move between centers (moves to and from edges are not supported yet).
  const targets = state.nodes.filter((n) => n.status === 'online' && n.nodeType === 'center');
  table(
    '#pods',
    ['pod', 'owner', 'epoch', 'access', 'migration', 'move to'],
    state.pods.map((p) => {
      const select = el(
        'select',
        { 'aria-label': `target for ${p.podId}` },
        targets
          .filter((n) => n.nodeId !== p.nodeId)
          .map((n) => el('option', { value: n.nodeId }, `${n.nodeId} (${n.region})`)),
      );
      const button = el('button', { class: 'migrate' }, 'Migrate');
      button.addEventListener('click', () => select.value && migrate(p.podId, select.value, button));
      return el(
        'tr',
        { 'data-pod': p.podId },
        el('td', {}, p.podId),
        el('td', { class: 'owner' }, p.nodeId),
        el('td', {}, p.epoch),
        el('td', {}, p.accessMode),
        el('td', {}, p.migrationStatus ? progressBar(p) : '-'),
        el('td', {}, select.options.length ? [select, button] : '-'),
      );
    }),
  );
}

// A terminal opens in a tab of its own (terminal.html), which inherits this tab's key.
function terminalButton(query, title) {
  const b = el('button', { class: 'terminal', title }, 'Terminal');
  b.addEventListener('click', () => window.open(`terminal.html?${query}`, '_blank'));
  return b;
}

function renderEdges() {
  const edges = state.nodes.filter((n) => n.nodeType === 'edge');
  table(
    '#edges',
    ['edge', 'status', 'centers', 'services', ''],
    edges.map((n) =>
      el(
        'tr',
        { 'data-edge': n.nodeId },
        el('td', {}, n.nodeId),
        el('td', {}, el('span', { class: `badge ${n.status}` }, n.status)),
        el('td', {}, (n.attachedCenters || []).join(', ') || '-'),
        el('td', {}, (n.capacity?.services || []).map((s) => `${s.name} (${s.kind})`).join(', ') || '-'),
        el(
          'td',
          {},
          n.status === 'online'
            ? terminalButton(`node=${encodeURIComponent(n.nodeId)}`, `A shell on ${n.nodeId} (if it allows terminals)`)
            : '',
        ),
      ),
    ),
  );
}

async function stopSandbox(id, button) {
  button.disabled = true;
  try {
    await api('DELETE', `/api/v1/sandboxes/${encodeURIComponent(id)}`);
    await loaders.sandboxes();
    render();
  } catch (e) {
    showError(e);
    button.disabled = false;
  }
}

function renderSandboxes() {
  const byOwner = [...state.sandboxes].sort((a, b) => a.owner.localeCompare(b.owner));
  table(
    '#sandboxes',
    ['sandbox', 'owner', 'status', 'node', 'resources', ''],
    byOwner.map((s) => {
      const live = s.status === 'running' || s.status === 'pending';
      const button = el('button', { class: 'stop', title: 'Stop it and delete it' }, 'Stop & delete');
      button.addEventListener('click', () => stopSandbox(s.id, button));
      const shell = terminalButton(`sandbox=${encodeURIComponent(s.id)}`, `A shell in ${s.id}`);
      const r = s.resources || {};
      return el(
        'tr',
        { 'data-sandbox': s.id },
        el('td', {}, s.name ? `${s.name} (${s.id})` : s.id),
        el('td', {}, s.owner),
        el('td', { class: 'status' }, el('span', { class: `badge ${s.status}` }, s.status)),
        el('td', {}, s.node || '-'),
        el('td', {}, `${r.cpu ?? '-'} cpu, ${r.memoryMb ?? '-'} MiB`),
        el('td', {}, live ? [button, s.status === 'running' ? shell : null] : ''),
      );
    }),
  );
}

function renderCerts() {
  const c = state.certs;
  table(
    '#certs',
    ['names', 'not after', 'renew at', 'issued by'],
    (c?.certificates || []).map((x) =>
      el(
        'tr',
        {},
        el('td', {}, (x.names || []).join(', ')),
        el('td', {}, day(x.notAfter)),
        el('td', {}, day(x.renewAt)),
        el('td', {}, x.issuedBy || '-'),
      ),
    ),
  );
}

function renderAudit() {
  table(
    '#audit',
    ['when', 'actor', 'action', 'target'],
    state.audit.map((a) =>
      el('tr', {}, el('td', {}, ago(a.at)), el('td', {}, a.actor), el('td', {}, a.action), el('td', {}, a.target)),
    ),
  );
}

function render() {
  renderNodes();
  renderPods();
  renderEdges();
  renderSandboxes();
  renderCerts();
  renderAudit();
}

function showError(e) {
  $('#error').textContent = e ? String(e.message || e) : '';
}

function live(on) {
  const b = $('#live');
  b.textContent = on ? 'live' : 'reconnecting';
  b.className = `badge ${on ? 'online' : 'off'}`;
}

async function refresh(names) {
  try {
    await Promise.all(names.filter((n) => loaders[n]).map((n) => loaders[n]()));
    showError(null);
  } catch (e) {
    showError(e);
  }
  render();
}

// The event stream, read with fetch (EventSource cannot send the key); reconnects after 2 s.
async function follow() {
  const ctrl = new AbortController();
  stream = ctrl;
  while (stream === ctrl) {
    try {
      const r = await fetch('/api/v1/events', {
        headers: { Authorization: `Bearer ${sessionStorage.getItem(KEY)}` },
        signal: ctrl.signal,
      });
      if (r.status === 401) return signOut('The key was refused; sign in again.');
      if (!r.ok) throw new Error(`events: ${r.status}`);
      live(true);
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let end;
        while ((end = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, end);
          buf = buf.slice(end + 2);
          const data = block.split('\n').find((l) => l.startsWith('data: '));
          if (data) await refresh(JSON.parse(data.slice(6)).changed || []);
        }
      }
    } catch (e) {
      if (ctrl.signal.aborted) return;
    }
    live(false);
    await new Promise((r) => setTimeout(r, 2000));
  }
}

function signOut(why) {
  sessionStorage.removeItem(KEY);
  if (stream) stream.abort();
  stream = null;
  $('#app').hidden = true;
  $('#signout').hidden = true;
  $('#signin').hidden = false;
  $('#signin-error').textContent = why || '';
  live(false);
}

async function signIn(key) {
  sessionStorage.setItem(KEY, key);
  try {
    await api('GET', '/.cluster/nodes');
  } catch (e) {
    return signOut(e.message);
  }
  $('#signin').hidden = true;
  $('#app').hidden = false;
  $('#signout').hidden = false;
  await refresh(Object.keys(loaders));
  follow();
}

$('#where').textContent = location.host;
$('#signin').addEventListener('submit', (ev) => {
  ev.preventDefault();
  signIn($('#key').value.trim());
  $('#key').value = '';
});
$('#signout').addEventListener('click', () => signOut());
if (sessionStorage.getItem(KEY)) signIn(sessionStorage.getItem(KEY));
else signOut();
