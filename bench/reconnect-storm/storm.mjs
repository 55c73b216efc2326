#!/usr/bin/env node
// Reconnect storm: N dashboard clients (clients.mjs workers) connect to the hub through a TCP
// proxy in this process; each storm cuts every proxied connection at once (RST both ways, so
// the hub sees real disconnects) and measures, per client, the time from the cut to "fully
// synchronised" again, plus the hub's memory (VmRSS, VmHWM) and CPU around it.
//
//   node storm.mjs --hub http://127.0.0.1:PORT --hub-pid PID --users users.json
//                  [--clients 1000] [--procs 4] [--transports websocket]
//                  [--scenarios resume:jitter,snapshot:jitter,resume:herd,snapshot:herd] [--repeat 2]
//                  [--churn 30] [--steady 10] [--settle 20] [--timeout 60] [--json out.json]
//
// --churn S (0: off): before the steady phase, every connection is reset once, one at a time,
// spread over S seconds (tabs reloading, phones changing networks: what a hub that has run for
// a while has seen), so the memory baseline is a warm hub's, not a fresh process's (see
// BENCHMARKS.md, "Memory after the storm").
//
// users.json: [{"email": "...", "password": "..."}]; clients are spread round-robin over them.
// Scenario = <resume|snapshot>:<jitter|herd>. resume: clients present {epoch, offset};
// snapshot: they present none, so the hub answers resumed=false and each one fetches
// GET /api/modules. jitter: the ReconnectionManager's full-jitter backoff with the server's
// defaults (GET /api/realtime/config, else 1000/30000 ms); herd: random()=0, so every client
// retries after the manager's 100 ms floor at the same moment.

import { fork } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';

const wallNow = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const { values: args } = parseArgs({
  options: {
    hub: { type: 'string' },
    'hub-pid': { type: 'string' },
    users: { type: 'string' },
    clients: { type: 'string', default: '1000' },
    procs: { type: 'string', default: '4' },
    transports: { type: 'string', default: 'websocket' },
    deflate: { type: 'string', default: 'on' },
    scenarios: { type: 'string', default: 'resume:jitter,snapshot:jitter,resume:herd,snapshot:herd' },
    repeat: { type: 'string', default: '2' },
    churn: { type: 'string', default: '0' },
    steady: { type: 'string', default: '10' },
    settle: { type: 'string', default: '20' },
    timeout: { type: 'string', default: '60' },
    wave: { type: 'string', default: '50' },
    'wave-ms': { type: 'string', default: '100' },
    json: { type: 'string' },
  },
});
if (!args.hub || !args['hub-pid'] || !args.users) {
  console.error('usage: storm.mjs --hub URL --hub-pid PID --users users.json [...]');
  process.exit(2);
}
const HUB = args.hub.replace(/\/$/, '');
const HUB_PID = Number(args['hub-pid']);
const N = Number(args.clients);
const PROCS = Number(args.procs);
const REPEAT = Number(args.repeat);
const scenarios = args.scenarios.split(',').map((s) => {
  const [sync, policy] = s.split(':');
  if (!['resume', 'snapshot'].includes(sync) || !['jitter', 'herd'].includes(policy)) {
    console.error(`bad scenario ${s}`);
    process.exit(2);
  }
  return { name: s, resume: sync === 'resume', mode: policy };
});

const log = (...a) => console.error(`[storm ${new Date().toISOString().slice(11, 23)}]`, ...a);

// ---------------------------------------------------------------- hub process

function procStatus(pid) {
  const text = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k) => Number((text.match(new RegExp(`^${k}:\\s+(\\d+)`, 'm')) || [])[1]);
  return { rssKb: kb('VmRSS'), hwmKb: kb('VmHWM') };
}
const TICKS = 100; // USER_HZ on Linux
function procCpuSeconds(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / TICKS; // utime, stime
}

