// The dashboard's views. Each view builds its page once (headings, forms, buttons) and has an update() that
// reads the API and redraws the parts that show data; the router calls update() on every state change, so
// what a user typed or chose in a form survives the redraws.

import { get, post, stream, APIError } from './api.js';
import { h, table, badge, link, enc, when, short, bytes, fillSelect, show } from './dom.js';
import { act, confirm, message } from './page.js';
import { appOutput } from './applog.js';

const yes = (b) => (b ? 'yes' : 'no');

function dl(id, pairs) {
  return h('dl', { id, class: 'facts' }, pairs.filter(Boolean).map(([k, v]) => [h('dt', null, k), h('dd', null, v)]));
}

const depLink = (id) => link(`#/deployments/${enc(id)}`, h('code', null, id), { 'data-testid': `dep-link-${id}` });

// created says what a request that may start a deployment did: the deployment (linked) or why nothing.
function created(res, what) {
  if (res?.deployment) return [`${what}: deployment `, depLink(res.deployment.id), ` of ${res.deployment.release} started.`];
  return res?.message || `${what}: nothing to do.`;
}

export function appsView() {
  const apps = h('div');
  const envs = h('div');
  const root = h('section', null, h('h1', null, 'Apps'), apps, h('h2', null, 'Environments'), envs);
  async function update() {
    const [as, es] = await Promise.all([get('/v1/apps'), get('/v1/envs')]);
    show(apps, table('apps', [
      ['App', (a) => link(`#/apps/${enc(a.name)}`, a.name, { 'data-testid': `app-link-${a.name}` })],
      ['Repository', (a) => h('code', null, a.repo)],
      ['Branch', (a) => a.branch],
      ['Auto build', (a) => yes(a.auto_build)],
      ['Environments', (a) => es.filter((e) => e.app === a.name).map((e, i) => [i ? ', ' : '', link(`#/envs/${enc(e.name)}`, e.name)])],
    ], as, (a) => ({ 'data-app': a.name }), 'No apps yet: `node app create NAME --repo URL` adds one.'));
    show(envs, envTable('envs', es));
  }
  return { title: 'Apps', section: 'apps', root, update };
}

function envTable(id, es) {
  return table(id, [
    ['Environment', (e) => link(`#/envs/${enc(e.name)}`, e.name, { 'data-testid': `env-link-${e.name}` })],
    ['App', (e) => link(`#/apps/${enc(e.app)}`, e.app)],
    ['Release', (e) => e.desired || '—'],
    ['Stable', (e) => e.stable || '—'],
    ['Pinned', (e) => (e.pinned ? badge('pinned') : 'no')],
    ['Auto deploy', (e) => yes(e.auto_deploy)],
  ], es, (e) => ({ 'data-env': e.name }), 'No environments yet.');
}

