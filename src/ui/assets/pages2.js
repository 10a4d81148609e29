// pages2.js: consumer groups (offsets, lag, lag over time), cluster (members, roles, indexes,
// follower lag, leadership transfer and membership changes), the KV browser and the
// query/join playground.
import {h, clear, table, card, pill, errorBox, fmtNum, fmtBytes, fmtMs, enc, api, publicGet, can,
  needToken, poll, lineChart, b64ToBytes, asText, hexDump, confirmDialog, action} from './lib.js';

// ---- consumer groups ----------------------------------------------------------------------
const lagHistory = new Map(); // group -> [[t, lag]]: kept while the tab lives, 10 min at most

export async function groups(main, r, onLeave) {
  main.append(h('h1', {}, 'Consumer groups'));
  if (needToken(main, 'consume')) return;
  const err = h('div'), summary = h('div', {id: 'groups-table'}), chart = h('div', {id: 'lag-chart'});
  const detail = h('div', {id: 'group-detail'});
  let selected = r.args[0] || null;
  main.append(err, summary, h('h2', {}, 'Lag over time (records behind)'), chart, detail);
  onLeave(poll(async () => {
    let res;
    try { res = await api('GET', '/broker/groups'); clear(err); } catch (e) { clear(err, errorBox(e)); return; }
    const by = new Map();
    for (const gr of res.groups) {
      by.set(gr.group, {group: gr.group, topics: new Set(gr.offsets.map(o => o.topic)),
        partitions: gr.partitions, lag: gr.lag, rows: gr.offsets.map(o => Object.assign({group: gr.group}, o))});
    }
    const gs = [...by.values()].sort((a, b) => a.group.localeCompare(b.group));
    const t = Date.now();
    for (const g of gs) {
      if (!lagHistory.has(g.group)) lagHistory.set(g.group, []);
      const hist = lagHistory.get(g.group);
      hist.push([t, g.lag]);
      while (hist.length && hist[0][0] < t - 600e3) hist.shift();
    }
    if (!selected && gs.length) selected = gs[0].group;
    clear(summary, table([
      {t: 'Group', f: g => h('a', {href: '#/groups/' + enc(g.group), 'aria-current': g.group === selected ? 'true' : null,
        onclick: ev => { ev.preventDefault(); selected = g.group; history.replaceState(null, '', '#/groups/' + enc(g.group)); renderDetail(); }}, g.group)},
      {t: 'Topics', f: g => [...g.topics].join(', ')},
      {t: 'Partitions', num: true, f: g => g.partitions},
      {t: 'Total lag', num: true, f: g => h('span', {'data-group-lag': g.group}, fmtNum(g.lag))},
    ], gs, {label: 'Consumer groups', empty: 'No group has committed an offset yet.'}));
    function renderDetail() {
      const g = by.get(selected);
      const series = (selected && lagHistory.has(selected) ? [{name: selected, points: lagHistory.get(selected)}] : [])
        .concat(gs.filter(x => x.group !== selected).slice(0, 5).map(x => ({name: x.group, points: lagHistory.get(x.group)})));
      clear(chart, lineChart(series, {label: 'Lag over time', empty: 'No groups yet.'}));
      if (!g) { clear(detail); return; }
      g.rows.sort((a, b) => a.topic.localeCompare(b.topic) || a.partition - b.partition);
      clear(detail, h('h2', {}, 'Group ', h('code', {}, g.group)), table([
        {t: 'Topic', f: o => h('a', {href: `#/messages?topic=${enc(o.topic)}&partition=${o.partition}&offset=${o.committed_offset}`}, o.topic)},
        {t: 'Partition', num: true, f: o => o.partition},
        {t: 'Committed', num: true, f: o => o.committed_offset},
        {t: 'Latest', num: true, f: o => o.latest_offset},
        {t: 'Lag', num: true, f: o => h('span', {'data-lag': `${o.topic}/${o.partition}`}, fmtNum(o.lag))},
      ], g.rows, {label: 'Offsets of ' + g.group}));
    }
    renderDetail();
  }, 3000));
}

