// The node's HTTP API, called with the token the user signed in with. The token stays in this tab's session
// storage: it is sent as a header on every request and never put in a URL.

const tokenKey = 'shoal-token';

export const token = () => sessionStorage.getItem(tokenKey) || '';
export const setToken = (t) => sessionStorage.setItem(tokenKey, t);
export const clearToken = () => sessionStorage.removeItem(tokenKey);

// APIError carries the API's own message ({"error", "code"}), which is what the page shows.
export class APIError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const headers = (t = token()) => ({ Authorization: `Bearer ${t}` });

async function failure(res) {
  let body = null;
  try {
    body = await res.json();
  } catch {
    // not JSON: a proxy's page, for example
  }
  return new APIError(res.status, body?.code || '', body?.error || `${res.status} ${res.statusText}`);
}

// onUnauthorized is called when a request is refused for its token (revoked, or from another mesh).
let onUnauthorized = () => {};
export const whenUnauthorized = (fn) => { onUnauthorized = fn; };

// api calls METHOD path with an optional JSON body and answers the decoded JSON (null for no content).
export async function api(method, path, body, t) {
  // A bound on every request: the page redraws one read at a time, and one that never ends would freeze it.
  const init = { method, headers: headers(t), signal: AbortSignal.timeout(30000) };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  if (!res.ok) {
    const err = await failure(res);
    if (res.status === 401 && t === undefined) onUnauthorized(err);
    throw err;
  }
  if (res.status === 204) return null;
  return res.json();
}

export const get = (path) => api('GET', path);
export const post = (path, body = {}) => api('POST', path, body);

// stream reads a streaming answer (a followed build log, the event stream) chunk by chunk as bytes, since
// EventSource cannot send the Authorization header. It resolves when the answer ends.
export async function stream(path, signal, onChunk) {
  const res = await fetch(path, { headers: headers(), signal, cache: 'no-store' });
  if (!res.ok) {
    const err = await failure(res);
    if (res.status === 401) onUnauthorized(err);
    throw err;
  }
  const reader = res.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return;
    onChunk(value);
  }
}

// watchEvents follows GET /v1/events and calls onState({index, node}) on each state change, reconnecting until
// signal aborts. Each connection starts with the current index, so a reconnect also refreshes what the page
// shows. onLive(bool) tells whether the stream is connected.
export async function watchEvents(signal, onState, onLive) {
  let delay = 500;
  while (!signal.aborted) {
    let buf = '';
    const dec = new TextDecoder();
    try {
      await stream('/v1/events', signal, (bytes) => {
        onLive(true);
        delay = 500;
        buf += dec.decode(bytes, { stream: true });
        let end;
        while ((end = buf.search(/\r?\n\r?\n/)) >= 0) {
          const block = buf.slice(0, end);
          buf = buf.slice(end).replace(/^\r?\n\r?\n/, '');
          const ev = parseEvent(block);
          if (ev.event === 'state') onState(JSON.parse(ev.data));
        }
      });
    } catch (err) {
      if (signal.aborted || (err instanceof APIError && err.status === 401)) return;
    }
    onLive(false);
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 10000);
  }
}

function parseEvent(block) {
  const ev = { event: 'message', data: '' };
  for (const line of block.split(/\r?\n/)) {
    if (line.startsWith(':')) continue;
    const i = line.indexOf(':');
    const field = i < 0 ? line : line.slice(0, i);
    const value = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
    if (field === 'event') ev.event = value;
    else if (field === 'data') ev.data += (ev.data ? '\n' : '') + value;
  }
  return ev;
}
