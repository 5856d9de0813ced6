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

// A message belongs to the page it was shown on: the router calls navigated() on every change of page, which
// clears the message, and an action that ends after the user left its page says nothing.
let page = 0;
export function navigated() {
  page++;
  clearMessage();
}

// refresh asks the current view to read its data again (set by the router).
let refresher = () => {};
export const setRefresher = (fn) => { refresher = fn; };
export const refresh = () => refresher();

// act runs an API action from a button: the button is disabled meanwhile, the action's answer (what fn
// returns: text or nodes) or the API's error message is shown, and the view refreshes.
export async function act(button, fn) {
  button.disabled = true;
  const on = page;
  try {
    const done = await fn();
    if (done && on === page) message(done, 'ok');
  } catch (err) {
    if (on === page) message(err.message, 'error');
  } finally {
    button.disabled = false;
    refresh();
  }
}

// confirm asks in a modal dialog; it resolves true when the user confirms.
export const confirm = (title, ...body) => ask({ title }, ...body);

// ask is confirm with the confirming button's label (default "Confirm") and whether it is drawn as dangerous
// (default yes): "Create" is not, "Terminate" is.
export function ask({ title, ok = 'Confirm', danger = true }, ...body) {
  const dlg = document.getElementById('confirm');
  if (!dlg.dataset.wired) {
    dlg.dataset.wired = 'yes';
    // The close event comes a task after the dialog closed: when a new question was opened meanwhile, the event
    // belongs to the old one (already answered no below) and must not answer the new one.
    dlg.addEventListener('close', () => {
      if (dlg.open || !answer) return;
      const a = answer;
      answer = null;
      a(dlg.returnValue === 'ok');
    });
  }
  if (dlg.open) dlg.close(); // a question on screen is replaced by this one
  answer?.(false); // a question still waiting for its close event: it was not confirmed
  document.getElementById('confirm-title').textContent = title;
  const okBtn = document.getElementById('confirm-ok');
  okBtn.textContent = ok;
  okBtn.className = danger ? 'danger' : 'primary';
  document.getElementById('confirm-body').replaceChildren(...body.map((b) => (typeof b === 'string' ? h('p', null, b) : b)));
  dlg.returnValue = '';
  return new Promise((resolve) => {
    answer = resolve;
    dlg.showModal();
  });
}

let answer = null; // resolves the question on screen
