// pages.js: overview (live node and cluster health, rates, latencies, disk, fsync), topics
// (list, create, delete, partitions, retention) and messages (browse by offset or time, decode,
// produce, live tail over SSE).
import {h, clear, table, card, pill, errorBox, fmtNum, fmtBytes, fmtSecs, fmtMs, fmtTime, enc, api,
  publicGet, can, needToken, auth, poll, parseMetrics, metricSum, buckets, quantile, sparkline,
  COLORS, b64ToBytes, bytesToB64, asText, hexDump, confirmDialog, action} from './lib.js';

const CONSOLE_GROUP = 'ayder-console'; // consume needs a group in its path; the console never commits

// ---- overview -----------------------------------------------------------------------------
export async function overview(main, r, onLeave) {
  main.append(h('h1', {}, 'Overview'));
  const health = h('div', {class: 'cards', id: 'ov-health'});
  const rates = h('div', {class: 'cards', id: 'ov-rates'});
  const lat = h('div', {class: 'cards', id: 'ov-latency'});
  const disk = h('div', {class: 'cards', id: 'ov-disk'});
  const err = h('div');
  main.append(err, health, h('h2', {}, 'Throughput'), rates, h('h2', {}, 'Latency (p99 over the last minute)'), lat,
    h('h2', {}, 'Storage'), disk);
  const snaps = []; // {t, m}: the last minute of scrapes
  const spark = {rec: [], prod: [], cons: [], fsync: []};
  const push = (k, v) => { spark[k].push(v); if (spark[k].length > 60) spark[k].shift(); };
  onLeave(poll(async () => {
    let m, st, hl;
    try {
      const [mt, s, hr] = await Promise.all([
        fetch('/metrics', {cache: 'no-store'}).then(x => x.text()),
        publicGet('/ha/status'),
        fetch('/health', {cache: 'no-store'}).then(async x => ({ok: x.ok, body: await x.json().catch(() => null)})),
      ]);
      m = parseMetrics(mt); st = s; hl = hr;
      clear(err);
    } catch (e) { clear(err, errorBox(e)); return; }
    const t = Date.now();
    snaps.push({t, m});
    if (snaps.length > 31) snaps.shift();
    const prev = snaps.length > 1 ? snaps[snaps.length - 2] : null;
    const first = snaps.length > 1 ? snaps[0] : null;
    const rate = (name, pred) => prev ? Math.max(0, (metricSum(m, name, pred) - metricSum(prev.m, name, pred)) / ((t - prev.t) / 1000)) : null;
    const routeIn = (...rs) => l => rs.includes(l.route);
    const recs = rate('ayder_partition_records');
    const prodReq = rate('ayder_http_requests_total', routeIn('produce', 'produce_ndjson'));
    const consReq = rate('ayder_http_requests_total', routeIn('consume', 'feed_events', 'query', 'join'));
    const sse = rate('ayder_subscribe_events_total');
    const fsyncs = rate('ayder_journal_fsyncs_total');
    // p99 of the last minute; when nothing happened in it, since the node started (marked so).
    const p99 = (name, pred) => {
      const now = buckets(m, name, pred);
      const q = quantile(0.99, now, first && buckets(first.m, name, pred));
      if (q !== null || !first) return q === null ? null : {v: q};
      const all = quantile(0.99, now, null);
      return all === null ? null : {v: all, since: true};
    };
    const lat99 = x => x ? [fmtSecs(x.v), x.since ? h('div', {class: 'small muted'}, 'since start (idle now)') : null] : ['—', null];
    const fsP99 = p99('ayder_journal_fsync_duration_seconds');
    const fsN = first ? metricSum(m, 'ayder_journal_fsync_duration_seconds_count') - metricSum(first.m, 'ayder_journal_fsync_duration_seconds_count') : 0;
    const fsMean = fsN ? (metricSum(m, 'ayder_journal_fsync_duration_seconds_sum') - metricSum(first.m, 'ayder_journal_fsync_duration_seconds_sum')) / fsN : null;
    push('rec', recs); push('prod', prodReq); push('cons', (consReq || 0) + (sse || 0)); push('fsync', fsP99 && !fsP99.since ? fsP99.v : 0);

    const healthy = hl.ok;
    clear(health,
      card('Node health', healthy ? pill('healthy', 'ok') : pill(hl.body && hl.body.error || 'unhealthy', 'bad'),
        !healthy && hl.body ? h('div', {class: 'small error'}, hl.body.message) : null),
      card('Node', st.node_id, h('div', {class: 'small muted'}, st.enabled ? 'cluster member' : 'single node')),
      card('Role', pill(st.role, st.role === 'leader' ? 'ok' : st.role === 'follower' ? '' : 'warn'),
        h('div', {class: 'small muted'}, 'term ' + st.term)),
      card('Leader', st.leader_id || pill('none', 'bad'), h('div', {class: 'small muted'}, `${st.voters.length} voter(s), ${st.learners.length} learner(s)`)),
      card('Commit / applied', `${fmtNum(st.commit_index)} / ${fmtNum(st.applied_index)}`),
      card('Topics', fmtNum(metricSum(m, 'ayder_topics')), h('div', {class: 'small muted'},
        `${fmtNum(metricSum(m, 'ayder_partitions'))} partitions, ${fmtNum(metricSum(m, 'ayder_partition_records'))} records`)));
    clear(rates,
      card('Produced records/s', fmtNum(recs), sparkline(spark.rec, COLORS[0])),
      card('Produce requests/s', fmtNum(prodReq), sparkline(spark.prod, COLORS[2])),
      card('Consume requests/s', fmtNum(consReq), h('div', {class: 'small muted'}, `SSE events/s ${fmtNum(sse)}`),
        sparkline(spark.cons, COLORS[4])),
      card('Open connections', fmtNum(metricSum(m, 'ayder_http_open_connections')),
        h('div', {class: 'small muted'}, `${fmtNum(metricSum(m, 'ayder_subscribe_streams_open'))} open streams`)));
    clear(lat,
      card('Produce p99', ...lat99(p99('ayder_http_request_duration_seconds', routeIn('produce', 'produce_ndjson')))),
      card('Consume p99', ...lat99(p99('ayder_http_request_duration_seconds', routeIn('consume')))),
      card('Durable write p99', ...lat99(p99('ayder_write_duration_seconds'))),
      card('fsync p99', lat99(fsP99)[0], [lat99(fsP99)[1], h('div', {class: 'small muted'}, `mean ${fmtSecs(fsMean)}, ${fmtNum(fsyncs)}/s`)],
        sparkline(spark.fsync, COLORS[1])));
    const failed = metricSum(m, 'ayder_storage_failed'), nospace = metricSum(m, 'ayder_storage_no_space');
    clear(disk,
      card('Disk free', fmtBytes(metricSum(m, 'ayder_disk_free_bytes')), h('div', {class: 'small muted'},
        `writes stop below ${fmtBytes(metricSum(m, 'ayder_disk_min_free_bytes'))}`)),
      card('Storage', failed ? pill('failed', 'bad') : nospace ? pill('disk full', 'bad') : pill('ok', 'ok')),
      card('Journal', fmtBytes(metricSum(m, 'ayder_journal_bytes')), h('div', {class: 'small muted'}, `${fmtNum(metricSum(m, 'ayder_journal_segments'))} segments`)),
      card('Partition logs', fmtBytes(metricSum(m, 'ayder_partition_log_bytes')), h('div', {class: 'small muted'}, `${fmtNum(metricSum(m, 'ayder_partition_log_segments'))} segments`)),
      card('KV', fmtNum(metricSum(m, 'ayder_kv_keys')) + ' keys', h('div', {class: 'small muted'}, fmtBytes(metricSum(m, 'ayder_kv_bytes')))));
  }, 2000));
}

