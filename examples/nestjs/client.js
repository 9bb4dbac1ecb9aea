#!/usr/bin/env node
'use strict';
// A NestJS 11 app using ClientKafka (registered with ClientsModule) to call a responder
// over Kafka: either the NestJS math-service or kroute's NestJS-compatible routes.
//
//   node client.js --brokers HOST:PORT --scenario NAME [--n N] [--timeout MS]
//                  [--group kroute-example] [--mode raw|send] [--id X] [--delay MS] [--verbose]
//
// Prints one JSON object per line on stdout for each result, then exits 0 (also when a
// call failed: the failure is in the output). Exit 1: could not connect; 2: usage.
// Nest and kafkajs logs go to stderr.
//
// Scenarios (--timeout is per call, except for backlog where it bounds the whole wait):
//   basic       sum [1,2,3], max [4,9,2], echo {key,value,headers}, emit print, fail, mul;
//               one line per call: {"call":"sum","ok":true,"value":"6","ms":12.3}
//               (echo also: reply_key and reply_headers, as KafkaParser read the reply;
//               a Buffer header value as hex)
//               or {"call":"fail","ok":false,"error":"...","error_type":"object","ms":..}
//   concurrent  --n (50) concurrent send('sum',[i,i]), i = 1..n, reply must equal 2*i:
//               {"scenario":"concurrent","n":50,"correct":50,"errors":0,"seconds":..}
//   slow        one send('slow',{id}) with --timeout 60000: one call line as in basic
//   seq         20 warm-up + --n (200) sequential send('echo', i):
//               {"scenario":"seq","n":200,"p50_ms":..,"p99_ms":..,"mean_ms":..,"errors":0}
//   inflight    20 warm-up, then --n (5000) send('echo', i) with --inflight (50) always
//               outstanding (a new call as each reply arrives), the steady request rate:
//               {"scenario":"inflight","n":5000,"inflight":50,"replies_per_s":..,"p50_ms":..,..}
//   backlog     --n (2000) echo requests all produced at once, time until every reply:
//               {"scenario":"backlog","mode":"raw","n":2000,"seconds":..,"replies_per_s":..,...}
//               --mode raw (default) writes NestJS-format request records in batches of
//               500 with ClientKafka's own producer and registers their correlation ids
//               with the client, so the responder (not the client's per-send produce
//               requests) is what is measured; --mode send calls client.send() n times.

const crypto = require('crypto');
const nest = require('./nest');
const { Module } = nest.common;
const { ClientsModule, Transport } = nest.microservices;
const { lastValueFrom, timeout, toArray, TimeoutError } = nest.rxjs;

const NAME = 'client';
const USAGE = [
  'usage: node client.js --brokers HOST:PORT --scenario basic|concurrent|slow|seq|inflight|backlog',
  '                      [--n N] [--inflight K] [--timeout MS] [--group kroute-example] [--mode raw|send]',
  '                      [--id X] [--delay MS] [--verbose]',
].join('\n');

// every pattern this client may send: ClientKafka must be assigned a partition of each
// `<pattern>.reply` topic before it can send that pattern
const PATTERNS = ['sum', 'max', 'fail', 'mul', 'slow', 'echo'];

const DEFAULT_N = { concurrent: 50, seq: 200, inflight: 5000, backlog: 2000 };
const DEFAULT_TIMEOUT = { slow: 60000, backlog: 120000 };

const round = (x, digits = 2) => Number(x.toFixed(digits));
const nowMs = () => Number(process.hrtime.bigint()) / 1e6;

// How the rejection value of a NestJS send() looks: the client rejects with the
// `kafka_nest-err` header decoded by KafkaParser (JSON object if the text starts with
// { or [ and parses, a Buffer if it starts with a 0x00 byte, else a string).
function describeError(err) {
  if (err instanceof TimeoutError) return { error: 'timeout', error_type: 'timeout' };
  if (typeof err === 'string') return { error: err, error_type: 'string' };
  if (Buffer.isBuffer(err)) return { error: err.toString('utf8'), error_type: 'buffer' };
  if (err instanceof Error) return { error: err.message, error_type: `Error:${err.constructor.name}` };
  return { error: JSON.stringify(err), error_type: typeof err };
}

