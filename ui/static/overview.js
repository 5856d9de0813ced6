// The overview answers "is everything OK?": what needs attention first (failing, crash-looping, down or drifted
// servers, failed deployments and builds, deployments waiting for approval, with an Approve button), then every
// environment (desired release against what each server runs) and every app (its last build).

import { get, post } from './api.js';
import { h, table, badge, link, enc, ago, took, short, show } from './dom.js';
import { act } from './page.js';
import { lister } from './list.js';

const active = ['pending', 'running'];

// assess says how an environment is, from its view (with runtime) and its newest deployments.
export function assess(env, ds) {
  const servers = (env.runtime || []).map((r) => ({
    name: r.node, up: r.up, runs: r.report?.release || '', health: r.report?.health || '', detail: r.report?.detail || '',
    drift: r.drift || '',
  }));
  const problems = [];
  for (const s of servers) {
    if (['dead', 'suspect', 'left'].includes(s.up)) problems.push({ server: s.name, what: `is ${s.up} (gossip)` });
    else if (s.health === 'crash_loop' || s.health === 'down') {
      problems.push({ server: s.name, what: `${s.health.replace('_', ' ')}${s.detail ? `: ${s.detail}` : ''}` });
    }
    if (s.drift) problems.push({ server: s.name, what: s.drift });
  }
  const newest = ds[0];
  if (newest && ['failed', 'rolled_back'].includes(newest.state)) {
    problems.push({ dep: newest, what: `deployment of ${newest.release} ${newest.state.replace('_', ' ')}${newest.error ? `: ${newest.error}` : ''}` });
  }
  const waiting = ds.filter((d) => d.state === 'waiting_approval');
  const running = ds.filter((d) => active.includes(d.state));
  let state = 'healthy';
  if (problems.length) state = 'failing';
  else if (running.length) state = 'deploying';
  else if (waiting.length) state = 'waiting_approval';
  else if (servers.length && servers.every((s) => s.health === 'stopped')) state = 'stopped'; // terminated on purpose
  return { env, ds, servers, problems, waiting, running, state };
}

export function approveButton(d) {
  const btn = h('button', { type: 'button', class: 'small', 'data-testid': `approve-${d.env}`, title: `Approve deployment ${d.id}`,
    onclick: () => act(btn, async () => {
      await post(`/v1/deployments/${enc(d.id)}/approve`);
      return ['Deployment ', link(`#/deployments/${enc(d.id)}`, d.id), ` of ${d.release} to ${d.env} approved.`];
    }) }, `Approve ${d.release}`);
  return btn;
}

// serversCell lists an environment's servers: what each runs (red when it is not the desired release) and how.
function serversCell(a) {
  if (!a.servers.length) return h('span', { class: 'muted' }, 'no servers');
  return a.servers.map((s) => h('div', { class: 'srv', 'data-testid': `ov-server-${a.env.name}-${s.name}` },
    h('strong', null, s.name), ' ',
    h('span', { class: `release${a.env.desired && s.runs !== a.env.desired ? ' error' : ''}` }, s.runs || '—'), ' ',
    s.health ? badge(s.health) : h('span', { class: 'muted small' }, 'no report'),
    ['dead', 'suspect', 'left'].includes(s.up) ? [' ', badge(s.up)] : ''));
}

function deploymentCell(a) {
  const d = a.running[0] || a.waiting[0] || a.ds[0];
  if (!d) return h('span', { class: 'muted' }, 'none yet');
  const depLink = link(`#/deployments/${enc(d.id)}`, d.release || d.kind);
  return [badge(d.state), ' ', d.kind !== 'deploy' ? `${d.kind} ` : '', depLink, ' ',
    h('span', { class: 'muted small' }, active.includes(d.state) ? ['for ', took(d.created_at)] : ago(d.ended_at && !d.ended_at.startsWith('0001-') ? d.ended_at : d.created_at)),
    d.state === 'waiting_approval' ? [' ', approveButton(d)] : ''];
}

export function envRows(id, rows, empty) {
  return table(id, [
    ['Environment', (a) => link(`#/envs/${enc(a.env.name)}`, a.env.name, { 'data-testid': `env-link-${a.env.name}` })],
    ['App', (a) => link(`#/apps/${enc(a.env.app)}`, a.env.app)],
    ['Status', (a) => [badge(a.state, `env-status-${a.env.name}`), a.env.pinned ? [' ', badge('pinned')] : '']],
    ['Desired', (a) => h('strong', { class: 'release' }, a.env.desired || '—')],
    ['Servers', serversCell],
    ['Deployment', deploymentCell],
  ], rows, (a) => ({ 'data-env': a.env.name, 'data-status': a.state }), empty || 'No environments yet.');
}

// lastBuildCols are the columns that show an app's last build.
export const lastBuildCols = [
  ['Last build', (r) => (r.build ? [link(`#/builds/${enc(r.build.id)}`, `#${r.build.number}`), ' ', badge(r.build.state, `last-build-${r.app.name}`)]
    : h('span', { class: 'muted' }, 'none yet'))],
  ['Commit', (r) => (r.build ? [short(r.build.commit), r.build.message ? h('div', { class: 'msg' }, r.build.message.split('\n')[0]) : ''] : '')],
  ['Took', (r) => (r.build ? took(r.build.started_at, r.build.ended_at) : '')],
  ['When', (r) => (r.build ? ago(r.build.queued_at) : '')],
];