/** Busy and total jiffies per CPU (from /proc/stat). */
function cpuTimes() {
  const out = {};
  for (const line of fs.readFileSync('/proc/stat', 'utf8').split('\n')) {
    const m = line.match(/^cpu(\d+)\s+(.*)$/);
    if (!m) continue;
    const v = m[2].split(/\s+/).map(Number);
    const idle = v[3] + v[4];
    out[m[1]] = { busy: v.reduce((a, b) => a + b, 0) - idle, total: v.reduce((a, b) => a + b, 0) };
  }
  return out;
}
function busyPct(a, b) {
  return Object.fromEntries(Object.keys(b).map((k) => [k, Math.round((100 * (b[k].busy - a[k].busy)) / Math.max(1, b[k].total - a[k].total))]));
}
/** TcpExt ListenOverflows (SYNs dropped because an accept queue was full), machine-wide. */
function listenOverflows() {
  const lines = fs.readFileSync('/proc/net/netstat', 'utf8').split('\n');
  for (let i = 0; i + 1 < lines.length; i++) {
    if (lines[i].startsWith('TcpExt:') && lines[i + 1].startsWith('TcpExt:')) {
      const names = lines[i].split(/\s+/);
      const vals = lines[i + 1].split(/\s+/);
      return Number(vals[names.indexOf('ListenOverflows')]);
    }
  }
  return NaN;
}

const fds = (pid) => {
  try {
    return fs.readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return NaN;
  }
};

const samples = []; // { t, rssKb, hwmKb }
setInterval(() => {
  try {
    samples.push({ t: wallNow(), ...procStatus(HUB_PID) });
  } catch {
    /* hub gone */
  }
}, 100).unref();
const samplesBetween = (a, b) => samples.filter((s) => s.t >= a && s.t <= b);
const mib = (kb) => Math.round((kb / 1024) * 10) / 10;

// ---------------------------------------------------------------- proxy

const pairs = new Set();
const proxy = net.createServer({ noDelay: true }, (down) => {
  const up = net.connect({ host: new URL(HUB).hostname, port: Number(new URL(HUB).port), noDelay: true });
  const pair = { down, up };
  pairs.add(pair);
  const end = () => pairs.delete(pair);
  down.on('error', () => up.destroy());
  up.on('error', () => down.destroy());
  down.on('close', () => {
    end();
    up.destroy();
  });
  up.on('close', () => {
    end();
    down.destroy();
  });
  down.pipe(up);
  up.pipe(down);
});
await new Promise((r) => proxy.listen({ port: 0, host: '127.0.0.1', backlog: 4096 }, r));
const PROXY = `http://127.0.0.1:${proxy.address().port}`;
log('proxy', PROXY, '->', HUB);

/** Cuts every proxied connection at once: RST to the client and to the hub. */
function cutAll() {
  const list = [...pairs];
  pairs.clear();
  for (const { down, up } of list) {
    down.resetAndDestroy();
    up.resetAndDestroy();
  }
  return list.length;
}

// ---------------------------------------------------------------- login

function sessionCookie(res) {
  for (const h of res.headers.getSetCookie()) {
    const pair = h.split(';', 1)[0].trim();
    if (pair.startsWith('mc_session=')) return pair;
  }
  throw new Error('no mc_session cookie');
}

const users = JSON.parse(fs.readFileSync(args.users, 'utf8'));
const cookies = [];
for (const u of users) {
  const res = await fetch(HUB + '/api/auth/login', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: u.email, password: u.password }),
  });
  if (res.status !== 200) throw new Error(`login ${u.email}: HTTP ${res.status} ${await res.text()}`);
  cookies.push(sessionCookie(res));
}
log(`logged in ${users.length} users`);

let reconnectDelay = 1000;
let maxReconnectDelay = 30000;
let configSource = 'ReconnectionManager defaults (GET /api/realtime/config not available)';
try {
  const res = await fetch(HUB + '/api/realtime/config');
  if (res.status === 200) {
    const c = await res.json();
    if (Number.isFinite(c.reconnectDelay)) reconnectDelay = c.reconnectDelay;
    if (Number.isFinite(c.maxReconnectDelay)) maxReconnectDelay = c.maxReconnectDelay;
    configSource = `GET /api/realtime/config ${JSON.stringify(c)}`;
  }
} catch {
  /* keep defaults */
}
log(`reconnect policy: reconnectDelay ${reconnectDelay} ms, maxReconnectDelay ${maxReconnectDelay} ms (${configSource})`);

// ---------------------------------------------------------------- workers

