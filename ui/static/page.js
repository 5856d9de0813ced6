// What every view shares: the message line, actions on buttons, the confirmation dialog, and refreshing.

import { h } from './dom.js';

const messageEl = () => document.getElementById('message');

// message shows a short note in the page's corner: kind is "ok" or "error". An error stays until the next
// message or until dismissed; a success goes away after a while.
let messageTimer;
export function message(content, kind = 'ok') {
  const el = messageEl();
  clearTimeout(messageTimer);
  el.replaceChildren(h('span', { id: 'message-text' }, content),
    h('button', { type: 'button', class: 'dismiss', 'aria-label': 'Dismiss', onclick: clearMessage }, '×'));
  el.className = `message ${kind}`;
  el.dataset.kind = kind;
  el.setAttribute('role', kind === 'error' ? 'alert' : 'status');
  el.hidden = false;
  if (kind === 'ok') messageTimer = setTimeout(() => { el.hidden = true; }, 15000);
}

export function clearMessage() {
  clearTimeout(messageTimer);
  messageEl().hidden = true;
}

// refresh asks the current view to read its data again (set by the router).
let refresher = () => {};
export const setRefresher = (fn) => { refresher = fn; };
export const refresh = () => refresher();

// act runs an API action from a button: the button is disabled meanwhile, the action's answer (what fn
// returns: text or nodes) or the API's error message is shown, and the view refreshes.
export async function act(button, fn) {
  button.disabled = true;
  try {
    const done = await fn();
    if (done) message(done, 'ok');
  } catch (err) {
    message(err.message, 'error');
  } finally {
    button.disabled = false;
    refresh();
  }
}

// confirm asks in a modal dialog; it resolves true when the user confirms.
export function confirm(title, ...body) {
  const dlg = document.getElementById('confirm');
  document.getElementById('confirm-title').textContent = title;
  document.getElementById('confirm-body').replaceChildren(...body.map((b) => (typeof b === 'string' ? h('p', null, b) : b)));
  dlg.returnValue = '';
  return new Promise((resolve) => {
    dlg.addEventListener('close', () => resolve(dlg.returnValue === 'ok'), { once: true });
    dlg.showModal();
  });
}
