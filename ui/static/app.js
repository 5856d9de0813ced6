// The dashboard's shell: sign-in, the hash router, and live updates from the node's event stream.

import { api, token, setToken, clearToken, whenUnauthorized, watchEvents, get } from './api.js';
import { clearMessage, message, navigated, setRefresher } from './page.js';
import { appsView, appView, buildView, envView, deploymentView, membersView, notFound, missingPage } from './views.js';
import { overviewView } from './overview.js';
import { retime } from './dom.js';

const home = '#/overview';
const routes = [
  [/^#\/overview$/, overviewView],
  [/^#\/apps$/, appsView],
  [/^#\/apps\/([^/]+)$/, appView],
  [/^#\/builds\/([^/]+)$/, buildView],
  [/^#\/envs\/([^/]+)$/, envView],
  [/^#\/deployments\/([^/]+)$/, deploymentView],
  [/^#\/members$/, membersView],
];

const $ = (id) => document.getElementById(id);
let view = null; // the view on screen
let events = null; // the AbortController of the event stream

function route() {
  if (!token()) return showSignIn();
  const hash = location.hash || home;
  view?.stop?.();
  view = null;
  navigated();
  for (const [re, make] of routes) {
    const m = hash.match(re);
    if (m) view = make(...m.slice(1).map(decodeURIComponent));
  }
  view ||= notFound(hash);
  document.title = `${view.title} · Shoal`;
  for (const a of $('nav').querySelectorAll('a')) {
    if (a.dataset.section === view.section) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  $('main').replaceChildren(view.root);
  refresh();
}

// refresh redraws the view from the API. Calls that come while one runs are folded into one more run, so a
// burst of state changes costs at most two reads of each resource.
let busy = false;
let again = false;
async function refresh() {
  if (busy) {
    again = true;
    return;
  }
  busy = true;
  try {
    do {
      again = false;
      const v = view;
      if (!v) break;
      try {
        const [, st] = await Promise.all([v.update(), get('/v1/status')]);
        showNode(st);
        v.root.dataset.loaded = 'true';
      } catch (err) {
        if (v !== view || err.status === 401) continue;
        if (err.status === 404 && v.missing) {
          // The page's subject does not exist: say so in place of the page, and stop following it.
          v.stop?.();
          v.update = async () => {};
          v.root.replaceChildren(missingPage(...v.missing, err));
          document.title = `Not found · Shoal`;
          v.root.dataset.loaded = 'true';
        } else {
          message(err.message, 'error');
        }
      }
    } while (again);
  } finally {
    busy = false;
  }
}
setRefresher(refresh);

function showNode(st) {
  $('node-info').textContent = `node ${st.node} · leader ${st.leader || 'none'}`;
}

function startEvents() {
  events?.abort();
  events = new AbortController();
  const live = $('live');
  live.hidden = false;
  watchEvents(events.signal, () => refresh(), (on) => {
    live.dataset.state = on ? 'on' : 'off';
    live.textContent = on ? 'live' : 'reconnecting…';
  });
}

function showSignIn(reason) {
  events?.abort();
  events = null;
  view?.stop?.();
  view = null;
  $('nav').hidden = true;
  $('signout').hidden = true;
  $('node-info').textContent = '';
  $('live').hidden = true;
  document.title = 'Sign in · Shoal';
  $('main').replaceChildren($('signin-template').content.cloneNode(true));
  const form = $('signin-form');
  if (reason) $('signin-error').textContent = reason;
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const t = form.elements.token.value.trim();
    const button = $('signin');
    button.disabled = true;
    try {
      // Ask with this token only: a refused sign-in must not look like an expired session.
      const st = await api('GET', '/v1/status', undefined, t);
      setToken(t);
      signedIn(st);
    } catch (err) {
      $('signin-error').textContent = err.message;
    } finally {
      button.disabled = false;
    }
  });
  $('token').focus();
}

function signedIn(st) {
  clearMessage();
  $('nav').hidden = false;
  $('signout').hidden = false;
  showNode(st);
  startEvents();
  if (!location.hash) location.hash = home; // the hashchange routes
  else route();
}

whenUnauthorized((err) => {
  clearToken();
  showSignIn(err.message);
});

$('signout').addEventListener('click', () => {
  clearToken();
  clearMessage();
  showSignIn();
});
window.addEventListener('hashchange', route);
setInterval(() => retime(), 10000); // "2 min ago" keeps true between updates

if (token()) {
  get('/v1/status').then(signedIn, (err) => {
    if (err.status !== 401) showSignIn(err.message);
  });
} else {
  showSignIn();
}