const workers = [];
const inbox = new Map(); // type -> [resolve]
function waitAll(type) {
  return Promise.all(
    workers.map(
      (w) =>
        new Promise((resolve) => {
          w.waiting[type] = resolve;
        }),
    ),
  );
}
for (let p = 0; p < PROCS; p++) {
  const w = fork(new URL('./clients.mjs', import.meta.url), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  w.waiting = {};
  w.on('message', (msg) => {
    if (msg.type === 'fatal') {
      log('worker fatal:', msg.message);
      process.exit(1);
    }
    const r = w.waiting[msg.type];
    if (r) {
      delete w.waiting[msg.type];
      r(msg);
    }
  });
  w.on('exit', (code) => {
    if (!stopping) {
      log(`worker ${p} exited with ${code}`);
      process.exit(1);
    }
  });
  workers.push(w);
}
let stopping = false;
void inbox;

const perProc = Array.from({ length: PROCS }, () => []);
for (let i = 0; i < N; i++) {
  const u = i % users.length;
  perProc[i % PROCS].push({ index: i, cookie: cookies[u], user: u });
}
const t0 = wallNow();
const started = waitAll('started');
workers.forEach((w, p) =>
  w.send({
    type: 'start',
    url: PROXY,
    clients: perProc[p],
    transports: args.transports.split(','),
    deflate: args.deflate !== 'off',
    reconnectDelay,
    maxReconnectDelay,
    wave: Math.max(1, Math.round(Number(args.wave) / PROCS)),
    waveMs: Number(args['wave-ms']),
  }),
);
await started;
log(`${N} clients connected and synchronised in ${((wallNow() - t0) / 1000).toFixed(1)} s (${pairs.size} proxied connections)`);

async function status() {
  const all = waitAll('status');
  for (const w of workers) w.send({ type: 'status' });
  const r = await all;
  return {
    synced: r.reduce((a, m) => a + m.synced, 0),
    connected: r.reduce((a, m) => a + m.connected, 0),
    events: r.reduce((a, m) => a + m.events, 0),
    gaps: r.reduce((a, m) => a + m.gaps, 0),
    cpuMicros: r.reduce((a, m) => a + m.cpuMicros, 0),
  };
}

// ---------------------------------------------------------------- storms

const pct = (sorted, p) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] : NaN);
const median = (xs) => {
  const s = [...xs].filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!s.length) return NaN;
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

if (Number(args.churn) > 0) {
  const fresh = samples.at(-1);
  const list = [...pairs];
  const gapMs = (Number(args.churn) * 1000) / Math.max(1, list.length);
  log(`churn: ${list.length} connections reset one at a time over ${args.churn} s; hub VmRSS ${mib(fresh.rssKb)} MiB before`);
  for (const pair of list) {
    if (pairs.delete(pair)) {
      pair.down.resetAndDestroy();
      pair.up.resetAndDestroy();
    }
    await sleep(gapMs);
  }
  const deadline = wallNow() + Number(args.timeout) * 1000;
  let st = await status();
  while (st.synced < N && wallNow() < deadline) {
    await sleep(200);
    st = await status();
  }
  if (st.synced < N) throw new Error(`churn: only ${st.synced}/${N} clients synchronised again`);
  log(`churn done: ${N}/${N} synchronised again; hub VmRSS ${mib(samples.at(-1).rssKb)} MiB`);
}

log(`steady ${args.steady} s before the first storm`);
const evA = await status();
const steadyStart = wallNow();
await sleep(Number(args.steady) * 1000);
const evB = await status();
const eventsPerSec = (evB.events - evA.events) / ((wallNow() - steadyStart) / 1000);
const initial = samplesBetween(steadyStart, wallNow()).at(-1);
log(`steady: ${eventsPerSec.toFixed(0)} events/s received by all clients; hub VmRSS ${mib(initial.rssKb)} MiB, VmHWM ${mib(initial.hwmKb)} MiB`);

const results = [];
const order = [];
for (let r = 0; r < REPEAT; r++) for (const s of scenarios) order.push({ ...s, run: r + 1 });

