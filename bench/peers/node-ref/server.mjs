#!/usr/bin/env node
// node-ref: a reference implementation of the seed design, the competitor scale-bench measures
// mc-hub against. Small and honest: what a competent Node developer would write for the same job,
// with the usual Node stack, no deliberate slowness and no special tuning.
//
//   Express        POST /api/auth/login -> mc_session cookie (scrypt-hashed passwords, sessions in a Map)
//   socket.io 4.8  cookie-authenticated sockets, each in the room of its user (`user:<id>`)
//   aedes          in-process MQTT broker on its own port; modules authenticate with
//                  client id = username = module id, password = token (SHA-256 compared, as the hub);
//                  a module may publish only on its own mc/<id>/{hello,heartbeat,telemetry,status}
//   state cache    per module; a change is detected by comparing JSON.stringify of the new
//                  readings with the cached string (the seed design's cache)
//   liveness       online on hello/heartbeat/telemetry, offline on disconnect, last will, or
//                  silence longer than 3 x the hello's heartbeatMs (15 s without a hello): the
//                  hub's rules (hub/src/liveness.rs), swept once a second
//
// Events and payloads are the hub's (hub/src/realtime/events.rs): rt_telemetry_updated
// {moduleId, telemetry, rev, ts}, rt_module_online {moduleId, lastSeen, fw, heartbeatMs},
// rt_module_offline {moduleId, disconnectedAt, reason}; each emitted as (payload, offset) to the
// owner's room and the admins' room. No replay buffer (the hub keeps one): offsets only count.
//
//   node server.mjs --http-port P --mqtt-port Q --registry registry.json
// registry.json: {"users":[{"id":1,"email":"a@b","password":"x","isAdmin":false}],
//                 "modules":[{"id":"BENCH-00000","ownerId":1,"token":"..."}]}
// Prints "listening http=P mqtt=Q" once both ports are open.

