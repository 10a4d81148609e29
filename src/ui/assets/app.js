// app.js: the console's shell: the token (kept in sessionStorage, this tab only), the page
// router (#/page/arg?query) and the page life cycle (each page's pollers stop when it is left).
import {h, clear, auth, setToken} from './lib.js';
import {overview, topics, messages} from './pages.js';
import {groups, cluster, kv, query} from './pages2.js';

const pages = {overview, topics, messages, groups, cluster, kv, query};
const main = document.getElementById('main');
let leave = [];

function route() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [path, qs] = raw.split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  return {page: parts[0] || 'overview', args: parts.slice(1), q: new URLSearchParams(qs || '')};
}

async function render() {
  for (const f of leave) { try { f(); } catch { /* ignore */ } }
  leave = [];
  const r = route();
  const fn = pages[r.page] || overview;
  for (const a of document.querySelectorAll('#nav a')) {
    if (a.getAttribute('href') === '#/' + r.page) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  document.title = 'Ayder · ' + r.page;
  clear(main);
  try {
    await fn(main, r, f => leave.push(f));
  } catch (e) {
    main.append(h('p', {class: 'error'}, String(e && e.message || e)));
  }
}

function renderAuth() {
  const box = clear(document.getElementById('auth'));
  if (auth.token && !auth.error) {
    const scopes = [...auth.scopes];
    box.append(h('span', {class: 'small muted', id: 'whoami'}, 'token: ',
      scopes.length === 4 ? 'all scopes' : scopes.join(', ') || 'no scopes'));
    box.append(h('button', {class: 'secondary', type: 'button', onclick: () => change('')}, 'Sign out'));
    return;
  }
  const input = h('input', {type: 'password', id: 'token', name: 'token', placeholder: 'bearer token',
    autocomplete: 'off', 'aria-label': 'Bearer token', value: auth.token});
  box.append(h('form', {class: 'inline', id: 'token-form', onsubmit: ev => { ev.preventDefault(); change(input.value.trim()); }},
    input, h('button', {type: 'submit'}, 'Use token')));
  if (auth.error) box.append(h('span', {class: 'error small', role: 'alert'}, auth.error));
}

async function change(t) {
  await setToken(t);
  renderAuth();
  render();
}

window.addEventListener('hashchange', render);
(async () => {
  if (auth.token) await setToken(auth.token);
  renderAuth();
  await render();
  document.documentElement.dataset.ready = '1';
})();
