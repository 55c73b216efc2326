#!/usr/bin/env node
// Peer for the reconnect storm: a plain Node socket.io 4.8 server that speaks just enough of the
// hub's API for storm.mjs (login cookie, GET /api/modules, GET /api/realtime/config, the
// rt_session/offset protocol of docs/REALTIME.md with an in-memory replay filtered by user)
// and generates the same telemetry events itself (no MQTT, no SQLite, no auth hashing).
// It is the floor for the raw reconnect cost of 1,000 socket.io clients on this machine.
//
//   node server.mjs --port P --users 10 --modules 100 --telemetry-ms 2000 [--deflate]
// Prints "listening" once ready. Users: storm<u>@bench.local (any password).

import http from 'node:http';
import { parseArgs } from 'node:util';
import { Server } from 'socket.io';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    users: { type: 'string', default: '10' },
    modules: { type: 'string', default: '100' },
    'telemetry-ms': { type: 'string', default: '2000' },
    deflate: { type: 'boolean', default: false },
  },
});
const USERS = Number(args.users);
const MODULES = Number(args.modules);
const PERIOD = Number(args['telemetry-ms']);
const epoch = Math.random().toString(16).slice(2);
let offset = 0;
const replay = []; // { offset, user, event, payload, at }
const REPLAY_MS = 5 * 60 * 1000;

const modules = Array.from({ length: MODULES }, (_, m) => ({
  moduleId: `STORM-${String(m).padStart(4, '0')}`,
  name: `Storm ${m}`,
  type: 'weather',
  ownerId: (m % USERS) + 1,
  heartbeatTimeoutMs: null,
  disabled: false,
  online: true,
  lastSeen: new Date().toISOString(),
  stale: false,
  readings: { temperature: 20, humidity: 50, battery: 3.9, rssi: -60 },
  rev: 0,
  fw: '1.0.0',
  transport: 'mqtt',
}));

function userOf(req) {
  const m = /(?:^|;\s*)mc_session=storm(\d+)/.exec(req.headers.cookie || '');
  return m ? Number(m[1]) : null;
}

const server = http.createServer((req, res) => {
  const json = (status, body, headers = {}) => {
    res.writeHead(status, { 'content-type': 'application/json', ...headers });
    res.end(JSON.stringify(body));
  };
  if (req.method === 'POST' && req.url === '/api/auth/login') {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      const m = /^storm(\d+)@bench\.local$/.exec(JSON.parse(body).email || '');
      if (!m) return json(401, { error: 'unauthorized' });
      json(200, { id: Number(m[1]) }, { 'set-cookie': `mc_session=storm${m[1]}; HttpOnly; Path=/` });
    });
    return;
  }
  if (req.url === '/api/realtime/config') return json(200, { maxReconnectAttempts: null, reconnectDelay: 1000, maxReconnectDelay: 30000 });
  if (req.url === '/healthz') return json(200, 'ok');
  if (req.url === '/api/modules') {
    const u = userOf(req);
    if (u === null) return json(401, { error: 'unauthorized' });
    return json(200, { modules: modules.filter((m) => m.ownerId === u) });
  }
  if (!req.url.startsWith('/socket.io/')) json(404, { error: 'not found' });
});

const io = new Server(server, { perMessageDeflate: args.deflate ? { threshold: 1024 } : false, transports: ['websocket', 'polling'] });
io.use((socket, next) => {
  const u = userOf(socket.request);
  if (u === null) return next(new Error('unauthorized'));
  socket.data.user = u;
  next();
});
io.on('connection', (socket) => {
  const u = socket.data.user;
  socket.join(`user:${u}`);
  const auth = socket.handshake.auth || {};
  const r = auth.resume;
  let resumed = false;
  let missed = [];
  if (r && r.epoch === epoch && Number.isInteger(r.offset) && (replay.length === 0 || replay[0].offset <= r.offset + 1)) {
    resumed = true;
    missed = replay.filter((e) => e.offset > r.offset && e.user === u).map((e) => [e.event, e.payload, e.offset]);
  }
  socket.emit('rt_session', { userId: u, isAdmin: false, page: 'modules', epoch, offset, resumed, missed });
});

// Telemetry: each module every PERIOD ms, staggered, on a fixed schedule.
const start = Date.now();
let sent = 0;
setInterval(() => {
  const due = Math.floor(((Date.now() - start) / PERIOD) * MODULES);
  const now = Date.now();
  while (sent < due) {
    const m = modules[sent % MODULES];
    sent += 1;
    m.rev += 1;
    m.readings.temperature = 20 + Math.sin(sent / 10);
    const payload = { moduleId: m.moduleId, telemetry: { temperature: m.readings.temperature }, rev: m.rev, ts: new Date(now).toISOString() };
    offset += 1;
    replay.push({ offset, user: m.ownerId, event: 'rt_telemetry_updated', payload, at: now });
    io.to(`user:${m.ownerId}`).emit('rt_telemetry_updated', payload, offset);
  }
  while (replay.length && replay[0].at < now - REPLAY_MS) replay.shift();
}, 1);

server.listen(Number(args.port), '127.0.0.1', () => console.log('listening'));
process.on('SIGTERM', () => process.exit(0));