export function appView(name) {
  const facts = h('div');
  const builds = h('div');
  const releases = h('div');
  const envs = h('div');
  const ref = h('input', { id: 'build-ref', name: 'ref', placeholder: 'branch, tag or commit (default: the app’s branch)', size: 40 });
  const buildBtn = h('button', { id: 'build', type: 'submit' }, 'Build');
  const form = h('form', { class: 'actions', onsubmit: (ev) => {
    ev.preventDefault();
    act(buildBtn, async () => {
      const b = await post(`/v1/apps/${enc(name)}/builds`, ref.value ? { ref: ref.value } : {});
      return ['Build ', link(`#/builds/${enc(b.id)}`, `#${b.number}`), ' queued.'];
    });
  } }, h('label', { for: 'build-ref' }, 'Build'), ref, buildBtn);
  const root = h('section', null, h('h1', null, 'App ', h('span', { class: 'name' }, name)), facts, form,
    h('h2', null, 'Environments'), envs, h('h2', null, 'Builds'), builds, h('h2', null, 'Releases'), releases);
  async function update() {
    const p = `/v1/apps/${enc(name)}`;
    const [app, bs, rs, es, pipe] = await Promise.all([get(p), get(`${p}/builds?limit=20`), get(`${p}/releases`),
      get(`/v1/envs?app=${enc(name)}`), get(`${p}/pipeline`)]);
    show(facts, dl('app-facts', [
      ['Repository', h('code', null, app.repo)], ['Branch', app.branch], ['Manifest', app.manifest || 'shoal.yml'],
      ['Auto build', yes(app.auto_build)], ['Webhook secret', app.webhook_secret_set ? 'set' : 'not set'],
      ['Pipeline', pipe.stages.length ? pipe.stages.map((s, i) => [i ? ' → ' : '', link(`#/envs/${enc(s.env)}`, s.env), s.approval ? ' (approval)' : '']) : 'none'],
    ]));
    show(envs, envTable('app-envs', es));
    show(builds, table('builds', [
      ['Build', (b) => link(`#/builds/${enc(b.id)}`, `#${b.number}`, { 'data-testid': `build-link-${b.number}` })],
      ['State', (b) => badge(b.state)],
      ['Commit', (b) => [short(b.commit), b.message ? h('span', { class: 'muted' }, ` ${b.message.split('\n')[0]}`) : '']],
      ['Branch', (b) => b.branch || b.ref],
      ['Trigger', (b) => b.trigger],
      ['Release', (b) => b.release || '—'],
      ['Queued', (b) => when(b.queued_at)],
    ], bs, (b) => ({ 'data-state': b.state }), 'No builds yet.'));
    show(releases, table('releases', [
      ['Release', (r) => h('strong', null, r.version)],
      ['Build', (r) => (r.build ? link(`#/builds/${enc(r.build)}`, 'build') : 'uploaded')],
      ['Commit', (r) => short(r.commit)],
      ['Size', (r) => bytes(r.size)],
      ['Held by', (r) => (r.holders || []).join(', ')],
      ['Created', (r) => when(r.created_at)],
      ['Notes', (r) => r.notes || ''],
    ], rs.slice(0, 50), (r) => ({ 'data-release': r.version }), 'No releases yet.'));
  }
  return { title: `App ${name}`, section: 'apps', root, update };
}

export function buildView(id) {
  const facts = h('div');
  const log = h('pre', { id: 'build-log', class: 'log', 'aria-live': 'off', tabindex: 0 });
  const cancelBtn = h('button', { id: 'build-cancel', type: 'button', class: 'danger', hidden: true,
    onclick: () => act(cancelBtn, async () => { await post(`/v1/builds/${enc(id)}/cancel`); return 'Cancel requested.'; }) }, 'Cancel build');
  const root = h('section', null, h('h1', null, 'Build ', h('code', null, id)), facts, h('p', { class: 'actions' }, cancelBtn),
    h('h2', null, 'Log'), log);
  const stop = new AbortController();
  followLog(id, log, stop.signal);
  async function update() {
    const b = await get(`/v1/builds/${enc(id)}`);
    cancelBtn.hidden = ['succeeded', 'failed', 'cancelled', 'abandoned'].includes(b.state);
    show(facts, dl('build-facts', [
      ['App', link(`#/apps/${enc(b.app)}`, b.app)], ['Number', `#${b.number}`], ['State', badge(b.state, 'build-state')],
      ['Commit', [short(b.commit), b.message ? ` ${b.message.split('\n')[0]}` : '']], ['Ref', b.ref || b.branch],
      ['Trigger', b.trigger], ['Node', b.node ? `${b.node} (attempt ${b.attempt})` : '—'],
      ['Queued', when(b.queued_at)], ['Started', when(b.started_at)], ['Ended', when(b.ended_at)],
      b.release && ['Release', link(`#/apps/${enc(b.app)}`, b.release)],
      b.error && ['Error', h('span', { class: 'error' }, b.error)],
    ]));
  }
  return { title: `Build ${id}`, section: 'apps', root, update, stop: () => stop.abort() };
}

