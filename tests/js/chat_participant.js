// An Autobahn|JS (Node) chat participant driven line by line, for the service tests.
// Usage: node --experimental-websocket chat_participant.js <url> <realm> <token>
//
// Joins <realm> with ticket auth (the token answers the challenge) and prints one JSON
// object per line on stdout: {"event": "joined", session, authid, authrole} first, then
// for every command read from stdin (one JSON object per line) its outcome with the
// command's "id", and every received event as
// {"event": "event", topic, args, kwargs, publisher, publisher_authid, publisher_authrole}.
// Commands:
//   {"id", "cmd": "subscribe", "topic"}                    -> {"event": "subscribed", id}
//   {"id", "cmd": "publish", "topic", "kwargs", "options"} -> {"event": "published", id}
//   {"id", "cmd": "call", "procedure", "args", "kwargs"}   -> {"event": "result", id, result}
//   {"id", "cmd": "leave"}                                  -> {"event": "closed", reason}, exit 0
// A failed command prints {"event": "error", id, error, args}. The process exits on its
// own after a deadline (default 60 s) or when stdin ends, so it never outlives a test.
const readline = require('readline');
const autobahn = require('autobahn');

const [url, realm, token, deadlineSeconds] = process.argv.slice(2);

function emit(object) {
  process.stdout.write(JSON.stringify(object) + '\n');
}

function quit(code) {
  // Let stdout drain before the process ends.
  process.stdout.write('', () => process.exit(code));
}

setTimeout(() => { emit({ event: 'deadline' }); quit(3); },
  1000 * Number(deadlineSeconds || 60)).unref();

let session = null;
let leaving = false;

const connection = new autobahn.Connection({
  url, realm,
  authmethods: ['ticket'],
  onchallenge: () => token,
  max_retries: 0,
  serializers: [new autobahn.serializer.JSONSerializer()],
});

function failure(id, e) {
  emit({ event: 'error', id, error: (e && (e.error || e.message)) || String(e), args: (e && e.args) || [] });
}

const commands = {
  async subscribe(command) {
    await session.subscribe(command.topic, (args, kwargs, details) => {
      emit({ event: 'event', topic: command.topic, args: args || [], kwargs: kwargs || {},
        publisher: details.publisher, publisher_authid: details.publisher_authid,
        publisher_authrole: details.publisher_authrole });
    });
    emit({ event: 'subscribed', id: command.id });
  },
  async publish(command) {
    const options = Object.assign({ acknowledge: true }, command.options || {});
    await session.publish(command.topic, command.args || [], command.kwargs || {}, options);
    emit({ event: 'published', id: command.id });
  },
  async call(command) {
    const result = await session.call(command.procedure, command.args || [], command.kwargs || {});
    emit({ event: 'result', id: command.id, result });
  },
  async leave() {
    leaving = true;
    connection.close();
  },
};

function run(line) {
  if (!line.trim()) { return; }
  let command;
  try {
    command = JSON.parse(line);
  } catch (e) {
    failure(null, e);
    return;
  }
  const handler = commands[command.cmd];
  if (handler === undefined || session === null) {
    failure(command.id, new Error(session === null ? 'not joined' : 'unknown command ' + command.cmd));
    return;
  }
  handler(command).catch((e) => failure(command.id, e));
}

connection.onopen = (opened, details) => {
  session = opened;
  emit({ event: 'joined', session: opened.id, authid: details.authid, authrole: details.authrole });
  const input = readline.createInterface({ input: process.stdin });
  input.on('line', run);
  input.on('close', () => { if (!leaving) { quit(0); } });
};

connection.onclose = (reason, details) => {
  emit({ event: 'closed', reason, message: details && details.message });
  quit(leaving ? 0 : 1);
  return true;     // no reconnect
};

connection.open();