// ---- topics -------------------------------------------------------------------------------
export async function topics(main, r, onLeave) {
  if (r.args[0]) return topicDetail(main, r.args[0], onLeave);
  main.append(h('h1', {}, 'Topics'));
  if (needToken(main, 'consume')) return;
  if (can('admin')) {
    const out = h('div', {'aria-live': 'polite'});
    const name = h('input', {name: 'name', required: true, pattern: '[A-Za-z0-9._\\-]{1,249}', placeholder: 'events', id: 'new-topic-name'});
    const parts = h('input', {name: 'partitions', type: 'number', min: '1', max: '1024', value: '8', id: 'new-topic-partitions'});
    main.append(h('form', {class: 'panel inline', 'data-write': '', 'aria-label': 'Create a topic',
      onsubmit: action(out, async () => {
        const res = await api('POST', '/broker/topics', {json: {name: name.value, partitions: Number(parts.value)}});
        await refresh();
        return res.created === false ? `Topic ${res.topic} already exists` : `Created ${res.topic} (${res.partitions} partitions)`;
      })},
      h('label', {}, 'New topic', name), h('label', {}, 'Partitions', parts),
      h('button', {type: 'submit'}, 'Create topic'), out));
  }
  const box = h('div', {id: 'topics-table'});
  main.append(box);
  async function refresh() {
    const {topics: list} = await api('GET', '/broker/topics');
    list.sort((a, b) => a.name.localeCompare(b.name));
    const details = await Promise.all(list.slice(0, 200).map(t =>
      api('GET', '/broker/topics/' + enc(t.name)).catch(() => null)));
    const rows = list.map((t, i) => {
      const d = details[i];
      const ps = d ? d.partitions : [];
      return {...t, records: d ? ps.reduce((a, p) => a + p.records, 0) : null,
        bytes: d ? ps.reduce((a, p) => a + p.bytes, 0) : null};
    });
    clear(box, table([
      {t: 'Topic', f: t => h('a', {href: '#/topics/' + enc(t.name)}, t.name)},
      {t: 'Partitions', num: true, f: t => t.partitions},
      {t: 'Records', num: true, f: t => fmtNum(t.records)},
      {t: 'Bytes', num: true, f: t => fmtBytes(t.bytes)},
      {t: '', f: t => h('a', {href: `#/messages?topic=${enc(t.name)}`}, 'Messages')},
    ], rows, {label: 'Topics', empty: 'No topics yet.'}));
  }
  onLeave(poll(refresh, 5000));
}