// followLog streams a build's log into pre as it is written, continuing from where it broke off when the
// connection drops, until the build has ended.
async function followLog(id, pre, signal) {
  let off = 0;
  const dec = new TextDecoder();
  while (!signal.aborted) {
    try {
      await stream(`/v1/builds/${enc(id)}/log?follow=1&offset=${off}`, signal, (bytes) => {
        off += bytes.length;
        const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
        pre.append(dec.decode(bytes, { stream: true }));
        if (atEnd) pre.scrollTop = pre.scrollHeight;
      });
      return; // the answer ends when the build has ended
    } catch (err) {
      if (signal.aborted) return;
      if (err instanceof APIError && err.status < 500) {
        pre.append(`\n--- ${err.message} ---\n`);
        return;
      }
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

// serverStates says, for each server of an environment, what it runs and how it is: from the newest deployment
// it reported into (deployments come newest first), and gossip for whether it is up.
function serverStates(env, members, deps) {
  const names = new Set(env.servers || []);
  const tags = Object.entries(env.tags || {});
  const byName = new Map(members.map((m) => [m.name, m]));
  if (tags.length) {
    for (const m of members) if (tags.every(([k, v]) => (m.tags || {})[k] === v)) names.add(m.name);
  }
  for (const b of deps[0]?.batches || []) b.forEach((n) => names.add(n));
  const runtime = new Map((env.runtime || []).map((r) => [r.node, r]));
  for (const n of runtime.keys()) names.add(n);
  return [...names].sort().map((name) => {
    const dep = deps.find((d) => d.nodes && d.nodes[name]);
    const st = dep ? dep.nodes[name] : null;
    const rt = runtime.get(name);
    return { name, member: byName.get(name), dep, st, rt, release: st ? st.release || dep.release : '', runs: rt?.report?.release || '' };
  });
}

// runtimeHealth is what a server's processes do now, from its own report: "healthy", "crash loop" and why.
function runtimeHealth(s) {
  const r = s.rt?.report;
  if (!r) return h('span', { class: 'muted', 'data-testid': `runtime-health-${s.name}` }, 'no report');
  return [badge(r.health, `runtime-health-${s.name}`), r.detail && r.health !== 'starting' ? h('div', { class: 'muted small' }, r.detail) : ''];
}

// restarts counts the restarts of the release's Exec processes, with the last exit below.
function restarts(s) {
  const r = s.rt?.report;
  if (!r) return '—';
  const x = r.last_exit;
  return [h('span', { 'data-testid': `runtime-restarts-${s.name}` }, String(r.restarts)),
    x ? h('div', { class: 'muted small', title: `pid ${x.pid}` }, `last: ${x.status} after ${x.ran}, `, when(x.at)) : ''];
}

// drift says how a server differs from what it should run, or that it was repaired.
function driftCell(s) {
  const id = `runtime-drift-${s.name}`;
  if (s.rt?.drift) return h('span', { class: 'error', 'data-testid': id }, s.rt.drift);
  if (s.rt?.deploying) return h('span', { class: 'muted', 'data-testid': id }, 'deploying');
  const last = s.rt?.report?.last_drift;
  return h('span', { class: 'muted', 'data-testid': id, title: last ? `repaired: ${last}` : null }, last ? 'repaired' : 'none');
}

export function envView(name) {
  const pinSlot = h('span', { id: 'env-pin' });
  const title = h('h1', null, 'Environment ', h('span', { class: 'name' }, name), ' ', pinSlot);
  const facts = h('div');
  const servers = h('div');
  const deps = h('div');
  let env = null;
  let next = '';

  const release = h('select', { id: 'deploy-release', name: 'release', required: true });
  const deployBtn = h('button', { id: 'deploy', type: 'submit' }, 'Deploy');
  const deployForm = h('form', { class: 'actions', onsubmit: (ev) => {
    ev.preventDefault();
    const v = release.value;
    act(deployBtn, async () => created(await post(`/v1/envs/${enc(name)}/deployments`, { release: v }), `Deploy ${v} to ${name}`));
  } }, h('label', { for: 'deploy-release' }, 'Release'), release, deployBtn);

  const rollbackBtn = h('button', { id: 'rollback', type: 'button', class: 'danger', onclick: rollback }, 'Roll back…');
  const pinBtn = h('button', { id: 'pin-toggle', type: 'button', onclick: () => {
    const pinned = env?.pinned;
    act(pinBtn, async () => {
      await post(`/v1/envs/${enc(name)}/${pinned ? 'unpin' : 'pin'}`);
      return pinned ? `${name} is unpinned: auto deploy and promotions reach it again.` : `${name} is pinned.`;
    });
  } }, 'Pin');
  const promoteBtn = h('button', { id: 'promote', type: 'button', hidden: true, onclick: () => {
    const rel = env?.desired;
    act(promoteBtn, async () => created(await post(`/v1/apps/${enc(env.app)}/promote`, { release: rel, from: name, to: next }),
      `Promote ${rel} to ${next}`));
  } }, 'Promote');
  const rollbackTo = h('select', { id: 'rollback-to', name: 'to' });

  async function rollback() {
    fillSelect(rollbackTo, ['', ...(await releasesOf(env.app))], (v) => v || 'the release before the current one');
    const ok = await confirm(`Roll back ${name}?`,
      'The environment goes back to an earlier release and is pinned: auto deploy stops until you unpin it.',
      h('p', null, h('label', { for: 'rollback-to' }, 'Go back to '), rollbackTo));
    if (!ok) return;
    const to = rollbackTo.value;
    act(rollbackBtn, async () => created(await post(`/v1/envs/${enc(name)}/rollback`, to ? { to } : {}), `Roll back ${name}`));
  }

  const output = appOutput(name);
  const root = h('section', null, title, facts,
    h('div', { class: 'toolbar', role: 'group', 'aria-label': 'Actions' }, deployForm, rollbackBtn, pinBtn, promoteBtn),
    h('h2', null, 'Servers'), servers, h('h2', null, 'Deployments'), deps, output.root);

  async function update() {
    env = await get(`/v1/envs/${enc(name)}`);
    const [ds, ms, rs, pipe] = await Promise.all([get(`/v1/envs/${enc(name)}/deployments?limit=50`), get('/v1/members'),
      releasesOf(env.app), get(`/v1/apps/${enc(env.app)}/pipeline`)]);
    show(pinSlot, env.pinned ? badge('pinned', 'env-pinned') : '');
    pinBtn.textContent = env.pinned ? 'Unpin' : 'Pin';
    fillSelect(release, rs);
    const i = pipe.stages.findIndex((s) => s.env === name);
    next = i >= 0 && i + 1 < pipe.stages.length ? pipe.stages[i + 1].env : '';
    promoteBtn.hidden = !next || !env.desired;
    promoteBtn.textContent = `Promote ${env.desired} to ${next}`;
    const st = env.strategy || {};
    show(facts, dl('env-facts', [
      ['App', link(`#/apps/${enc(env.app)}`, env.app)],
      ['Release', h('strong', { id: 'env-desired' }, env.desired || '—')],
      ['Stable', h('span', { id: 'env-stable' }, env.stable || '—')],
      ['Pinned', env.pinned ? h('span', { id: 'env-pin-reason' }, `pinned: ${env.pin_reason || ''}`) : 'no'],
      ['Auto deploy', yes(env.auto_deploy)],
      ['Strategy', [st.kind || 'all', st.batch_size ? `, ${st.batch_size} at a time` : '', st.batch_percent ? `, ${st.batch_percent}% at a time` : '',
        st.auto_rollback ? ', auto rollback' : '']],
      ['Servers', [(env.servers || []).join(', '), Object.entries(env.tags || {}).map(([k, v]) => ` ${k}=${v}`)]],
      ['Min healthy time', h('span', { id: 'env-min-healthy' }, env.min_healthy_time || '10s (the default)')],
    ]));
    show(servers, table('servers', [
      ['Server', (s) => h('strong', null, s.name)],
      ['Up', (s) => badge(s.member ? s.member.status : 'unknown')],
      ['Runs', (s) => h('span', { class: 'release', 'data-testid': `runtime-release-${s.name}` }, s.runs || '—')],
      ['Health', runtimeHealth],
      ['PIDs', (s) => h('span', { 'data-testid': `runtime-pids-${s.name}` }, (s.rt?.report?.procs || []).map((p) => p.pid).join(', ') || '—')],
      ['Restarts', restarts],
      ['Drift', driftCell],
      ['Deployed', (s) => h('span', { class: 'release' }, s.release || '—')],
      ['State', (s) => badge(s.st?.state, `server-state-${s.name}`)],
      ['Phase', (s) => s.st?.phase || ''],
      ['Progress', (s) => (s.st && s.st.state === 'downloading' ? `${Math.round(s.st.progress * 100)}%` : '')],
      ['Error', (s) => (s.st?.error ? h('span', { class: 'error' }, s.st.error) : '')],
      ['Deployment', (s) => (s.dep ? depLink(s.dep.id) : '—')],
    ], serverStates(env, ms, ds), (s) => ({ 'data-testid': `server-${s.name}`, 'data-state': s.st?.state || '', 'data-release': s.release,
      'data-runs': s.runs, 'data-health': s.rt?.report?.health || '', 'data-drift': s.rt?.drift ? 'yes' : 'no' }),
    'No servers in this environment.'));
    show(deps, deploymentsTable('env-deployments', ds));
  }
  return { title: `Environment ${name}`, section: 'apps', root, update, stop: output.stop };
}

async function releasesOf(app) {
  return (await get(`/v1/apps/${enc(app)}/releases`)).map((r) => r.version);
}

function deploymentsTable(id, ds) {
  return table(id, [
    ['Deployment', (d) => depLink(d.id)],
    ['Kind', (d) => d.kind],
    ['Release', (d) => [h('strong', null, d.release), d.previous ? h('span', { class: 'muted' }, ` from ${d.previous}`) : '']],
    ['State', (d) => badge(d.state)],
    ['Servers', (d) => nodeSummary(d)],
    ['By', (d) => d.by],
    ['Created', (d) => when(d.created_at)],
    ['Ended', (d) => when(d.ended_at)],
  ], ds, (d) => ({ 'data-state': d.state, 'data-release': d.release }), 'No deployments yet.');
}

// nodeSummary counts a deployment's servers by state: "2 healthy, 1 installing".
function nodeSummary(d) {
  const counts = {};
  for (const st of Object.values(d.nodes || {})) counts[st.state] = (counts[st.state] || 0) + 1;
  const total = (d.batches || []).reduce((n, b) => n + b.length, 0);
  const parts = Object.entries(counts).map(([s, n]) => h('span', { class: `count st-text-${s}` }, `${n} ${s}`));
  return [parts.map((p, i) => [i ? ', ' : '', p]), total ? h('span', { class: 'muted' }, ` of ${total}`) : ''];
}

export function deploymentView(id) {
  const facts = h('div');
  const nodes = h('div');
  const logs = h('div', { id: 'deploy-logs' });
  const openLogs = new Map(); // server name → its <pre>
  let dep = null;
  const approveBtn = h('button', { id: 'approve', type: 'button', hidden: true,
    onclick: () => act(approveBtn, async () => { await post(`/v1/deployments/${enc(id)}/approve`); return `Deployment ${id} approved.`; }) }, 'Approve');
  const cancelBtn = h('button', { id: 'deploy-cancel', type: 'button', class: 'danger', hidden: true, onclick: async () => {
    if (await confirm(`Cancel deployment ${id}?`, 'Servers already done keep the new release; the others keep theirs.')) {
      act(cancelBtn, async () => { await post(`/v1/deployments/${enc(id)}/cancel`); return `Deployment ${id} cancelled.`; });
    }
  } }, 'Cancel deployment');
  const root = h('section', null, h('h1', null, 'Deployment ', h('code', null, id)), facts,
    h('div', { class: 'toolbar', role: 'group', 'aria-label': 'Actions' }, approveBtn, cancelBtn),
    h('h2', null, 'Servers'), nodes, logs);

  async function showLog(server) {
    let pre = openLogs.get(server);
    if (pre) {
      pre.parentElement.remove();
      openLogs.delete(server);
      return;
    }
    pre = h('pre', { class: 'log', id: `deploy-log-${server}`, tabindex: 0 }, 'Loading…');
    openLogs.set(server, pre);
    logs.append(h('section', null, h('h3', null, `Log of ${server}`), pre));
    await loadLog(server, pre);
  }
  async function loadLog(server, pre) {
    try {
      const r = await get(`/v1/deployments/${enc(id)}/nodes/${enc(server)}/log`);
      pre.textContent = (r.truncated ? '… (only the end is shown)\n' : '') + (r.log || '(this server has written nothing for this deployment)');
    } catch (err) {
      pre.textContent = err.message;
    }
  }

  async function update() {
    dep = await get(`/v1/deployments/${enc(id)}`);
    approveBtn.hidden = dep.state !== 'waiting_approval';
    cancelBtn.hidden = !['pending', 'running', 'waiting_approval'].includes(dep.state);
    const st = dep.strategy || {};
    show(facts, dl('deployment-facts', [
      ['Environment', link(`#/envs/${enc(dep.env)}`, dep.env)], ['App', link(`#/apps/${enc(dep.app)}`, dep.app)],
      ['Kind', dep.kind], ['Release', [h('strong', null, dep.release), dep.previous ? ` (was ${dep.previous})` : '']],
      ['State', badge(dep.state, 'deployment-state')],
      ['Batch', dep.batches?.length ? `${Math.min(dep.batch + 1, dep.batches.length)} of ${dep.batches.length}` : '—'],
      ['Strategy', [st.kind || 'all', st.auto_rollback ? ', auto rollback' : '']],
      ['By', dep.by], dep.approved_by && ['Approved by', dep.approved_by], dep.cancelled_by && ['Cancelled by', dep.cancelled_by],
      ['Created', when(dep.created_at)], ['Ended', when(dep.ended_at)],
      dep.error && ['Error', h('span', { class: 'error' }, dep.error)],
    ]));
    const rows = [];
    (dep.batches || []).forEach((b, i) => b.forEach((name) => rows.push({ name, batch: i, st: dep.nodes?.[name] })));
    show(nodes, table('deployment-nodes', [
      ['Server', (r) => h('strong', null, r.name)],
      ['Batch', (r) => `${r.batch + 1}${r.batch > dep.batch ? ' (not started)' : ''}`],
      ['State', (r) => badge(r.st?.state || (r.batch > dep.batch ? 'waiting' : 'pending'), `node-state-${r.name}`)],
      ['Phase', (r) => r.st?.phase || ''],
      ['Progress', (r) => (r.st && r.st.state === 'downloading' ? `${Math.round(r.st.progress * 100)}%` : '')],
      ['Release', (r) => r.st?.release || ''],
      ['Error', (r) => (r.st?.error ? h('span', { class: 'error' }, r.st.error) : '')],
      ['Updated', (r) => when(r.st?.updated_at)],
      ['Log', (r) => h('button', { type: 'button', class: 'small', 'data-testid': `log-${r.name}`, onclick: () => showLog(r.name) },
        'Log')],
    ], rows, (r) => ({ 'data-testid': `node-${r.name}`, 'data-state': r.st?.state || '' }), 'No servers in this deployment.'));
    if (!['succeeded', 'failed', 'cancelled', 'rolled_back'].includes(dep.state)) {
      await Promise.all([...openLogs].map(([server, pre]) => loadLog(server, pre)));
    }
  }
  return { title: `Deployment ${id}`, section: 'apps', root, update };
}

export function membersView() {
  const facts = h('div');
  const members = h('div');
  const root = h('section', null, h('h1', null, 'Mesh'), facts, h('h2', null, 'Members'), members);
  async function update() {
    const [st, ms] = await Promise.all([get('/v1/status'), get('/v1/members')]);
    show(facts, dl('status-facts', [
      ['This node', st.node], ['Leader', st.leader || h('span', { class: 'error' }, 'none')], ['Raft state', st.state],
      ['Term', st.term], ['Applied index', st.applied_index], ['Voters', st.voters], ['Non-voters', st.nonvoters],
      ['Members up', st.members], ['Version', st.version],
    ]));
    show(members, table('members', [
      ['Name', (m) => [h('strong', null, m.name), m.leader ? h('span', { class: 'leader', title: 'Raft leader' }, ' leader') : '']],
      ['Status', (m) => badge(m.status)],
      ['Role', (m) => m.role],
      ['Address', (m) => h('code', null, m.addr)],
      ['HTTP', (m) => (m.http ? h('code', null, m.http) : '—')],
      ['Tags', (m) => Object.entries(m.tags || {}).map(([k, v]) => h('span', { class: 'tag' }, `${k}=${v}`))],
      ['Since', (m) => when(m.since)],
    ], ms, (m) => ({ 'data-testid': `member-${m.name}`, 'data-status': m.status, 'data-role': m.role })));
  }
  return { title: 'Mesh', section: 'members', root, update };
}

export function notFound(hash) {
  const root = h('section', null, h('h1', null, 'Not found'), h('p', null, `Nothing is at ${hash}. `, link('#/apps', 'Go to the apps.')));
  return { title: 'Not found', root, update: async () => { message(`No page ${hash}`, 'error'); } };
}