// ---- cluster ------------------------------------------------------------------------------
export async function cluster(main, r, onLeave) {
  main.append(h('h1', {}, 'Cluster'));
  const err = h('div'), cards = h('div', {class: 'cards', id: 'cluster-cards'}), members = h('div', {id: 'cluster-members'});
  const out = h('div', {'aria-live': 'polite'});
  main.append(err, cards, h('h2', {}, 'Members'), out, members);
  const admin = can('admin');
  let leaderUrl = null;
  async function change(body, title, text) {
    if (!await confirmDialog(title, text, title.replace(/\?$/, ''))) return;
    await action(out, async () => {
      const res = await api('POST', '/ha/membership', {json: body, base: leaderUrl || ''});
      await refresh();
      return `${res.op} ${res.id}: ${res.started ? 'started' : 'committed'}`;
    })();
  }
  async function refresh() {
    let st;
    try { st = await publicGet('/ha/status'); clear(err); } catch (e) { clear(err, errorBox(e)); return; }
    // Each member's own view (public /ha/status); the leader's view has match index and lag.
    const urls = new Map(st.peers.map(p => [p.id, p.url]));
    const views = new Map([[st.node_id, st]]);
    await Promise.all(st.peers.map(async p => {
      try { views.set(p.id, await publicGet(p.url.replace(/\/$/, '') + '/ha/status', 1500)); } catch { /* unreachable */ }
    }));
    const lead = [...views.values()].find(v => v.role === 'leader' && v.node_id === st.leader_id) || null;
    leaderUrl = lead && lead.node_id !== st.node_id ? urls.get(lead.node_id) : null;
    const peerOf = id => lead && lead.peers.find(p => p.id === id);
    clear(cards,
      card('This node', st.node_id, h('div', {class: 'small muted'}, st.role)),
      card('Leader', st.leader_id || pill('none', 'bad'), h('div', {class: 'small muted'}, st.leader_url || '')),
      card('Term', fmtNum(st.term)),
      card('Write concern', st.write_concern),
      card('Voters / learners', `${st.voters.length} / ${st.learners.length}`));
    const ids = [...st.voters, ...st.learners];
    const rows = ids.map(id => {
      const v = views.get(id), p = peerOf(id);
      return {id, url: id === st.node_id ? location.origin : urls.get(id), kind: st.learners.includes(id) ? 'learner' : 'voter', v,
        match: id === (lead && lead.node_id) ? lead.durable_index : p ? p.match_index : null, lag: p ? p.lag : id === st.leader_id ? 0 : null,
        connected: p ? p.connected : null};
    });
    const cols = [
      {t: 'Member', f: m => h('span', {'data-member': m.id}, h('b', {}, m.id), m.id === st.node_id ? h('span', {class: 'muted small'}, ' (this node)') : '')},
      {t: 'Role', f: m => m.v ? pill(m.v.role, m.v.role === 'leader' ? 'ok' : m.v.role === 'follower' ? '' : 'warn') : pill('unreachable', 'bad')},
      {t: 'Kind', f: m => m.kind},
      {t: 'Term', num: true, f: m => m.v ? m.v.term : '—'},
      {t: 'Commit', num: true, f: m => m.v ? m.v.commit_index : '—'},
      {t: 'Applied', num: true, f: m => m.v ? m.v.applied_index : '—'},
      {t: 'Match', num: true, f: m => m.match ?? '—'},
      {t: 'Lag (entries)', num: true, f: m => m.lag ?? '—'},
      {t: 'Link', f: m => m.connected === null ? '' : m.connected ? pill('connected', 'ok') : pill('down', 'bad')},
      {t: 'URL', f: m => m.url ? h('a', {href: m.url + '/ui/'}, m.url) : '—'},
    ];
    if (admin && st.enabled) cols.push({t: 'Actions', f: m => h('span', {class: 'row', 'data-write': ''},
      m.kind === 'voter' && m.id !== st.leader_id ? h('button', {class: 'secondary', type: 'button',
        onclick: () => change({op: 'transfer', id: m.id}, 'Transfer leadership?', `Make ${m.id} the leader. Writes pause briefly while it takes over.`)}, 'Make leader') : null,
      m.kind === 'learner' ? h('button', {class: 'secondary', type: 'button',
        onclick: () => change({op: 'promote', id: m.id}, 'Promote learner?', `${m.id} becomes a voter and counts toward the majority.`)}, 'Promote') : null,
      m.id !== st.leader_id ? h('button', {class: 'danger', type: 'button',
        onclick: () => change({op: 'remove', id: m.id}, 'Remove member?', `${m.id} leaves the cluster configuration; stop its process afterwards.`)}, 'Remove') : null)});
    clear(members, table(cols, rows, {label: 'Members'}));
  }
  onLeave(poll(refresh, 3000));
  if (!admin) return;
  const st0 = await publicGet('/ha/status').catch(() => null);
  if (!st0 || !st0.enabled) {
    main.append(h('p', {class: 'muted small'}, 'Single node: start nodes with RF_HA_* to form a cluster (docs/HTTP_API.md "Cluster").'));
    return;
  }
  const f = {id: h('input', {id: 'add-id', required: true, placeholder: 'n4'}), host: h('input', {id: 'add-host', required: true, placeholder: '10.0.0.4'}),
    raft: h('input', {id: 'add-raft', type: 'number', required: true, min: '1', max: '65535'}),
    http: h('input', {id: 'add-http', type: 'number', required: true, min: '1', max: '65535'}),
    prio: h('input', {id: 'add-prio', type: 'number', min: '0', value: '50'})};
  main.append(h('h2', {}, 'Add a member'), h('p', {class: 'muted small'},
    'Start the new node with RF_HA_JOIN=1 first. It joins as a learner and catches up; promote it afterwards.'),
  h('form', {class: 'panel inline', 'data-write': '', onsubmit: ev => { ev.preventDefault(); change({op: 'add', id: f.id.value, host: f.host.value,
    raft_port: Number(f.raft.value), http_port: Number(f.http.value), priority: Number(f.prio.value || 0)},
    'Add learner?', `Add ${f.id.value} at ${f.host.value} (raft ${f.raft.value}, http ${f.http.value}) as a learner.`); }},
  h('label', {}, 'Id', f.id), h('label', {}, 'Host', f.host), h('label', {}, 'Raft port', f.raft), h('label', {}, 'HTTP port', f.http),
  h('label', {}, 'Priority', f.prio), h('button', {type: 'submit'}, 'Add learner')));
}

