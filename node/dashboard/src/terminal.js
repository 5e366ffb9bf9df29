// A terminal in the browser (xterm.js) on a terminal WebSocket of the API (issue 20):
//   terminal.html?sandbox=ID   a shell in a sandbox      (/api/v1/sandboxes/ID/terminal)
//   terminal.html?node=EDGE    a shell on an edge device (/.cluster/nodes/EDGE/terminal)
// Opened from the dashboard, whose tab's sessionStorage (the admin key) this tab inherits. A
// browser cannot set headers on a WebSocket, so the key travels as a subprotocol the server
// reads (`xpod.key.<key>`, next to `xpod.terminal`, the one it answers). Binary messages are
// the terminal's bytes; resizes go as `{"resize":{"rows":R,"cols":C}}`; the server's
// `{"exit":{"code":N}}` ends it.
import '@xterm/xterm/css/xterm.css';
import './style.css';
import { Terminal } from '@xterm/xterm';
import { FitAddon } from '@xterm/addon-fit';

const $ = (sel) => document.querySelector(sel);
const KEY = 'xpod.adminKey';
const params = new URLSearchParams(location.search);

function status(state, text) {
  const s = $('#status');
  s.dataset.state = state;
  s.textContent = text;
  s.className = `badge ${state === 'open' ? 'online' : state === 'connecting' ? 'off' : 'offline'}`;
}

function target() {
  const sandbox = params.get('sandbox');
  const node = params.get('node');
  if (sandbox) return { what: `sandbox ${sandbox}`, path: `/api/v1/sandboxes/${encodeURIComponent(sandbox)}/terminal` };
  if (node) return { what: `edge ${node}`, path: `/.cluster/nodes/${encodeURIComponent(node)}/terminal` };
  return null;
}

function start() {
  const t = target();
  const key = sessionStorage.getItem(KEY);
  if (!t) return status('closed', 'nothing to open: ?sandbox=ID or ?node=EDGE');
  $('#what').textContent = t.what;
  document.title = `${t.what} — xpod terminal`;
  if (!key) {
    $('#error').textContent = 'Open the terminal from the dashboard (signed in): the key lives in its tab.';
    return status('closed', 'not signed in');
  }
  const term = new Terminal({ cursorBlink: true, scrollback: 5000, fontSize: 14 });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open($('#term'));
  fit.fit();
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const url = `${proto}//${location.host}${t.path}?rows=${term.rows}&cols=${term.cols}`;
  const ws = new WebSocket(url, ['xpod.terminal', `xpod.key.${key}`]);
  ws.binaryType = 'arraybuffer';
  const encoder = new TextEncoder();
  let exit = null;
  ws.onopen = () => {
    status('open', 'connected');
    term.focus();
  };
  ws.onmessage = (m) => {
    if (typeof m.data !== 'string') return term.write(new Uint8Array(m.data));
    try {
      const v = JSON.parse(m.data);
      if (v.exit) exit = v.exit.code;
    } catch {
      /* not for us */
    }
  };
  ws.onclose = (e) => {
    if (exit !== null) return status('exited', `exited with code ${exit}`);
    status('closed', e.reason ? `closed: ${e.reason}` : 'closed');
    if (e.code === 1006) {
      $('#error').textContent =
        'The terminal could not be opened or was cut off (is the sandbox running? does the edge allow terminals: [tunnel] terminal = true?).';
    }
  };
  const send = (data) => ws.readyState === WebSocket.OPEN && ws.send(data);
  term.onData((d) => send(encoder.encode(d)));
  term.onBinary((d) => send(Uint8Array.from(d, (c) => c.charCodeAt(0))));
  term.onResize(({ rows, cols }) => send(JSON.stringify({ resize: { rows, cols } })));
  window.addEventListener('resize', () => fit.fit());
  $('#close').addEventListener('click', () => {
    ws.close(1000);
    window.close();
  });
}

start();
