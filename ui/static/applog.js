// The app's own output on an environment's servers (GET /v1/envs/{env}/logs): the last lines, then what the
// app writes next, followed until the page goes. With several servers each line starts with [server].

import { stream, APIError } from './api.js';
import { h } from './dom.js';

// appOutput returns the section that shows an environment's app output, and a stop function.
export function appOutput(env) {
  const pre = h('pre', { id: 'env-app-log', class: 'log', 'aria-live': 'off', tabindex: 0 }, '');
  const stop = new AbortController();
  follow(env, pre, stop.signal);
  const root = h('section', null, h('h2', null, 'App output'),
    h('p', { class: 'muted' }, 'What the app\'s supervised processes write to stdout and stderr (exec.log), followed live.'), pre);
  return { root, stop: () => stop.abort() };
}

const maxChars = 200000; // the page keeps the end of a long output

// follow streams the output into pre; after a break (a server restarting, the network) it starts over with
// the last lines, so nothing is shown twice.
async function follow(env, pre, signal) {
  while (!signal.aborted) {
    const dec = new TextDecoder();
    let first = true;
    try {
      await stream(`/v1/envs/${encodeURIComponent(env)}/logs?follow=1&tail=200`, signal, (bytes) => {
        const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
        let text = (first ? '' : pre.textContent) + dec.decode(bytes, { stream: true });
        first = false;
        if (text.length > maxChars) text = text.slice(text.length - maxChars);
        pre.textContent = text;
        if (atEnd) pre.scrollTop = pre.scrollHeight;
      });
    } catch (err) {
      if (signal.aborted) return;
      if (err instanceof APIError && err.status < 500) {
        pre.textContent = err.message; // no server up yet, for example: asked again below
      }
    }
    await new Promise((r) => setTimeout(r, 2000));
  }
}