// ---- KV -----------------------------------------------------------------------------------
export async function kv(main, r, onLeave) {
  main.append(h('h1', {}, 'KV store'));
  if (needToken(main, 'kv')) return;
  const ns = h('input', {id: 'kv-ns', required: true, value: r.q.get('ns') || sessionStorage.getItem('ayder.kvns') || 'app', pattern: '[A-Za-z0-9._\\-]{1,128}'});
  const prefix = h('input', {id: 'kv-prefix', placeholder: 'optional', value: r.q.get('prefix') || ''});
  const out = h('div', {'aria-live': 'polite'}), box = h('div', {id: 'kv-keys'}), val = h('div', {id: 'kv-value'});
  let after = null;
  async function list(more) {
    sessionStorage.setItem('ayder.kvns', ns.value);
    const qs = `prefix=${enc(prefix.value)}&limit=100${more && after ? '&after=' + enc(after) : ''}`;
    const res = await api('GET', `/kv/${enc(ns.value)}?${qs}`);
    after = res.next_after;
    const t = table([
      {t: 'Key', f: k => k.key !== undefined ? h('button', {class: 'link', type: 'button', onclick: () => show(k.key)}, k.key) : h('code', {}, 'b64:' + k.key_b64)},
      {t: 'Version', num: true, f: k => k.cas},
      {t: 'Expires in', f: k => k.ttl_ms ? fmtMs(k.ttl_ms) : 'never'},
      {t: 'Size', num: true, f: k => fmtBytes(k.size)},
    ], res.keys, {label: 'Keys', empty: 'No keys in this namespace.'});
    clear(box, t, after ? h('button', {class: 'secondary', type: 'button', onclick: () => action(out, () => list(true))()}, 'Next page →') : '');
    return '';
  }
  async function show(key) {
    await action(out, async () => {
      const res = await api('GET', `/kv/${enc(ns.value)}/${key.split('/').map(enc).join('/')}`);
      const bytes = b64ToBytes(res.value), text = asText(bytes);
      const kids = [h('h2', {}, 'Key ', h('code', {}, key)), h('p', {class: 'small muted'}, `version ${res.cas}, ${fmtBytes(bytes.length)}`),
        h('pre', {}, text !== null ? text : hexDump(bytes))];
      if (can('kv')) kids.push(h('div', {class: 'row', 'data-write': ''},
        h('button', {class: 'secondary', type: 'button', onclick: () => { fk.value = key; fv.value = text || ''; fcas.value = res.cas; fk.focus(); }}, 'Edit'),
        h('button', {class: 'danger', type: 'button', onclick: async () => {
          if (!await confirmDialog('Delete key?', `Delete ${key} from ${ns.value} (only if still at version ${res.cas}).`, 'Delete')) return;
          await action(out, async () => { await api('DELETE', `/kv/${enc(ns.value)}/${key.split('/').map(enc).join('/')}?cas=${res.cas}`); clear(val); await list(); return 'Deleted ' + key; })();
        }}, 'Delete…')));
      clear(val, kids);
      return '';
    })();
  }
  main.append(h('form', {class: 'panel inline', onsubmit: action(out, () => { after = null; return list(); })},
    h('label', {}, 'Namespace', ns), h('label', {}, 'Key prefix', prefix), h('button', {type: 'submit', id: 'kv-list'}, 'List keys')), out, box, val);
  const fk = h('input', {id: 'kv-put-key', required: true}), fv = h('textarea', {id: 'kv-put-value', rows: '3'});
  const fttl = h('input', {id: 'kv-put-ttl', type: 'number', min: '0', placeholder: 'ms'}), fcas = h('input', {id: 'kv-put-cas', type: 'number', min: '0', placeholder: 'any'});
  const pout = h('div', {'aria-live': 'polite'});
  main.append(h('details', {class: 'panel', 'data-write': ''}, h('summary', {}, 'Put a key'),
    h('form', {onsubmit: action(pout, async () => {
      const qs = [fttl.value ? 'ttl_ms=' + Number(fttl.value) : '', fcas.value !== '' ? 'cas=' + Number(fcas.value) : ''].filter(Boolean).join('&');
      const res = await api('PUT', `/kv/${enc(ns.value)}/${fk.value.split('/').map(enc).join('/')}${qs ? '?' + qs : ''}`, {body: fv.value});
      await list();
      return `Stored ${fk.value} at version ${res.cas}`;
    })}, h('div', {class: 'row'}, h('label', {}, 'Key', fk), h('label', {}, 'TTL (ms)', fttl), h('label', {}, 'Only if version (0 = absent)', fcas)),
    h('label', {}, 'Value', fv), h('button', {type: 'submit'}, 'Put'), pout)));
  await action(out, list)();
  onLeave(() => {});
}

