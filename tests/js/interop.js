// Autobahn|JS (Node) against a wampchat router: register, subscribe, publish, call.
// Usage: node --experimental-websocket interop.js <url> <realm> <authid> <ticket> <serializer>
// Prints one JSON line with what it saw, then exits (0 on success, 1 on failure).
const autobahn = require('autobahn');

const [url, realm, authid, ticket, serializerName] = process.argv.slice(2);
const serializers = {
  json: () => new autobahn.serializer.JSONSerializer(),
  msgpack: () => new autobahn.serializer.MsgpackSerializer(),
  cbor: () => new autobahn.serializer.CBORSerializer(),
};
const report = {};
const deadline = setTimeout(() => finish(new Error('timed out')), 10000);

function finish(error) {
  clearTimeout(deadline);
  if (error) { report.error = String(error && (error.error || error.message) || error); }
  process.stdout.write(JSON.stringify(report) + '\n');
  process.exit(error ? 1 : 0);
}

const connection = new autobahn.Connection({
  url, realm,
  authmethods: ['ticket'], authid,
  onchallenge: () => ticket,
  max_retries: 0,
  serializers: [serializers[serializerName || 'json']()],
});

connection.onopen = async (session, details) => {
  try {
    report.authrole = details.authrole;
    report.features = Object.keys(details.roles || {}).sort();
    await session.register('com.js.add', (args) => args[0] + args[1]);
    const received = new Promise((resolve) => {
      session.subscribe('com.js.topic', (args, kwargs, details) => resolve({ args, kwargs }));
    });
    await session.publish('com.js.topic', ['hello'], { n: 1 }, { acknowledge: true, exclude_me: false });
    report.event = await received;
    report.add = await session.call('com.js.add', [2, 3]);
    report.echo = await session.call('com.py.echo', ['from js']);
    try {
      await session.call('com.nobody.home');
    } catch (e) {
      report.missing = e.error;
    }
    connection.onclose = () => { finish(null); return true; };
    connection.close();
  } catch (e) {
    finish(e);
  }
};
connection.onclose = (reason, details) => { finish(new Error('closed: ' + reason + ' ' + JSON.stringify(details))); return true; };
connection.open();
