// Search and paging over a long list, in the browser: the API answers whole lists (or their newest part), which
// stay small enough to filter here. The search box and the page survive the redraws that live updates cause.

import { h, show } from './dom.js';

// lister returns { root, set }. set(items, text, render) shows the items whose text(item) contains every word
// typed in the search box, a page at a time; render(items, empty) draws one page (empty is the note to show
// when the search matched nothing, else null).
export function lister(id, { pageSize = 20, placeholder = 'Search' } = {}) {
  let page = 0;
  let items = [];
  let text = () => '';
  let render = () => null;
  const query = h('input', { type: 'search', id: `${id}-search`, class: 'search', placeholder, 'aria-label': placeholder,
    oninput: () => { page = 0; draw(); } });
  const body = h('div');
  const prev = h('button', { type: 'button', class: 'small', id: `${id}-prev`, onclick: () => { page--; draw(); } }, '‹ Newer');
  const next = h('button', { type: 'button', class: 'small', id: `${id}-next`, onclick: () => { page++; draw(); } }, 'Older ›');
  const where = h('span', { class: 'muted small', id: `${id}-page` });
  const pager = h('div', { class: 'pager', id: `${id}-pager` }, prev, where, next);
  const root = h('div', { class: 'lister' }, query, body, pager);

  function draw() {
    const words = query.value.toLowerCase().split(/\s+/).filter(Boolean);
    const hits = words.length ? items.filter((it) => {
      const t = text(it).toLowerCase();
      return words.every((w) => t.includes(w));
    }) : items;
    const pages = Math.max(1, Math.ceil(hits.length / pageSize));
    page = Math.max(0, Math.min(page, pages - 1));
    show(body, render(hits.slice(page * pageSize, (page + 1) * pageSize), words.length ? `Nothing matches “${query.value}”.` : null));
    // The search box is there from a handful of items on; the pager when there is more than one page.
    query.hidden = items.length <= 5 && !query.value;
    pager.hidden = pages === 1;
    prev.disabled = page === 0;
    next.disabled = page >= pages - 1;
    const first = page * pageSize + 1;
    where.textContent = `${first}–${Math.min(first + pageSize - 1, hits.length)} of ${hits.length}${words.length ? ` (of ${items.length})` : ''}`;
  }

  return {
    root,
    set(list, textOf, renderPage) {
      items = list;
      text = textOf;
      render = renderPage;
      draw();
    },
  };
}