for (const [k, sc] of order.entries()) {
  const armed = waitAll('armed');
  for (const w of workers) w.send({ type: 'arm', storm: k, mode: sc.mode, resume: sc.resume });
  await armed;
  // baseline: the last 3 s before the cut (the clients were connected and steady)
  await sleep(3000);
  const before = await status();
  const baseSamples = samplesBetween(wallNow() - 3000, wallNow());
  const baseRss = median(baseSamples.map((s) => s.rssKb));
  const hwmBefore = baseSamples.at(-1).hwmKb;
  const cpu0 = procCpuSeconds(HUB_PID);
  const fdsBefore = fds(HUB_PID);
  const loadCpu0 = before.cpuMicros + process.cpuUsage().user + process.cpuUsage().system;

  const cpuA = cpuTimes();
  const ovA = listenOverflows();
  const cutAt = wallNow();
  const cut = cutAll();
  for (const w of workers) w.send({ type: 'cut', cutAt });
  log(`storm ${k + 1}/${order.length} ${sc.name} run ${sc.run}: cut ${cut} connections`);

  let st;
  let allSyncedAt = null;
  const deadline = cutAt + Number(args.timeout) * 1000;
  await sleep(50);
  while (wallNow() < deadline) {
    st = await status();
    if (st.synced === N) {
      allSyncedAt = wallNow();
      break;
    }
    await sleep(100);
  }
  const cpu1 = procCpuSeconds(HUB_PID);
  const busy = busyPct(cpuA, cpuTimes());
  const overflows = listenOverflows() - ovA;
  const loadCpu1 = st.cpuMicros + process.cpuUsage().user + process.cpuUsage().system;
  const stormEnd = allSyncedAt ?? wallNow();
  await sleep(Number(args.settle) * 1000);
  const afterSamples = samplesBetween(wallNow() - 3000, wallNow());
  const afterRss = median(afterSamples.map((s) => s.rssKb));
  const peakRss = Math.max(...samplesBetween(cutAt, stormEnd + 1000).map((s) => s.rssKb));
  const hwmAfter = afterSamples.at(-1).hwmKb;
  const fdsAfter = fds(HUB_PID);

  const stAfter = await status();
  const eventsPerSecStorm = (stAfter.events - before.events) / ((wallNow() - cutAt) / 1000);
  const collected = waitAll('results');
  for (const w of workers) w.send({ type: 'collect', storm: k });
  const recs = (await collected).flatMap((m) => m.records);
  const syncMs = recs.filter((r) => r.syncedAt !== null && r.syncedAt !== undefined).map((r) => r.syncedAt - cutAt).sort((a, b) => a - b);
  const phase = (k) => recs.filter((r) => r[k]).map((r) => r[k] - cutAt).sort((a, b) => a - b);
  const connMs = phase('connectedAt');
  const attemptMs = phase('attemptAt');
  const dropMs = phase('disconnectedAt');
  // from the client's first connect attempt after the drop to synchronised: the reconnect and
  // resync itself, without the backoff wait and the clients' own delay in noticing the drop
  const resyncMs = recs.filter((r) => r.syncedAt && r.attemptAt).map((r) => r.syncedAt - r.attemptAt).sort((a, b) => a - b);
  const sessionMs = phase('sessionAt');
  const resumed = recs.filter((r) => r.how === 'resume').length;
  const snapshots = recs.filter((r) => r.how === 'snapshot').length;
  const missed = recs.filter((r) => r.how === 'resume').map((r) => r.missed);
  const res = {
    scenario: sc.name,
    run: sc.run,
    clients: N,
    cut,
    synced: syncMs.length,
    unsynced: N - syncMs.length,
    resumed,
    snapshots,
    missedMedian: median(missed),
    missedMax: missed.length ? Math.max(...missed) : 0,
    connectErrors: recs.reduce((a, r) => a + (r.connectErrors || 0), 0),
    revGaps: recs.reduce((a, r) => a + (r.gaps || 0), 0),
    revGapsTotal: stAfter.gaps,
    snapshotErrors: recs.reduce((a, r) => a + (r.snapshotErrors || 0), 0),
    syncP50: pct(syncMs, 50),
    syncP99: pct(syncMs, 99),
    syncMax: syncMs.at(-1),
    loadavg: fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' '),
    disconnectP50: pct(dropMs, 50),
    disconnectP99: pct(dropMs, 99),
    resyncP50: pct(resyncMs, 50),
    resyncP99: pct(resyncMs, 99),
    attemptP50: pct(attemptMs, 50),
    attemptP99: pct(attemptMs, 99),
    connectP50: pct(connMs, 50),
    connectP99: pct(connMs, 99),
    sessionP50: pct(sessionMs, 50),
    sessionP99: pct(sessionMs, 99),
    cpuBusyPct: busy,
    listenOverflows: overflows,
    allSyncedS: allSyncedAt ? (allSyncedAt - cutAt) / 1000 : null,
    hubCpuS: cpu1 - cpu0,
    loadCpuS: (loadCpu1 - loadCpu0) / 1e6,
    rssBaselineMiB: mib(baseRss),
    rssPeakMiB: mib(peakRss),
    rssAfterMiB: mib(afterRss),
    hwmBeforeMiB: mib(hwmBefore),
    hwmAfterMiB: mib(hwmAfter),
    eventsPerSec: Math.round(eventsPerSecStorm),
    hubFdsBefore: fdsBefore,
    hubFdsAfter: fdsAfter,
  };
  results.push(res);
  console.log(JSON.stringify(res));
}

