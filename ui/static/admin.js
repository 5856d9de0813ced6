// Admin actions: create an app, an environment or an API token. Each is a form folded away under a summary;
// submitting it shows what will be written in the confirmation dialog, and only a confirmation writes it.

import { post } from './api.js';
import { h, link, enc } from './dom.js';
import { act, ask } from './page.js';

const field = (id, label, input, hint) => h('div', { class: 'field' }, h('label', { for: id }, label), input,
  hint ? h('span', { class: 'muted small' }, hint) : '');
const input = (id, attrs = {}) => h('input', { id, name: id, autocomplete: 'off', ...attrs });
const words = (s) => s.split(/[\s,]+/).filter(Boolean);

// adminForm folds fields under a summary. describe(values) gives the facts the dialog shows ([[name, value]]);
// submit(values) writes and answers the message to show.
function adminForm({ id, summary, title, ok, fields, describe, submit }) {
  const btn = h('button', { type: 'submit', id: `${id}-submit` }, summary);
  const form = h('form', { id, class: 'admin-form', onsubmit: async (ev) => {
    ev.preventDefault();
    const values = Object.fromEntries([...form.elements].filter((e) => e.name).map((e) => [e.name, e.type === 'checkbox' ? e.checked : e.value.trim()]));
    const facts = h('dl', { class: 'facts' }, describe(values).filter(([, v]) => v !== '' && v != null).map(([k, v]) => [h('dt', null, k), h('dd', null, String(v))]));
    if (!await ask({ title: title(values), ok, danger: false }, facts)) return;
    act(btn, async () => {
      const done = await submit(values);
      form.reset();
      details.open = false;
      return done;
    });
  } }, fields, h('div', { class: 'actions' }, btn));
  const details = h('details', { class: 'admin', id: `${id}-details` }, h('summary', null, `${summary}…`), form);
  return details;
}

export function newAppForm() {
  return adminForm({
    id: 'new-app', summary: 'New app', ok: 'Create app',
    title: (v) => `Create app ${v.name}?`,
    fields: [
      field('app-name', 'Name', input('app-name', { name: 'name', required: true, placeholder: 'web' })),
      field('app-repo', 'Repository', input('app-repo', { name: 'repo', required: true, placeholder: 'https://git.example.com/web.git' }), 'a git URL the leader can clone'),
      field('app-branch', 'Branch', input('app-branch', { name: 'branch', placeholder: 'main' })),
      field('app-manifest', 'Manifest', input('app-manifest', { name: 'manifest', placeholder: 'shoal.yml or distelli-manifest.yml' }), 'its path in the repository; empty: shoal.yml, else distelli-manifest.yml'),
      field('app-auto-build', 'Build on push', h('input', { id: 'app-auto-build', name: 'auto_build', type: 'checkbox' })),
    ],
    describe: (v) => [['Name', v.name], ['Repository', v.repo], ['Branch', v.branch || 'main'],
      ['Manifest', v.manifest || 'shoal.yml or distelli-manifest.yml'], ['Build on push', v.auto_build ? 'yes' : 'no']],
    submit: async (v) => {
      const body = { name: v.name, repo: v.repo, auto_build: v.auto_build };
      if (v.branch) body.branch = v.branch;
      if (v.manifest) body.manifest = v.manifest;
      await post('/v1/apps', body);
      return ['App ', link(`#/apps/${enc(v.name)}`, v.name), ' created.'];
    },
  });
}

// tagsOf reads "role=web zone=a" into {role: "web", zone: "a"}.
function tagsOf(s) {
  return Object.fromEntries(words(s).map((kv) => {
    const i = kv.indexOf('=');
    return i < 0 ? [kv, ''] : [kv.slice(0, i), kv.slice(i + 1)];
  }));
}

export function newEnvForm(app) {
  const strategy = h('select', { id: 'env-strategy', name: 'strategy' }, h('option', { value: 'all' }, 'all at once'),
    h('option', { value: 'rolling' }, 'rolling'));
  return adminForm({
    id: 'new-env', summary: 'New environment', ok: 'Create environment',
    title: (v) => `Create environment ${v.name} of ${app}?`,
    fields: [
      field('env-name', 'Name', input('env-name', { name: 'name', required: true, placeholder: 'staging' })),
      field('env-servers', 'Servers', input('env-servers', { name: 'servers', placeholder: 'n1, n2' }), 'server names'),
      field('env-tags', 'or servers tagged', input('env-tags', { name: 'tags', placeholder: 'role=web' }), 'every server whose tags match'),
      field('env-strategy', 'Strategy', strategy),
      field('env-batch', 'Batch size', input('env-batch', { name: 'batch', type: 'number', min: 1, placeholder: '1' }), 'rolling: servers at a time'),
      field('env-auto-deploy', 'Deploy new releases', h('input', { id: 'env-auto-deploy', name: 'auto_deploy', type: 'checkbox' })),
    ],
    describe: (v) => [['App', app], ['Name', v.name], ['Servers', words(v.servers).join(', ')], ['Servers tagged', words(v.tags).join(' ')],
      ['Strategy', v.strategy === 'rolling' ? `rolling, ${v.batch || 1} at a time` : 'all at once'], ['Deploy new releases', v.auto_deploy ? 'yes' : 'no']],
    submit: async (v) => {
      const st = { kind: v.strategy };
      if (v.strategy === 'rolling') st.batch_size = Number(v.batch) || 1;
      await post('/v1/envs', { name: v.name, app, servers: words(v.servers), tags: tagsOf(v.tags), strategy: st, auto_deploy: v.auto_deploy });
      return ['Environment ', link(`#/envs/${enc(v.name)}`, v.name), ' created.'];
    },
  });
}

// newTokenForm creates an API token and shows it in reveal, once: the mesh keeps only its hash.
export function newTokenForm(reveal) {
  const role = h('select', { id: 'token-role', name: 'role' }, ['reader', 'deployer', 'admin'].map((r) => h('option', { value: r }, r)));
  return adminForm({
    id: 'new-token', summary: 'New token', ok: 'Create token',
    title: (v) => `Create a ${v.role} token ${v.name}?`,
    fields: [
      field('token-name', 'Name', input('token-name', { name: 'name', required: true, placeholder: 'ci' })),
      field('token-role', 'Role', role, 'reader reads; deployer also builds and deploys; admin also manages'),
    ],
    describe: (v) => [['Name', v.name], ['Role', v.role]],
    submit: async (v) => {
      const t = await post('/v1/tokens', { name: v.name, role: v.role });
      reveal.replaceChildren(h('p', null, `The token of ${t.name} (${t.role}), shown only now: copy it.`),
        h('pre', { id: 'new-token-value', class: 'secret', tabindex: 0 }, t.token),
        h('button', { type: 'button', class: 'small', onclick: () => reveal.replaceChildren() }, 'I have copied it'));
      return `Token ${t.name} created.`;
    },
  });
}
