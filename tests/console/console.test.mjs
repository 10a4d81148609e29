// Browser tests of the web console (docs: tests/integration/test_console.py, which starts the
// nodes and runs this script). Playwright's core library drives Debian's chromium
// (/usr/bin/chromium); nothing is downloaded.
//
//   node console.test.mjs SCENARIO      scenarios: main, readonly, cluster, idle
//   env: AYDER_URL, AYDER_TOKEN (all scopes), AYDER_RO_TOKEN (consume only), SHOTS (directory),
//        IDLE_SECONDS (idle)
//
// Every page's console errors, uncaught exceptions, failed requests and HTTP error answers are
// collected; any of them fails the scenario. Prints one JSON line {"ok":…,"failures":[…],…}
// and exits 0 only when ok.
import {chromium} from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';

const URL0 = process.env.AYDER_URL;
const TOKEN = process.env.AYDER_TOKEN || 'dev';
const RO = process.env.AYDER_RO_TOKEN || 'ro';
const SHOTS = process.env.SHOTS || 'build/screenshots';
const scenario = process.argv[2] || 'main';
fs.mkdirSync(SHOTS, {recursive: true});

const failures = [];
const info = {};
const problems = [];
function watch(page, name) {
  page.on('console', m => { if (m.type() === 'error') problems.push(`${name}: console error: ${m.text()}`); });
  page.on('pageerror', e => problems.push(`${name}: uncaught: ${e.message}`));
  page.on('requestfailed', r => {
    const f = r.failure() && r.failure().errorText;
    // a closed EventSource or a page left mid-request is aborted on purpose
    if (f !== 'net::ERR_ABORTED') problems.push(`${name}: request failed: ${r.url()} ${f}`);
  });
  page.on('response', r => { if (r.status() >= 400) problems.push(`${name}: HTTP ${r.status()} ${r.url()}`); });
}