// ---------------------------------------------------------------- report

const f = (x, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : '–');
const lines = [];
lines.push(`clients ${N} over ${users.length} users, ${PROCS} client processes, transports ${args.transports}, permessage-deflate offered: ${args.deflate}; steady ${eventsPerSec.toFixed(0)} events/s to all clients`);
lines.push(`reconnect policy (jitter): full jitter, reconnectDelay ${reconnectDelay} ms, maxReconnectDelay ${maxReconnectDelay} ms (${configSource})`);
lines.push('');
lines.push('| scenario | run | synced | resumed / snapshot | rev gaps (storm / since start) | missed p50 / max | disconnect seen p50/p99 ms | attempt p50/p99 ms | connect p50/p99 ms | rt_session p50/p99 ms | sync p50 ms | sync p99 ms | sync max ms | attempt→sync p50/p99 ms | hub CPU s | load CPU s | CPU0/CPU1 busy % | SYN drops (machine) | RSS base → peak → after MiB | VmHWM MiB | hub fds before → after | events/s at clients, cut → end of settle | loadavg |');
lines.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---|---:|');
for (const r of results) {
  lines.push(
    `| ${r.scenario} | ${r.run} | ${r.synced}/${r.clients} | ${r.resumed} / ${r.snapshots} | ${r.revGaps} / ${r.revGapsTotal} | ${f(r.missedMedian)} / ${r.missedMax} | ${f(r.disconnectP50)}/${f(r.disconnectP99)} | ${f(r.attemptP50)}/${f(r.attemptP99)} | ${f(r.connectP50)}/${f(r.connectP99)} | ${f(r.sessionP50)}/${f(r.sessionP99)} | ${f(r.syncP50)} | ${f(r.syncP99)} | ${f(r.syncMax)} | ${f(r.resyncP50)}/${f(r.resyncP99)} | ${f(r.hubCpuS, 2)} | ${f(r.loadCpuS, 2)} | ${r.cpuBusyPct['0']}/${r.cpuBusyPct['1']} | ${r.listenOverflows} | ${r.rssBaselineMiB} → ${r.rssPeakMiB} → ${r.rssAfterMiB} | ${r.hwmAfterMiB} | ${r.hubFdsBefore} → ${r.hubFdsAfter} | ${r.eventsPerSec} | ${r.loadavg} |`,
  );
}
lines.push('');
lines.push('Medians over runs:');
lines.push('| scenario | sync p50 ms | sync p99 ms | sync max ms | attempt→sync p50 / p99 ms | hub CPU s | resumed / snapshot | RSS base → peak → after MiB |');
lines.push('|---|---:|---:|---:|---:|---:|---:|---|');
const med = {};
for (const s of scenarios) {
  const rs = results.filter((r) => r.scenario === s.name);
  const m = (k) => median(rs.map((r) => r[k]));
  med[s.name] = { p50: m('syncP50'), p99: m('syncP99'), max: m('syncMax'), cpu: m('hubCpuS') };
  lines.push(
    `| ${s.name} | ${f(m('syncP50'))} | ${f(m('syncP99'))} | ${f(m('syncMax'))} | ${f(m('resyncP50'))} / ${f(m('resyncP99'))} | ${f(m('hubCpuS'), 2)} | ${f(m('resumed'))} / ${f(m('snapshots'))} | ${f(m('rssBaselineMiB'), 1)} → ${f(m('rssPeakMiB'), 1)} → ${f(m('rssAfterMiB'), 1)} |`,
  );
}
for (const pol of ['jitter', 'herd']) {
  const a = med[`resume:${pol}`];
  const b = med[`snapshot:${pol}`];
  if (a && b) {
    lines.push(
      `ratio resume/snapshot (${pol}): sync p50 ${f(a.p50 / b.p50, 2)}, p99 ${f(a.p99 / b.p99, 2)}, hub CPU ${f(a.cpu / b.cpu, 2)}`,
    );
  }
}
console.log(lines.join('\n'));
if (args.json) fs.writeFileSync(args.json, JSON.stringify({ eventsPerSec, results }, null, 2));

stopping = true;
for (const w of workers) w.send({ type: 'stop' });
await sleep(500);
proxy.close();
for (const p of pairs) {
  p.down.destroy();
  p.up.destroy();
}
process.exit(0);