// withLastBuild reads each app's last build.
export async function withLastBuild(apps) {
  const last = await Promise.all(apps.map((a) => get(`/v1/apps/${enc(a.name)}/builds?limit=1`).catch(() => [])));
  return apps.map((a, i) => ({ app: a, build: last[i][0] || null }));
}

export function overviewView() {
  const status = h('div');
  const attention = h('div');
  const envs = lister('overview-envs', { placeholder: 'Search environments, apps, servers, releases' });
  const apps = lister('overview-apps', { placeholder: 'Search apps, commits, messages' });
  const root = h('section', null, h('h1', null, 'Overview'), status, h('h2', null, 'Needs attention'), attention,
    h('h2', null, 'Environments'), envs.root, h('h2', null, 'Apps'), apps.root);

  async function update() {
    const [as, es] = await Promise.all([get('/v1/apps'), get('/v1/envs')]);
    const [views, deps, appRows] = await Promise.all([
      Promise.all(es.map((e) => get(`/v1/envs/${enc(e.name)}`).catch(() => null))), // deleted meanwhile: left out
      Promise.all(es.map((e) => get(`/v1/envs/${enc(e.name)}/deployments?limit=10`).catch(() => []))),
      withLastBuild(as),
    ]);
    const assessed = views.map((v, i) => v && assess(v, deps[i])).filter(Boolean);
    const failedBuilds = appRows.filter((r) => r.build && ['failed', 'abandoned'].includes(r.build.state));
    const items = [];
    for (const a of assessed) {
      for (const p of a.problems) {
        items.push(h('li', { 'data-testid': `attention-${a.env.name}` }, badge('failing'), ' ', link(`#/envs/${enc(a.env.name)}`, a.env.name),
          p.server ? [' · ', h('strong', null, p.server)] : '', `: ${p.what}`,
          p.dep ? [' (', link(`#/deployments/${enc(p.dep.id)}`, p.dep.id), ')'] : ''));
      }
      for (const d of a.waiting) {
        items.push(h('li', { 'data-testid': `attention-${a.env.name}` }, badge('waiting_approval'), ' ', link(`#/envs/${enc(a.env.name)}`, a.env.name),
          `: ${d.release} waits for approval since `, ago(d.created_at), ' ', approveButton(d)));
      }
    }
    for (const r of failedBuilds) {
      items.push(h('li', { 'data-testid': `attention-app-${r.app.name}` }, badge(r.build.state), ' ', link(`#/apps/${enc(r.app.name)}`, r.app.name),
        ': build ', link(`#/builds/${enc(r.build.id)}`, `#${r.build.number}`), ` ${r.build.state}`, r.build.error ? `: ${r.build.error}` : ''));
    }
    const running = assessed.reduce((n, a) => n + a.running.length, 0);
    const ok = !items.length;
    show(status, h('p', { id: 'overview-status', class: `verdict ${ok ? 'ok' : 'bad'}`, 'data-ok': String(ok) },
      ok ? 'Everything is OK' : `${items.length} ${items.length === 1 ? 'thing needs' : 'things need'} attention`,
      h('span', { class: 'muted' }, ` · ${assessed.length} environments, ${as.length} apps, ${running} deployments running`)));
    show(attention, ok ? h('p', { id: 'attention', class: 'muted empty' }, 'Nothing: every server runs what it should and is healthy.')
      : h('ul', { id: 'attention', class: 'attention' }, items));

    const word = (a) => [a.env.name, a.env.app, a.env.desired, a.state, ...a.servers.flatMap((s) => [s.name, s.runs, s.health])].join(' ');
    // What needs attention first, then by name.
    const rank = { failing: 0, waiting_approval: 1, deploying: 2, healthy: 3, stopped: 4 };
    assessed.sort((x, y) => rank[x.state] - rank[y.state] || x.env.name.localeCompare(y.env.name));
    envs.set(assessed, word, (rows, empty) => envRows('overview-envs', rows, empty));
    // The apps built last first: the ones people work on.
    const built = (r) => (r.build ? r.build.queued_at : '');
    appRows.sort((x, y) => built(y).localeCompare(built(x)) || x.app.name.localeCompare(y.app.name));
    apps.set(appRows, (r) => [r.app.name, r.app.repo, r.build?.message, r.build?.commit, r.build?.state].join(' '), (rows, empty) =>
      table('overview-apps', [
        ['App', (r) => link(`#/apps/${enc(r.app.name)}`, r.app.name, { 'data-testid': `app-link-${r.app.name}` })],
        ...lastBuildCols,
        ['Environments', (r) => es.filter((e) => e.app === r.app.name).map((e, i) => [i ? ', ' : '', link(`#/envs/${enc(e.name)}`, e.name),
          e.desired ? h('span', { class: 'muted' }, ` ${e.desired}`) : ''])],
      ], rows, (r) => ({ 'data-app': r.app.name }), empty || 'No apps yet: create one on the Apps page.'));
  }
  return { title: 'Overview', section: 'overview', root, update };
}
