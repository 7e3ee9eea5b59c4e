// The plan's Socket.IO client, as the plan writes it, run by tests against a real controller.
// Every event it receives is printed as one JSON line {event, at, data}; lines on stdin
// ({"emit": name, "data": ...}) are emitted, so a test can drive it.
// Environment: TPMON_URL, TPMON_TOKEN (optional), TPMON_SUBSCRIBE (the subscribe data, JSON).
const { io } = require('socket.io-client');
const readline = require('readline');

const url = process.env.TPMON_URL || 'http://localhost:3090';
const subscription = JSON.parse(process.env.TPMON_SUBSCRIBE ||
  '{"stations": ["Station-1"], "metrics": ["latency", "packet_loss", "audio_quality"], "interval": 1000, "compression": true}');
const auth = process.env.TPMON_TOKEN ? { token: process.env.TPMON_TOKEN } : {};
// The plan's transports unless a test asks for others (long-polling first, as socket.io-client defaults to).
const transports = JSON.parse(process.env.TPMON_TRANSPORTS || '["websocket"]');

function out(event, data) {
  process.stdout.write(JSON.stringify({ event, at: Date.now(), data }) + '\n');
}

// --- the plan's snippet ---
const socket = io(url, {
  transports,  // the plan: ['websocket']
  reconnection: true,
  reconnectionDelay: 1000,
  reconnectionAttempts: 5,
  auth,
});

socket.on('connect', () => {
  out('connect', { id: socket.id });
  socket.emit('subscribe', subscription);
});

for (const event of ['metrics-update', 'knob-changed', 'alert', 'status-change', 'optimization-complete']) {
  socket.on(event, (data) => out(event, data));
}
// --- end of the plan's snippet ---

for (const event of ['ready', 'subscribed', 'unsubscribed', 'error', 'pong']) {
  socket.on(event, (data) => out(event, data));
}
socket.on('connect_error', (err) => out('connect_error', { message: err.message, data: err.data }));
socket.on('disconnect', (reason) => out('disconnect', { reason }));
socket.io.on('reconnect_failed', () => { out('reconnect_failed', {}); process.exit(3); });

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const cmd = JSON.parse(line);
  if (cmd.close) { socket.close(); process.exit(0); }
  socket.emit(cmd.emit, cmd.data);
});