async function topicDetail(main, name, onLeave) {
  main.append(h('p', {}, h('a', {href: '#/topics'}, '← Topics')), h('h1', {}, 'Topic ', h('code', {}, name)));
  if (needToken(main, 'consume')) return;
  const box = h('div', {id: 'topic-partitions'});
  const err = h('div');
  main.append(err, box);
  let gone = false;
  async function refresh() {
    if (gone) return;
    try {
      const d = await api('GET', '/broker/topics/' + enc(name));
      clear(err);
      clear(box, table([
        {t: 'Partition', num: true, f: p => p.partition},
        {t: 'Earliest', num: true, f: p => p.earliest_offset},
        {t: 'Latest', num: true, f: p => p.latest_offset},
        {t: 'Records', num: true, f: p => fmtNum(p.records)},
        {t: 'Bytes', num: true, f: p => fmtBytes(p.bytes)},
        {t: 'Segments', num: true, f: p => p.segments},
        {t: 'Retention', f: p => (p.retention_ttl_ms || p.retention_max_bytes)
          ? [p.retention_ttl_ms ? 'age ' + fmtMs(p.retention_ttl_ms) : '', p.retention_max_bytes ? ' size ' + fmtBytes(p.retention_max_bytes) : '']
          : h('span', {class: 'muted'}, 'keep all')},
        {t: '', f: p => h('a', {href: `#/messages?topic=${enc(name)}&partition=${p.partition}`}, 'Browse')},
      ], d.partitions, {label: 'Partitions'}));
    } catch (e) {
      clear(err, errorBox(e));
      if (e.status === 404) { gone = true; clear(box); }
    }
  }
  onLeave(poll(refresh, 5000));
  if (!can('admin')) return;
  const out = h('div', {'aria-live': 'polite'});
  const ttl = h('input', {type: 'number', min: '0', placeholder: 'hours', id: 'ret-ttl', step: 'any'});
  const mb = h('input', {type: 'number', min: '0', placeholder: 'MiB', id: 'ret-bytes', step: 'any'});
  main.append(h('h2', {}, 'Retention'), h('form', {class: 'panel inline', 'data-write': '',
    onsubmit: action(out, async () => {
      const body = {topic: name};
      if (ttl.value !== '') body.ttl_ms = Math.round(Number(ttl.value) * 3600e3);
      if (mb.value !== '') body.max_bytes = Math.round(Number(mb.value) * 1048576);
      if (!('ttl_ms' in body) && !('max_bytes' in body)) throw new Error('Give a maximum age or size (0 removes a limit)');
      await api('POST', '/broker/retention', {json: body});
      await refresh();
      return 'Retention policy set for every partition';
    })},
    h('label', {}, 'Max age (hours, 0 = none)', ttl), h('label', {}, 'Max size per partition (MiB, 0 = none)', mb),
    h('button', {type: 'submit'}, 'Set retention'), out));
  const dout = h('div', {'aria-live': 'polite'});
  main.append(h('h2', {}, 'Danger zone'), h('div', {class: 'panel row', 'data-write': ''},
    h('button', {class: 'danger', type: 'button', id: 'delete-topic', onclick: async () => {
      if (!await confirmDialog('Delete topic ' + name + '?',
        'Every partition, record and committed offset of this topic is removed. This cannot be undone.', 'Delete topic', name)) return;
      await action(dout, async () => {
        await api('DELETE', '/broker/topics/' + enc(name));
        location.hash = '#/topics';
      })();
    }}, 'Delete topic…'), dout));
}