async function launch() {
  return chromium.launch({executablePath: '/usr/bin/chromium', headless: true, args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage']});
}

async function http(method, p, body, token = TOKEN) {
  const r = await fetch(URL0 + p, {method, headers: {Authorization: 'Bearer ' + token}, body});
  const t = await r.text();
  if (!r.ok) throw new Error(`${method} ${p}: ${r.status} ${t}`);
  return JSON.parse(t);
}

async function step(name, fn) {
  try { await fn(); }
  catch (e) { failures.push(`${name}: ${e.message.split('\n').slice(0, 6).join(' | ')}`); }
}

async function shot(page, name) {
  await page.screenshot({path: path.join(SHOTS, name + '.png'), fullPage: true});
}

async function signIn(page, token) {
  await page.fill('#token', token);
  await page.press('#token', 'Enter');
  await page.waitForSelector('#whoami');
}

async function goto(page, hash) {
  await page.evaluate(h => { location.hash = h; }, hash);
  await page.waitForTimeout(50);
}

// At 360 px the page itself must not scroll sideways (wide tables scroll inside their box).
async function narrowCheck(page, name) {
  const w = await page.evaluate(() => document.documentElement.scrollWidth);
  if (w > 362) failures.push(`${name}: page is ${w}px wide at a 360px viewport`);
}

const PAGES = [['overview', '#/overview'], ['topics', '#/topics'], ['topic', '#/topics/orders'],
  ['messages', '#/messages?topic=orders&partition=0'], ['groups', '#/groups'], ['cluster', '#/cluster'],
  ['kv', '#/kv?ns=app'], ['query', '#/query']];

async function main() {
  // cold start: a new browser, first load of the console
  const browser = await launch();
  const ctx = await browser.newContext({viewport: {width: 1280, height: 860}});
  const page = await ctx.newPage();
  watch(page, 'desktop');
  const t0 = Date.now();
  await page.goto(URL0 + '/', {waitUntil: 'load'}); // GET / redirects a browser to /ui/
  info.load_ms = Date.now() - t0;
  info.url_after_root = page.url();
  const paint = await page.evaluate(() => Object.fromEntries(performance.getEntriesByType('paint').map(e => [e.name, e.startTime])));
  info.first_paint_ms = paint['first-paint'];
  info.first_contentful_paint_ms = paint['first-contentful-paint'];
  if (!page.url().endsWith('/ui/')) failures.push('GET / did not lead a browser to /ui/: ' + page.url());

  await step('sign in', () => signIn(page, TOKEN));
  await step('keyboard navigation', async () => {
    await page.focus('body');
    for (let i = 0; i < 12; i++) {
      await page.keyboard.press('Tab');
      if (await page.evaluate(() => document.activeElement.getAttribute('href')) === '#/topics') break;
    }
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => location.hash === '#/topics');
    await page.waitForSelector('#new-topic-name');
  });
  await step('create a topic', async () => {
    await goto(page, '#/topics');
    await page.fill('#new-topic-name', 'orders');
    await page.fill('#new-topic-partitions', '2');
    await page.click('text=Create topic');
    await page.waitForSelector('text=Created orders (2 partitions)');
    await page.waitForSelector('#topics-table a[href="#/topics/orders"]');
  });
  await step('produce and see the message', async () => {
    await goto(page, '#/messages?topic=orders&partition=0');
    await page.waitForSelector('#msg-topic');
    await page.click('summary:has-text("Produce a message")');
    await page.fill('#produce-value', '{"id":1,"item":"book","price":12.5}');
    await page.fill('#produce-partition', '0');
    await page.click('#produce-submit');
    await page.waitForSelector('text=Produced to orders partition 0 at offset 0');
    await page.waitForSelector('#msg-list article[data-offset="0"] pre:has-text("\\"item\\": \\"book\\"")');
  });
  await step('binary value as hex', async () => {
    await http('POST', '/broker/topics/orders/produce?partition=0', new Uint8Array([0xff, 0x00, 0x01, 0x80]));
    await page.click('#msg-load');
    await page.waitForSelector('#msg-list article[data-offset="1"] pre:has-text("ff 00 01 80")');
  });
  await step('browse by time', async () => {
    await page.selectOption('#msg-mode', 'time');
    await page.fill('#msg-time', '2000-01-01T00:00:00');
    await page.click('#msg-load');
    await page.waitForSelector('#msg-list article[data-offset="0"]');
    await page.fill('#msg-time', '2999-01-01T00:00:00');
    await page.click('#msg-load');
    await page.waitForSelector('#msg-list :text("No messages at offset 2")');
    await page.selectOption('#msg-mode', 'latest');
  });
  await step('Avro decoded through the schema registry', async () => {
    const reg = await http('POST', '/subjects/orders-value/versions', JSON.stringify({schema:
      JSON.stringify({type: 'record', name: 'Order', fields: [{name: 'qty', type: 'long'}, {name: 'sku', type: 'string'}]})}));
    const id = reg.id;
    // Confluent wire format: 0, schema id (big-endian), Avro binary {qty: 5, sku: "ab"}
    const bytes = new Uint8Array([0, id >>> 24, (id >>> 16) & 255, (id >>> 8) & 255, id & 255, 10, 4, 97, 98]);
    await http('POST', '/broker/topics/orders/produce?partition=1', bytes);
    await page.selectOption('#msg-partition', '1');
    await page.click(`#msg-list article[data-offset="0"] button:text-is("Decode with schema ${id}")`);
    const pre = await page.waitForSelector('#msg-list article[data-offset="0"] pre:has-text("qty")');
    const txt = await pre.textContent();
    if (!txt.includes('"qty": 5') || !txt.includes('"sku": "ab"')) throw new Error('decoded as ' + txt);
    await shot(page, 'messages-avro-decoded-desktop');
    await page.selectOption('#msg-partition', '0');
    await page.waitForSelector('#msg-list article[data-offset="0"] pre:has-text("book")');
  });
  await step('live tail (SSE)', async () => {
    await page.click('#tail-toggle');
    await page.waitForSelector('text=live on partition 0');
    await http('POST', '/broker/topics/orders/produce?partition=0', '{"id":2,"item":"pen"}');
    await page.waitForSelector('#tail-list article[data-offset="2"] pre:has-text("pen")', {timeout: 10000});
    await shot(page, 'messages-tail-desktop');
    await page.click('#tail-toggle');
  });
  await step('group lag changes after a commit', async () => {
    await http('POST', '/broker/commit', JSON.stringify({topic: 'orders', group: 'billing', partition: 0, offset: 1}));
    await goto(page, '#/groups/billing');
    await page.waitForSelector('[data-group-lag="billing"]:text-is("2")', {timeout: 10000});
    await http('POST', '/broker/commit', JSON.stringify({topic: 'orders', group: 'billing', partition: 0, offset: 3}));
    await page.waitForSelector('[data-group-lag="billing"]:text-is("0")', {timeout: 10000});
    await page.waitForSelector('[data-lag="orders/0"]:text-is("0")');
  });
  await step('kv put and read', async () => {
    await goto(page, '#/kv?ns=app');
    await page.waitForSelector('#kv-ns');
    await page.click('summary:has-text("Put a key")');
    await page.fill('#kv-put-key', 'config/colour');
    await page.fill('#kv-put-value', 'blue');
    await page.click('button:text-is("Put")');
    await page.waitForSelector('text=Stored config/colour');
    await page.click('#kv-keys button:text-is("config/colour")');
    await page.waitForSelector('#kv-value pre:text-is("blue")');
  });
  await step('query playground', async () => {
    await goto(page, '#/query');
    await page.waitForSelector('#query-text');
    await page.click('#query-run');
    await page.waitForSelector('#query-result table');
    const txt = await page.textContent('#query-result');
    if (!txt.includes('count')) throw new Error('no count column: ' + txt.slice(0, 200));
  });
  await step('delete a topic with confirmation (keyboard)', async () => {
    await http('POST', '/broker/topics', JSON.stringify({name: 'scratch', partitions: 1}));
    await goto(page, '#/topics/scratch');
    await page.click('#delete-topic');
    await page.waitForSelector('dialog[open]');
    await page.keyboard.type('scratch');
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => location.hash === '#/topics');
    const r = await fetch(URL0 + '/broker/topics/scratch', {headers: {Authorization: 'Bearer ' + TOKEN}});
    if (r.status !== 404) throw new Error('topic still there: ' + r.status);
  });
  // screenshots of every page, desktop and 360 px
  for (const [name, hash] of PAGES) {
    await step('screenshot ' + name, async () => {
      await goto(page, hash);
      await page.waitForTimeout(name === 'overview' ? 4500 : 900);
      await shot(page, name + '-desktop');
    });
  }
  const narrow = await browser.newContext({viewport: {width: 360, height: 780}});
  const np = await narrow.newPage();
  watch(np, '360px');
  await np.goto(URL0 + '/ui/');
  await step('sign in at 360px', () => signIn(np, TOKEN));
  for (const [name, hash] of PAGES) {
    await step('360px ' + name, async () => {
      await goto(np, hash);
      await np.waitForTimeout(name === 'overview' ? 4500 : 900);
      await narrowCheck(np, name);
      await shot(np, name + '-360');
    });
  }
  await browser.close();
}

