// Small DOM helpers. Text always goes in as text nodes, never as HTML: names, commit messages and logs come
// from users and repositories.

// h builds an element: h('a', {href: '#/apps'}, 'Apps'). Attributes starting with "on" are listeners; null,
// undefined and false attributes and children are left out.
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

// table builds a table of rows with a header; cols are [title, (row) => cell content]. rowAttrs gives each row
// its attributes (test ids, states).
// On a narrow screen each row becomes a card (style.css), each cell labelled by its column's title.
export function table(id, cols, rows, rowAttrs = () => ({}), empty = 'None yet.') {
  if (!rows.length) return h('p', { id, class: 'muted empty' }, empty);
  return h('div', { class: 'table-wrap' }, h('table', { id },
    h('thead', null, h('tr', null, cols.map(([title]) => h('th', { scope: 'col' }, title)))),
    h('tbody', null, rows.map((r) => h('tr', rowAttrs(r), cols.map(([title, cell]) => h('td', { 'data-label': title }, cell(r))))))));
}

// badge shows a state in its colour.
export const badge = (state, testid) =>
  state ? h('span', { class: `st st-${state}`, 'data-testid': testid }, state.replaceAll('_', ' ')) : h('span', { class: 'muted' }, '—');

export const link = (href, text, attrs = {}) => h('a', { href, ...attrs }, text);

export const enc = encodeURIComponent;

const unset = (t) => !t || t.startsWith('0001-');

// when shows a time as a short local date and time and how long ago it was, with the full time on hover.
export function when(t) {
  if (unset(t)) return '—';
  const d = new Date(t);
  return h('time', { datetime: t, title: d.toString() }, d.toLocaleString(undefined, {
    month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit',
  }), h('span', { class: 'muted', 'data-ago': t }, ` · ${relative(t)}`));
}

// ago shows how long ago a time was ("3 min ago"), with the full time on hover.
export function ago(t) {
  if (unset(t)) return '—';
  return h('time', { datetime: t, title: new Date(t).toString(), 'data-ago': t }, relative(t));
}

export function relative(t, now = Date.now()) {
  const s = Math.round((now - new Date(t).getTime()) / 1000);
  if (s < 0) return 'in the future'; // another node's clock runs ahead of this browser's
  if (s < 5) return 'just now';
  return `${span(s * 1000)} ago`;
}

// retime rewrites the relative times on the page, so that an idle page does not say "just now" for ever.
export function retime(root = document) {
  for (const el of root.querySelectorAll('[data-ago]')) {
    const text = el.tagName === 'SPAN' ? ` · ${relative(el.dataset.ago)}` : relative(el.dataset.ago);
    if (el.textContent !== text) el.textContent = text;
  }
}

// span says a length of time the way people read it: "45s", "3m 12s", "2h 5m", "3d 4h".
export function span(ms) {
  let s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  let m = Math.floor(s / 60);
  s %= 60;
  if (m < 60) return `${m}m ${s}s`;
  let hrs = Math.floor(m / 60);
  m %= 60;
  if (hrs < 48) return `${hrs}h ${m}m`;
  const days = Math.floor(hrs / 24);
  hrs %= 24;
  return `${days}d ${hrs}h`;
}

// took says how long something from start to end lasted, or has lasted so far when it has not ended.
export function took(start, end) {
  if (unset(start)) return '—';
  const stop = unset(end) ? Date.now() : new Date(end).getTime();
  return h('span', { class: 'duration', title: unset(end) ? 'so far' : null }, span(stop - new Date(start).getTime()), unset(end) ? '…' : '');
}

export const short = (sha) => (sha ? h('code', { title: sha }, sha.slice(0, 10)) : '—');

export function bytes(n) {
  if (!n) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

// fillSelect replaces a select's options and keeps the chosen one when it is still offered.
export function fillSelect(sel, values, label = (v) => v) {
  if ([...sel.options].map((o) => o.value).join('\n') === values.join('\n')) return;
  const keep = sel.value;
  sel.replaceChildren(...values.map((v) => h('option', { value: v }, label(v))));
  if (values.includes(keep)) sel.value = keep;
}

// show puts content into a live part of a page unless that part shows the same already. Redrawing only what
// changed keeps focus, text selection and the element under the pointer in place while updates stream in.
export function show(container, ...content) {
  const next = document.createElement('div');
  next.append(...content.flat().filter((c) => c != null && c !== false));
  if (next.innerHTML === container.innerHTML) return;
  container.replaceChildren(...next.childNodes);
}