// ---- messages -----------------------------------------------------------------------------
function valueView(bytes, view) {
  if (view === 'hex') return h('pre', {}, hexDump(bytes));
  if (view === 'base64') return h('pre', {}, bytesToB64(bytes));
  const text = asText(bytes);
  if (view === 'text') return h('pre', {}, text === null ? '(not UTF-8 text: view it as hex or base64)' : text);
  if (text === null) return [h('span', {class: 'small muted'}, 'binary · hex'), h('pre', {}, hexDump(bytes, 512))];
  try {
    const t = text.trim();
    if (t.startsWith('{') || t.startsWith('[')) return h('pre', {class: 'json'}, JSON.stringify(JSON.parse(t), null, 2));
  } catch { /* not JSON */ }
  return h('pre', {}, text);
}

function keyText(b) {
  const t = asText(b);
  return t !== null ? t : 'hex:' + Array.from(b.subarray(0, 32), x => x.toString(16).padStart(2, '0')).join('');
}

function messageCard(m, view, topic) {
  const val = b64ToBytes(m.value_b64 || '');
  const meta = [h('span', {}, h('b', {}, 'offset ' + m.offset)), h('span', {}, 'partition ' + m.partition),
    h('span', {}, fmtTime(m.timestamp_ms)), h('span', {}, fmtBytes(val.length))];
  if (m.key_b64 !== undefined) meta.push(h('span', {}, 'key ', h('code', {}, keyText(b64ToBytes(m.key_b64)))));
  if (m.headers) for (const [k, v] of Object.entries(m.headers)) meta.push(h('span', {}, k + ': ', h('code', {}, keyText(b64ToBytes(v)))));
  const body = h('div', {}, valueView(val, view));
  const el = h('article', {class: 'msg', 'data-offset': m.offset}, h('div', {class: 'meta'}, meta), body);
  // Confluent wire format: magic 0 + 4-byte schema id. The node decodes it through its registry.
  if (val.length > 5 && val[0] === 0) {
    const id = (val[1] << 24 | val[2] << 16 | val[3] << 8 | val[4]) >>> 0;
    const out = h('div');
    el.append(h('div', {class: 'row'}, h('button', {class: 'secondary', type: 'button', onclick: action(out, async () => {
      const q = await api('POST', '/broker/query', {json: {source: {topic, partition: m.partition, offset: m.offset, limit: 1,
        decode: {type: 'confluent'}}}});
      if (!q.rows.length) throw new Error(`not decoded (stats: ${JSON.stringify(q.stats)})`);
      clear(body, h('span', {class: 'small muted'}, `decoded with schema id ${id}`), h('pre', {}, JSON.stringify(q.rows[0], null, 2)));
    })}, `Decode with schema ${id}`), out));
  }
  return el;
}