const WRITE_WORDS = /\b(create|delete|produce|put|transfer|make leader|promote|remove|add learner|set retention|edit)\b/i;

async function readonly() {
  const browser = await launch();
  const page = await browser.newPage({viewport: {width: 1280, height: 860}});
  watch(page, 'read-only');
  await page.goto(URL0 + '/ui/');
  await signIn(page, RO);
  const who = await page.textContent('#whoami');
  if (!who.includes('consume')) failures.push('whoami shows ' + who);
  for (const [name, hash] of PAGES) {
    await step('read-only ' + name, async () => {
      await goto(page, hash);
      await page.waitForTimeout(name === 'overview' ? 2500 : 900);
      const found = await page.evaluate(re => {
        const rx = new RegExp(re, 'i');
        const w = [...document.querySelectorAll('[data-write]')].map(e => e.outerHTML.slice(0, 80));
        const b = [...document.querySelectorAll('main button, main summary, main input[type=submit]')]
          .map(e => e.textContent.trim()).filter(t => rx.test(t));
        return w.concat(b);
      }, WRITE_WORDS.source);
      if (found.length) throw new Error('write actions visible: ' + found.join(' ; '));
      await shot(page, 'readonly-' + name);
    });
  }
  // the data is still readable
  await step('read-only sees messages', async () => {
    await goto(page, '#/messages?topic=orders&partition=0');
    await page.waitForSelector('#msg-list article[data-offset="0"]');
  });
  await browser.close();
}

async function cluster() {
  const browser = await launch();
  const page = await browser.newPage({viewport: {width: 1280, height: 860}});
  watch(page, 'cluster');
  await page.goto(URL0 + '/ui/#/cluster');
  await signIn(page, TOKEN);
  await goto(page, '#/overview');
  await goto(page, '#/cluster');
  await step('three members, a leader and followers', async () => {
    await page.waitForFunction(() => {
      const rows = [...document.querySelectorAll('#cluster-members tbody tr')];
      const roles = rows.map(r => r.children[1].textContent);
      return rows.length === 3 && roles.filter(x => x === 'leader').length === 1 && roles.filter(x => x === 'follower').length === 2;
    }, null, {timeout: 15000});
    await shot(page, 'cluster-3-nodes-desktop');
  });
  await step('transfer leadership with confirmation', async () => {
    const target = process.env.TRANSFER_TO;
    await page.click(`#cluster-members tr:has([data-member="${target}"]) button:text-is("Make leader")`);
    await page.waitForSelector('dialog[open]');
    await page.click('#confirm-ok');
    await page.waitForFunction(t => {
      const row = document.querySelector(`[data-member="${t}"]`);
      return row && row.closest('tr').children[1].textContent === 'leader';
    }, target, {timeout: 15000});
    await shot(page, 'cluster-after-transfer-desktop');
  });
  await browser.close();
}

async function idle() {
  // The console left open at rest: overview, groups and a live tail, each in its own tab.
  const browser = await launch();
  const ctx = await browser.newContext({viewport: {width: 1280, height: 860}});
  for (const hash of ['#/overview', '#/groups', '#/messages?topic=orders&partition=0']) {
    const p = await ctx.newPage();
    watch(p, 'idle ' + hash);
    await p.goto(URL0 + '/ui/');
    await signIn(p, TOKEN);
    await goto(p, hash);
    if (hash.startsWith('#/messages')) { await p.click('#tail-toggle'); await p.waitForSelector('text=live on partition 0'); }
  }
  await new Promise(r => setTimeout(r, 3000));
  console.log('READY');
  await new Promise(r => setTimeout(r, Number(process.env.IDLE_SECONDS || 20) * 1000));
  console.log('DONE');
  await browser.close();
}

try {
  await ({main, readonly, cluster, idle})[scenario]();
} catch (e) {
  failures.push('scenario ' + scenario + ': ' + e.message.split('\n').slice(0, 6).join(' | '));
}
failures.push(...problems);
console.log(JSON.stringify({ok: failures.length === 0, scenario, failures, info}));
process.exit(failures.length ? 1 : 0);