import { createHash, randomBytes, scrypt, scryptSync, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { parseArgs } from 'node:util';
import { Aedes } from 'aedes';
import express from 'express';
import { Server } from 'socket.io';

const { values: args } = parseArgs({
  options: {
    'http-port': { type: 'string' },
    'mqtt-port': { type: 'string' },
    host: { type: 'string', default: '127.0.0.1' },
    registry: { type: 'string' },
  },
});
if (!args['http-port'] || !args['mqtt-port'] || !args.registry) {
  console.error('usage: server.mjs --http-port P --mqtt-port Q --registry FILE');
  process.exit(2);
}

const DEFAULT_TIMEOUT_MS = 15_000;
const INTERVAL_MULTIPLIER = 3;
const UPSTREAM = new Set(['hello', 'heartbeat', 'telemetry', 'status']);

// ---- registry: users and modules, loaded once -------------------------------------------
const sha256 = (s) => createHash('sha256').update(s).digest();
const registry = JSON.parse(readFileSync(args.registry, 'utf8'));
const users = new Map(); // email -> { id, name, isAdmin, salt, hash }
for (const u of registry.users) {
  const salt = randomBytes(16);
  users.set(u.email.toLowerCase(), { id: u.id, isAdmin: !!u.isAdmin, salt, hash: scryptSync(u.password, salt, 32) });
}
const modules = new Map(); // module id -> module record + live state
for (const m of registry.modules) {
  modules.set(m.id, {
    id: m.id,
    ownerId: m.ownerId,
    tokenHash: sha256(m.token),
    // state cache
    readings: {},
    json: '{}',
    rev: 0,
    // liveness
    online: false,
    lastSeen: 0,
    fw: null,
    heartbeatMs: null,
    timeoutMs: DEFAULT_TIMEOUT_MS,
    session: null, // the aedes client that is this module's current connection
  });
}

// ---- web: login ------------------------------------------------------------------------------
const sessions = new Map(); // token -> user id
const app = express();
app.use(express.json({ limit: '16kb' }));
app.post('/api/auth/login', (req, res) => {
  const { email, password } = req.body || {};
  const user = typeof email === 'string' ? users.get(email.toLowerCase()) : undefined;
  if (!user || typeof password !== 'string') return res.status(401).json({ error: 'unauthorized' });
  scrypt(password, user.salt, 32, (err, hash) => {
    if (err || !timingSafeEqual(hash, user.hash)) return res.status(401).json({ error: 'unauthorized' });
    const token = randomBytes(24).toString('hex');
    sessions.set(token, user.id);
    res.cookie('mc_session', token, { httpOnly: true, sameSite: 'lax', path: '/' });
    res.json({ id: user.id, email, isAdmin: user.isAdmin });
  });
});
app.get('/healthz', (_req, res) => res.json('ok'));

function sessionUser(cookieHeader) {
  const m = /(?:^|;\s*)mc_session=([0-9a-f]+)/.exec(cookieHeader || '');
  const id = m && sessions.get(m[1]);
  if (id === undefined || id === null) return null;
  for (const u of users.values()) if (u.id === id) return u;
  return null;
}

// ---- realtime: socket.io ---------------------------------------------------------------------
const server = http.createServer({ noDelay: true }, app);
const io = new Server(server, { transports: ['websocket', 'polling'], perMessageDeflate: false });
const epoch = randomBytes(8).toString('hex');
let offset = 0;

io.use((socket, next) => {
  const user = sessionUser(socket.request.headers.cookie);
  if (!user) return next(new Error('unauthorized'));
  socket.data.user = user;
  next();
});
io.on('connection', (socket) => {
  const { user } = socket.data;
  socket.join(`user:${user.id}`);
  if (user.isAdmin) socket.join('admins');
  const page = (socket.handshake.auth && socket.handshake.auth.page) || 'modules';
  socket.emit('rt_session', { userId: user.id, isAdmin: user.isAdmin, page, epoch, offset, resumed: false, missed: [] });
});

/** Emits `event` to the module's owner and to admins, with the next stream offset. */
function emitForModule(mod, event, payload) {
  offset += 1;
  io.to(`user:${mod.ownerId}`).to('admins').emit(event, payload, offset);
}

// ---- liveness -------------------------------------------------------------------------------
function touch(mod, client) {
  mod.lastSeen = Date.now();
  if (mod.online || mod.session !== client) return; // a leftover of a closed connection proves nothing
  mod.online = true;
  emitForModule(mod, 'rt_module_online', {
    moduleId: mod.id,
    lastSeen: new Date(mod.lastSeen).toISOString(),
    fw: mod.fw,
    heartbeatMs: mod.heartbeatMs,
  });
}

function goOffline(mod, reason) {
  if (!mod.online) return;
  mod.online = false;
  emitForModule(mod, 'rt_module_offline', { moduleId: mod.id, disconnectedAt: new Date().toISOString(), reason });
}

setInterval(() => {
  const now = Date.now();
  for (const mod of modules.values()) {
    if (mod.online && now - mod.lastSeen > mod.timeoutMs) goOffline(mod, 'timeout');
  }
}, 1000).unref();

// ---- ingest: messages from modules -------------------------------------------------------------
function onHello(mod, client, payload) {
  const hello = JSON.parse(payload);
  mod.fw = typeof hello.fw === 'string' ? hello.fw : null;
  mod.heartbeatMs = Number.isInteger(hello.heartbeatMs) ? hello.heartbeatMs : null;
  mod.timeoutMs = mod.heartbeatMs ? mod.heartbeatMs * INTERVAL_MULTIPLIER : DEFAULT_TIMEOUT_MS;
  touch(mod, client);
}

function onTelemetry(mod, client, payload) {
  const msg = JSON.parse(payload);
  if (!msg || typeof msg.readings !== 'object' || msg.readings === null) return;
  touch(mod, client);
  // The seed design's state cache: a change is a different JSON.stringify of the readings.
  const json = JSON.stringify(msg.readings);
  if (json === mod.json) return;
  mod.json = json;
  mod.readings = msg.readings;
  mod.rev += 1;
  emitForModule(mod, 'rt_telemetry_updated', {
    moduleId: mod.id,
    telemetry: msg.readings,
    rev: mod.rev,
    ts: new Date().toISOString(),
  });
}

function onMessage(topic, payload, client) {
  const parts = topic.split('/');
  if (parts.length !== 3 || parts[0] !== 'mc') return;
  const mod = modules.get(parts[1]);
  if (!mod) return;
  try {
    switch (parts[2]) {
      case 'hello': return onHello(mod, client, payload);
      case 'heartbeat': return touch(mod, client);
      case 'telemetry': return onTelemetry(mod, client, payload);
      case 'status':
        if (payload.toString() === 'offline' && (client === null || client === mod.session)) goOffline(mod, 'will');
        return;
    }
  } catch {
    // malformed JSON: dropped, as the hub drops (and counts) it
  }
}

// ---- broker: aedes in-process ----------------------------------------------------------------
const aedes = await Aedes.createBroker({ drainTimeout: 30_000 });
aedes.authenticate = (client, username, password, callback) => {
  const mod = modules.get(client.id);
  const ok = mod && username === client.id && password && timingSafeEqual(sha256(password), mod.tokenHash);
  if (!ok) {
    const err = new Error('bad username or password');
    err.returnCode = 4;
    return callback(err, false);
  }
  // Its last will, if any, must be its own non-retained status (the hub's rule).
  if (client.will && (client.will.topic !== `mc/${client.id}/status` || client.will.retain)) {
    const err = new Error('not authorized');
    err.returnCode = 5;
    return callback(err, false);
  }
  callback(null, true);
};
aedes.authorizePublish = (client, packet, callback) => {
  const parts = packet.topic.split('/');
  if (client && parts.length === 3 && parts[0] === 'mc' && parts[1] === client.id && UPSTREAM.has(parts[2])) {
    return callback(null);
  }
  callback(new Error('acl_denied'));
};
aedes.authorizeSubscribe = (client, sub, callback) => {
  if (sub.topic === `mc/${client.id}/cmd`) return callback(null, sub);
  callback(new Error('acl_denied'));
};
aedes.on('client', (client) => {
  const mod = modules.get(client.id);
  if (mod) mod.session = client;
});
aedes.on('clientDisconnect', (client) => {
  const mod = modules.get(client.id);
  if (!mod || mod.session !== client) return; // replaced by a newer connection
  mod.session = null;
  // aedes sets _disconnected only when the client sent a DISCONNECT packet.
  goOffline(mod, client._disconnected ? 'disconnect' : 'connection_lost');
});
aedes.on('publish', (packet, client) => {
  // Every message the broker routes, from modules (client set) and its own (client null: wills).
  if (packet.topic.startsWith('mc/')) onMessage(packet.topic, packet.payload, client);
});

const mqtt = net.createServer({ noDelay: true }, aedes.handle);

// ---- start ------------------------------------------------------------------------------------
const listen = (srv, port) => new Promise((resolve, reject) => {
  srv.once('error', reject);
  srv.listen(Number(port), args.host, resolve);
});
await listen(server, args['http-port']);
await listen(mqtt, args['mqtt-port']);
console.log(`listening http=${args['http-port']} mqtt=${args['mqtt-port']}`);

const stop = () => {
  mqtt.close();
  aedes.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