// ---- query / join playground --------------------------------------------------------------
function cell(v) {
  if (v === null || v === undefined) return h('span', {class: 'muted'}, 'null');
  if (typeof v === 'object') return h('code', {}, JSON.stringify(v));
  return String(v);
}
function rowsTable(rows, label) {
  const cols = [];
  for (const r of rows.slice(0, 500)) for (const k of Object.keys(r)) if (!cols.includes(k)) cols.push(k);
  return table(cols.map(k => ({t: k, num: false, f: r => cell(r[k])})), rows.slice(0, 1000), {label, empty: 'No rows.'});
}

export async function query(main, r) {
  main.append(h('h1', {}, 'Query and join playground'));
  if (needToken(main, 'consume')) return;
  const {topics: list} = await api('GET', '/broker/topics').catch(() => ({topics: []}));
  const t = list[0] ? list[0].name : 'events';
  const examples = {
    query: {source: {topic: t, offset: 0, limit: 1000}, aggregate: {group_by: [], measures: [{op: 'count'}]}},
    rows: {source: {topic: t, partition: 0, offset: 0, limit: 100}, select: ['$offset', '$timestamp_ms']},
    join: {left: {topic: t, partition: 0, offset: 0, limit: 500}, right: {topic: list[1] ? list[1].name : t, partition: 0, offset: 0, limit: 500},
      on: {left_key: 'id', right_key: 'id'}, join: {type: 'inner'}, window: {size_ms: 60000}},
  };
  let kind = 'query';
  const ta = h('textarea', {id: 'query-text', rows: '12', spellcheck: 'false', 'aria-label': 'Request body (JSON)'});
  ta.value = JSON.stringify(examples.query, null, 2);
  const out = h('div', {'aria-live': 'polite'}), res = h('div', {id: 'query-result'});
  const tabs = h('div', {class: 'tabs', role: 'tablist'});
  const setKind = (k, ex) => {
    kind = k === 'join' ? 'join' : 'query';
    ta.value = JSON.stringify(examples[ex || k], null, 2);
    for (const b of tabs.children) b.setAttribute('aria-selected', String(b.dataset.k === (ex || k)));
  };
  for (const [k, label] of [['query', 'Aggregate'], ['rows', 'Rows'], ['join', 'Join']]) {
    tabs.append(h('button', {type: 'button', role: 'tab', 'data-k': k, 'aria-selected': String(k === 'query'), onclick: () => setKind(k === 'join' ? 'join' : 'query', k)}, label));
  }
  main.append(h('p', {class: 'muted small'}, 'POST /broker/query and /broker/join (docs/STREAM.md). Reads only, unless the body asks to commit.'),
    tabs, h('form', {onsubmit: action(out, async () => {
      let body;
      try { body = JSON.parse(ta.value); } catch (e) { throw new Error('Not JSON: ' + e.message); }
      const t0 = performance.now();
      const q = await api('POST', kind === 'join' ? '/broker/join' : '/broker/query', {json: body});
      const kids = [];
      if (q.aggregates && q.aggregates.length) kids.push(h('h2', {}, `Aggregates (${q.aggregates.length})`), rowsTable(q.aggregates, 'Aggregates'));
      if (q.rows && (q.rows.length || !(q.aggregates && q.aggregates.length))) {
        const rows = kind === 'join' ? q.rows.map(x => ({key: x.key, left_ts_ms: x.left_ts_ms, right_ts_ms: x.right_ts_ms, left: x.left, right: x.right})) : q.rows;
        kids.push(h('h2', {}, `Rows (${q.rows.length})`), rowsTable(rows, 'Rows'));
      }
      kids.push(h('h2', {}, 'Stats'), h('pre', {}, JSON.stringify({stats: q.stats, source: q.source, next_offsets: q.next_offsets, took_us: q.took_us}, null, 2)));
      clear(res, kids);
      return `Done in ${Math.round(performance.now() - t0)} ms`;
    })}, ta, h('div', {class: 'row'}, h('button', {type: 'submit', id: 'query-run'}, 'Run'), out)), res);
}