export async function messages(main, r, onLeave) {
  main.append(h('h1', {}, 'Messages'));
  if (needToken(main, 'consume')) return;
  const {topics: list} = await api('GET', '/broker/topics');
  list.sort((a, b) => a.name.localeCompare(b.name));
  if (!list.length) {
    main.append(h('p', {class: 'notice'}, 'No topics yet. ', h('a', {href: '#/topics'}, 'Create one'), can('produce') ? ' or produce to a new name below.' : '.'));
  }
  const q = r.q;
  const st = {topic: q.get('topic') || (list[0] && list[0].name) || '', partition: Number(q.get('partition') || 0),
    first: null, next: null, view: 'auto', es: null};
  const topicSel = h('select', {id: 'msg-topic', 'aria-label': 'Topic'}, list.map(t => h('option', {value: t.name}, t.name)));
  if (st.topic && !list.some(t => t.name === st.topic)) topicSel.append(h('option', {value: st.topic}, st.topic));
  topicSel.value = st.topic;
  const partSel = h('select', {id: 'msg-partition', 'aria-label': 'Partition'});
  const fillParts = () => {
    const t = list.find(x => x.name === st.topic);
    clear(partSel, Array.from({length: t ? t.partitions : 1}, (_, i) => h('option', {value: String(i)}, String(i))));
    partSel.value = String(st.partition);
  };
  fillParts();
  const mode = h('select', {id: 'msg-mode', 'aria-label': 'Start at'}, h('option', {value: 'latest'}, 'newest'),
    h('option', {value: 'earliest'}, 'oldest'), h('option', {value: 'offset'}, 'offset'), h('option', {value: 'time'}, 'time'));
  mode.value = q.get('offset') ? 'offset' : 'latest';
  const offset = h('input', {type: 'number', min: '0', id: 'msg-offset', value: q.get('offset') || '0'});
  const time = h('input', {type: 'datetime-local', id: 'msg-time', step: '1'});
  const limit = h('select', {id: 'msg-limit'}, ['10', '20', '50', '100'].map(v => h('option', {value: v}, v)));
  limit.value = '20';
  const view = h('select', {id: 'msg-view'}, ['auto', 'text', 'hex', 'base64'].map(v => h('option', {value: v}, v)));
  const out = h('div', {'aria-live': 'polite'});
  const listBox = h('div', {id: 'msg-list'});
  const nav = h('div', {class: 'row'});
  const syncMode = () => { offset.parentElement.hidden = mode.value !== 'offset'; time.parentElement.hidden = mode.value !== 'time'; };

  const base = () => `/broker/consume/${enc(st.topic)}/${CONSOLE_GROUP}/${st.partition}`;
  async function bounds() {
    const d = await api('GET', '/broker/topics/' + enc(st.topic));
    const p = d.partitions[st.partition];
    return {lo: p.earliest_offset, hi: p.latest_offset};
  }
  async function stampAt(o) {
    const r1 = await api('GET', `${base()}?offset=${o}&limit=1&encoding=b64`);
    return r1.messages.length ? r1.messages[0].timestamp_ms : Infinity;
  }
  async function load(from) {
    const n = Number(limit.value);
    const res = await api('GET', `${base()}?offset=${from}&limit=${n}&encoding=b64`);
    st.first = from; st.next = res.next_offset;
    const {lo, hi} = await bounds();
    clear(listBox, res.messages.length ? res.messages.map(m => messageCard(m, st.view, st.topic))
      : h('p', {class: 'muted'}, `No messages at offset ${from} (partition ${st.partition} holds ${lo}…${hi - 1 < lo ? '(empty)' : hi - 1}).`));
    clear(nav,
      h('button', {class: 'secondary', type: 'button', disabled: from <= lo, onclick: () => run(() => load(Math.max(lo, from - n)))}, '← Older'),
      h('span', {class: 'muted small'}, res.messages.length ? `offsets ${from}…${res.next_offset - 1} of ${lo}…${hi - 1}` : ''),
      h('button', {class: 'secondary', type: 'button', disabled: res.next_offset >= hi && !res.messages.length, onclick: () => run(() => load(res.next_offset))}, 'Newer →'));
    return '';
  }
  async function start() {
    if (!st.topic) return '';
    const {lo, hi} = await bounds();
    const n = Number(limit.value);
    if (mode.value === 'earliest') return load(lo);
    if (mode.value === 'offset') return load(Math.max(0, Number(offset.value) || 0));
    if (mode.value === 'time') {
      if (!time.value) throw new Error('Pick a time');
      const T = new Date(time.value).getTime();
      let a = lo, b = hi; // first offset stamped at or after T (timestamps rise with offsets)
      while (a < b) { const mid = Math.floor((a + b) / 2); if (await stampAt(mid) < T) a = mid + 1; else b = mid; }
      return load(a);
    }
    return load(Math.max(lo, hi - n));
  }
  const run = fn => action(out, fn)();
  topicSel.addEventListener('change', () => { st.topic = topicSel.value; st.partition = 0; fillParts(); stopTail(); run(start); });
  partSel.addEventListener('change', () => { st.partition = Number(partSel.value); stopTail(); run(start); });
  view.addEventListener('change', () => { st.view = view.value; if (st.first !== null) run(() => load(st.first)); });
  mode.addEventListener('change', syncMode);

  // live tail: SSE from the subscribe route (EventSource sends no headers: the token goes in
  // ?access_token=, which that route accepts)
  const tailBtn = h('button', {class: 'secondary', type: 'button', id: 'tail-toggle', 'aria-pressed': 'false'}, 'Live tail');
  const tailState = h('span', {class: 'small muted', role: 'status'});
  const tailBox = h('div', {id: 'tail-list'});
  function stopTail() {
    if (st.es) { st.es.close(); st.es = null; }
    tailBtn.textContent = 'Live tail'; tailBtn.setAttribute('aria-pressed', 'false'); tailState.textContent = '';
  }
  tailBtn.addEventListener('click', () => {
    if (st.es) return stopTail();
    clear(tailBox);
    const url = `/broker/subscribe/${enc(st.topic)}/${CONSOLE_GROUP}?partitions=${st.partition}&from=latest&access_token=${enc(auth.token)}`;
    const es = new EventSource(url);
    st.es = es;
    tailBtn.textContent = 'Stop tail'; tailBtn.setAttribute('aria-pressed', 'true');
    tailState.textContent = 'connecting…';
    es.addEventListener('subscribed', () => { tailState.textContent = `live on partition ${st.partition}: new records appear here`; });
    es.addEventListener('record', e => {
      const d = JSON.parse(e.data);
      const m = {offset: d.offset, partition: d.partition, timestamp_ms: d.timestamp_ms,
        value_b64: d.value_b64 !== undefined ? d.value_b64 : bytesToB64(new TextEncoder().encode(JSON.stringify(d.value)))};
      if (d.key !== undefined) m.key_b64 = bytesToB64(new TextEncoder().encode(d.key));
      tailBox.prepend(messageCard(m, st.view, st.topic));
      while (tailBox.childElementCount > 100) tailBox.lastElementChild.remove();
    });
    es.addEventListener('end', e => { tailState.textContent = 'stream ended: ' + JSON.parse(e.data).reason; });
    es.onerror = () => { if (st.es) tailState.textContent = 'reconnecting…'; };
  });
  onLeave(stopTail);

  main.append(h('form', {class: 'panel inline', onsubmit: ev => { ev.preventDefault(); run(start); }},
    h('label', {}, 'Topic', topicSel), h('label', {}, 'Partition', partSel), h('label', {}, 'Start at', mode),
    h('label', {}, 'Offset', offset), h('label', {}, 'Time (local)', time), h('label', {}, 'Page size', limit),
    h('label', {}, 'Show values as', view), h('button', {type: 'submit', id: 'msg-load'}, 'Load'), tailBtn, tailState));
  syncMode();

  if (can('produce')) {
    const pout = h('div', {'aria-live': 'polite'});
    const value = h('textarea', {id: 'produce-value', rows: '4', placeholder: '{"hello":"world"}', 'aria-label': 'Message value'});
    const key = h('input', {id: 'produce-key', placeholder: 'optional'});
    const ptopic = h('input', {id: 'produce-topic', value: st.topic, required: true});
    const ppart = h('input', {id: 'produce-partition', type: 'number', min: '0', placeholder: 'auto'});
    topicSel.addEventListener('change', () => { ptopic.value = topicSel.value; });
    main.append(h('details', {class: 'panel', 'data-write': '', open: list.length ? null : true},
      h('summary', {}, 'Produce a message'),
      h('form', {id: 'produce-form', onsubmit: action(pout, async () => {
        let qs = [];
        if (ppart.value !== '') qs.push('partition=' + Number(ppart.value));
        if (key.value) qs.push('key=' + enc(key.value));
        const res = await api('POST', `/broker/topics/${enc(ptopic.value)}/produce${qs.length ? '?' + qs.join('&') : ''}`, {body: value.value});
        if (ptopic.value === st.topic && res.partition === st.partition && !st.es) { mode.value = 'latest'; syncMode(); await start(); }
        return `Produced to ${ptopic.value} partition ${res.partition} at offset ${res.offset}${res.durable ? ' (durable)' : ''}`;
      })},
        h('label', {}, 'Value', value),
        h('div', {class: 'row'}, h('label', {}, 'Topic', ptopic), h('label', {}, 'Key', key), h('label', {}, 'Partition', ppart),
          h('button', {type: 'submit', id: 'produce-submit'}, 'Produce')), pout)));
  }
  main.append(out, nav, listBox, h('h2', {}, 'Live tail'), tailBox);
  if (!tailBox.childElementCount) tailBox.append(h('p', {class: 'muted small'}, 'Start “Live tail” to see records as they are written.'));
  if (st.topic) await run(start);
}