async function connect(args) {
  const t0 = Date.now();
  class ClientModule {}
  nest.klass(ClientModule, Module({
    imports: [ClientsModule.register([{
      name: 'KROUTE',
      transport: Transport.KAFKA,
      options: {
        client: nest.kafkaClientOptions(args.brokers, 'kroute-example', args.verbose),
        consumer: Object.assign({ groupId: args.group }, nest.CONSUMER_TUNING),
        producer: { allowAutoTopicCreation: true },
      },
    }])],
  }));
  const app = await nest.core.NestFactory.createApplicationContext(ClientModule,
    { logger: nest.logger(args.verbose) });
  const client = app.get('KROUTE');
  for (const pattern of PATTERNS) client.subscribeToResponseOf(pattern);
  // every reply record as NestJS's KafkaParser hands it on (key and headers too, which a
  // send() observable does not show): the basic scenario reports the echo reply's
  const parse = client.parser.parse.bind(client.parser);
  client.parser.parse = (message) => {
    const parsed = parse(message);
    client.repliesSeen.push({ key: parsed.key, headers: parsed.headers });
    return parsed;
  };
  client.repliesSeen = [];
  // resolves after the consumer joined its group (kafkajs consumer.run() awaits the
  // join) and the producer connected
  await client.connect();
  // the reply partitions are recorded on the GROUP_JOIN event: make sure every one is
  const deadline = Date.now() + 30000;
  const missing = () => PATTERNS.filter((p) => client.getConsumerAssignments()[`${p}.reply`] === undefined);
  while (missing().length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  if (missing().length) throw new Error(`no reply partition assigned for ${missing().join(', ')}`);
  nest.log(NAME, `connected in ${Date.now() - t0} ms; reply partitions ${JSON.stringify(client.getConsumerAssignments())}`);
  return { app, client };
}

// One send(): resolves to a result object, never rejects.
async function call(client, pattern, data, ms) {
  const t = nowMs();
  try {
    const values = await lastValueFrom(client.send(pattern, data).pipe(timeout(ms), toArray()));
    const result = { ok: true, value: values.length ? values[values.length - 1] : null };
    if (values.length !== 1) result.values = values; // a stream, or completed empty
    result.ms = round(nowMs() - t);
    return result;
  } catch (err) {
    return Object.assign({ ok: false }, describeError(err), { ms: round(nowMs() - t) });
  }
}

async function emit(client, pattern, data, ms) {
  const t = nowMs();
  try {
    await lastValueFrom(client.emit(pattern, data).pipe(timeout(ms)), { defaultValue: null });
    return { ok: true, value: null, ms: round(nowMs() - t) };
  } catch (err) {
    return Object.assign({ ok: false }, describeError(err), { ms: round(nowMs() - t) });
  }
}

const sameText = (a, b) => a !== null && a !== undefined && String(a) === String(b);

const scenarios = {
  async basic(client, args) {
    const calls = [
      ['sum', () => call(client, 'sum', [1, 2, 3], args.timeout)],
      ['max', () => call(client, 'max', [4, 9, 2], args.timeout)],
      ['echo', () => call(client, 'echo', { key: 'k1', value: { a: 1 }, headers: { h: 'v' } }, args.timeout)],
      ['print', () => emit(client, 'print', { text: 'hello' }, args.timeout)],
      ['fail', () => call(client, 'fail', 1, args.timeout)],
      ['mul', () => call(client, 'mul', [2, 3], args.timeout)],
    ];
    // all at once (mul times out when nobody answers it), printed in this order
    const results = await Promise.all(calls.map(([, run]) => run()));
    // the echo reply's key and headers (the only reply with an `h` header)
    const echo = client.repliesSeen.find((r) => r.headers.h !== undefined);
    if (echo) {
      const text = (v) => (Buffer.isBuffer(v) ? v.toString('hex') : v);
      results[2].reply_key = echo.key;
      results[2].reply_headers = Object.fromEntries(
        Object.entries(echo.headers).map(([k, v]) => [k, text(v)]));
    }
    calls.forEach(([name], i) => nest.out(Object.assign({ call: name }, results[i])));
  },

  async concurrent(client, args) {
    const t = nowMs();
    const ids = Array.from({ length: args.n }, (_, k) => k + 1);
    const results = await Promise.all(ids.map((i) => call(client, 'sum', [i, i], args.timeout)));
    let correct = 0;
    let errors = 0;
    const samples = [];
    results.forEach((r, k) => {
      if (!r.ok) errors++;
      else if (sameText(r.value, 2 * ids[k])) correct++;
      if ((!r.ok || !sameText(r.value, 2 * ids[k])) && samples.length < 3) samples.push(Object.assign({ i: ids[k] }, r));
    });
    const line = { scenario: 'concurrent', n: args.n, correct, errors, seconds: round((nowMs() - t) / 1000, 3) };
    if (samples.length) line.samples = samples;
    nest.out(line);
  },

  async slow(client, args) {
    const id = args.id || String(Date.now());
    nest.log(NAME, `sending slow ${JSON.stringify({ id })}`);
    nest.out(Object.assign({ call: 'slow' }, await call(client, 'slow', { id }, args.timeout)));
  },

  async seq(client, args) {
    let errors = 0;
    for (let i = 0; i < 20; i++) await call(client, 'echo', -1 - i, args.timeout);
    const times = [];
    for (let i = 0; i < args.n; i++) {
      const r = await call(client, 'echo', i, args.timeout);
      if (!r.ok || !sameText(r.value, i)) errors++;
      times.push(r.ms);
    }
    times.sort((a, b) => a - b);
    const pct = (q) => times[Math.min(times.length - 1, Math.max(0, Math.ceil(q * times.length) - 1))];
    const mean = times.reduce((a, b) => a + b, 0) / times.length;
    nest.out({ scenario: 'seq', n: args.n, p50_ms: round(pct(0.5)), p99_ms: round(pct(0.99)),
      mean_ms: round(mean), max_ms: round(times[times.length - 1]), errors });
  },

  async inflight(client, args) {
    for (let i = 0; i < 20; i++) await call(client, 'echo', -1 - i, args.timeout);
    const k = args.inflight || 50;
    let next = 0;
    let errors = 0;
    const times = [];
    const t0 = nowMs();
    // k loops, each calling again as soon as its reply is in
    const loop = async () => {
      while (next < args.n) {
        const i = next++;
        const r = await call(client, 'echo', i, args.timeout);
        if (!r.ok || !sameText(r.value, i)) errors++;
        times.push(r.ms);
      }
    };
    await Promise.all(Array.from({ length: k }, loop));
    const seconds = (nowMs() - t0) / 1000;
    times.sort((a, b) => a - b);
    const pct = (q) => times[Math.min(times.length - 1, Math.max(0, Math.ceil(q * times.length) - 1))];
    nest.out({ scenario: 'inflight', n: args.n, inflight: k, seconds: round(seconds, 3),
      replies_per_s: round(args.n / seconds, 1), p50_ms: round(pct(0.5)), p99_ms: round(pct(0.99)),
      errors });
  },

  async backlog(client, args) {
    const n = args.n;
    let replies = 0;
    let errors = 0;
    let wrong = 0;
    let firstReply = null;
    let lastReply = null;
    let resolveAll;
    const all = new Promise((resolve) => { resolveAll = resolve; });
    const done = (i, err, value) => {
      const t = nowMs();
      if (firstReply === null) firstReply = t;
      lastReply = t;
      if (err !== undefined && err !== null) errors++;
      else if (!sameText(value, i)) wrong++;
      if (++replies === n) resolveAll();
    };
    const t0 = nowMs();
    let produced = t0;
    if (args.mode === 'send') {
      for (let i = 0; i < n; i++) {
        client.send('echo', i).subscribe({
          next: (v) => done(i, undefined, v),
          error: (e) => done(i, e),
        });
      }
    } else if (args.mode === 'raw') {
      // the records ClientKafka.send('echo', i) would write, written 500 per request
      const partition = client.getConsumerAssignments()['echo.reply'];
      const routing = client.routingMap; // ClientProxy's correlation id -> callback map
      const BATCH = 500;
      for (let start = 0; start < n; start += BATCH) {
        const messages = [];
        for (let i = start; i < Math.min(n, start + BATCH); i++) {
          const id = crypto.randomUUID();
          routing.set(id, ({ err, response, isDisposed }) => {
            if (err || isDisposed) {
              routing.delete(id);
              done(i, err, response);
            }
          });
          messages.push({
            value: String(i),
            headers: {
              kafka_correlationId: id,
              kafka_replyTopic: 'echo.reply',
              kafka_replyPartition: String(partition),
            },
          });
        }
        await client.producer.send({ topic: 'echo', messages });
      }
      produced = nowMs();
      nest.log(NAME, `backlog produced: ${n} requests`);
    } else {
      throw new Error(`--mode must be raw or send, not ${args.mode}`);
    }
    let timer;
    const expired = new Promise((resolve) => { timer = setTimeout(resolve, args.timeout, 'timeout'); });
    const outcome = await Promise.race([all, expired]);
    clearTimeout(timer);
    const end = outcome === 'timeout' ? nowMs() : lastReply;
    const seconds = (end - t0) / 1000;
    const line = {
      scenario: 'backlog', mode: args.mode, n, seconds: round(seconds, 3),
      replies_per_s: round(replies / seconds, 1),
      produce_s: round((produced - t0) / 1000, 3),
      first_reply_s: firstReply === null ? null : round((firstReply - t0) / 1000, 3),
      // the responder's drain rate: first reply to last reply
      drain_per_s: firstReply === null || lastReply === firstReply ? null
        : round((replies - 1) / ((lastReply - firstReply) / 1000), 1),
      replies, errors, wrong,
    };
    if (outcome === 'timeout') line.error = 'timeout';
    nest.out(line);
  },
};

nest.main(NAME, async () => {
  const args = nest.parseArgs(process.argv.slice(2), {
    brokers: '', scenario: '', n: 0, timeout: 0, group: 'kroute-example', mode: 'raw', id: '', verbose: false,
    delay: 0, inflight: 0,
  }, USAGE);
  const scenario = scenarios[args.scenario];
  if (!scenario || !Object.prototype.hasOwnProperty.call(scenarios, args.scenario)) {
    process.stderr.write(`unknown --scenario '${args.scenario}'\n${USAGE}\n`);
    process.exit(2);
  }
  args.n = args.n || DEFAULT_N[args.scenario] || 1;
  args.timeout = args.timeout || DEFAULT_TIMEOUT[args.scenario] || 15000;

  const { app, client } = await connect(args);
  // --delay: stay connected (idle) before the scenario, e.g. until a second
  // instance of the group has joined and the rebalance is over
  if (args.delay > 0) await new Promise((resolve) => setTimeout(resolve, args.delay));
  await scenario(client, args);
  const force = setTimeout(() => process.exit(0), 10000);
  force.unref();
  try { await app.close(); } catch (e) { nest.log(NAME, `close: ${e.message}`); }
  process.exit(0);
});
