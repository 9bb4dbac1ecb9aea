#!/usr/bin/env node
'use strict';
// Generates spec/unit/nest_vectors.lua: test vectors for kroute's NestJS parity, with the
// expected values produced by running NestJS's own classes (the @nestjs/microservices
// that examples/nestjs/install.sh puts in .build/nestjs) and kafkajs's own byte encoding.
//
//   sh examples/nestjs/install.sh && node spec/unit/nest_vectors.js > spec/unit/nest_vectors.lua
//
// The cases port NestJS's specs (test/helpers/kafka-parser.spec.ts,
// test/serializers/kafka-request.serializer.spec.ts,
// test/deserializers/kafka-response.deserializer.spec.ts and the incoming-request
// deserializer), then add the cases kroute users meet: JSON keys and headers, ill-formed
// UTF-8, numbers, envelopes with partitions and repeated headers. Each case names its
// input twice, as a JavaScript value for NestJS and as the Lua value a handler would use.
// Random doubles are drawn anew at each run: regenerating changes those lines only.

const crypto = require('crypto');
const path = require('path');
const { createRequire } = require('module');

// exits with a hint when NestJS is not installed; loads reflect-metadata
require('../../examples/nestjs/nest');
const load = createRequire(path.resolve(__dirname, '..', '..', '.build', 'nestjs', 'package.json'));
const { KafkaParser } = load('@nestjs/microservices/helpers/kafka-parser');
const { KafkaRequestSerializer } = load('@nestjs/microservices/serializers/kafka-request.serializer');
const { KafkaRequestDeserializer } = load('@nestjs/microservices/deserializers/kafka-request.deserializer');
const { ServerKafka } = load('@nestjs/microservices/server/server-kafka');
const { ClientKafka } = load('@nestjs/microservices/client/client-kafka');
const Encoder = load('kafkajs/src/protocol/encoder');
const Decoder = load('kafkajs/src/protocol/decoder');
const HeaderV0 = load('kafkajs/src/protocol/recordBatch/header/v0');
const RecordV0Decoder = load('kafkajs/src/protocol/recordBatch/record/v0/decoder');
const VERSION = load('@nestjs/microservices/package.json').version;
const NESTJS_HEADERS = ['kafka_correlationId', 'kafka_replyTopic', 'kafka_replyPartition'];

// ---- values as Lua source ---------------------------------------------------------------
function luaStr(v) {
  const b = Buffer.isBuffer(v) ? v : Buffer.from(String(v), 'utf8');
  let s = '"';
  for (const c of b) {
    if (c === 0x22) s += '\\"';
    else if (c === 0x5c) s += '\\\\';
    else if (c >= 0x20 && c < 0x7f) s += String.fromCharCode(c);
    else s += '\\x' + c.toString(16).padStart(2, '0');
  }
  return s + '"';
}
const luaBytes = (b) => (b === null || b === undefined ? 'nil' : luaStr(b));
const luaList = (items) => '{' + items.join(', ') + '}';

// ---- the wire, as kafkajs writes and reads it -------------------------------------------
// kafkajs writes a key, value or header value null/undefined as null, a Buffer as it is,
// anything else as the UTF-8 bytes of String(value).
function bytes(v) {
  const d = new Decoder(new Encoder().writeVarIntBytes(v).buffer);
  return d.readVarIntBytes();
}
// A produced message as a record: key, value and the headers list in wire order.
function wire(msg) {
  const headers = [];
  for (const name of Object.keys(msg.headers || {})) {
    const vs = Array.isArray(msg.headers[name]) ? msg.headers[name] : [msg.headers[name]];
    for (const v of vs) headers.push([name, bytes(v)]);
  }
  return { key: bytes(msg.key), value: bytes(msg.value), headers, partition: msg.partition };
}
// A record (key, value, headers list) consumed: the message kafkajs hands to eachMessage.
// (Written with kafkajs's own field encoders: its record encoder cannot size a null header
// value, which other clients do produce.)
function consumed(key, value, headers) {
  const body = new Encoder().writeInt8(0).writeVarLong(0).writeVarInt(0)
    .writeVarIntBytes(key).writeVarIntBytes(value)
    .writeVarIntArray(headers.map(([name, v]) => HeaderV0({ key: name, value: v })));
  const m = RecordV0Decoder(new Decoder(body.buffer), { firstOffset: '0', firstTimestamp: '0', magicByte: 2 });
  return { key: m.key, value: m.value, headers: m.headers, offset: m.offset, timestamp: m.timestamp };
}

// The canonical text of a parsed value, computed the same way on the Lua side (canon.lua):
// JSON with sorted object keys and JavaScript number text; a top-level Buffer as <bytes:hex>.
function canon(v, top) {
  if (v === null || v === undefined) return 'null';
  if (Buffer.isBuffer(v)) {
    if (!top) throw new Error('nested Buffer');
    return '<bytes:' + v.toString('hex') + '>';
  }
  if (Array.isArray(v)) return '[' + v.map((x) => canon(x)).join(',') + ']';
  if (typeof v === 'object') {
    return '{' + Object.keys(v).sort().map((k) => JSON.stringify(k) + ':' + canon(v[k])).join(',') + '}';
  }
  if (typeof v === 'number' && !Number.isFinite(v)) throw new Error('no JSON form');
  return JSON.stringify(v);
}
const canonHeaders = (h) =>
  '{' + Object.keys(h).sort().map((k) => JSON.stringify(k) + ':' + canon(h[k], true)).join(',') + '}';

const B = (s) => Buffer.from(s, 'latin1'); // raw bytes written as a latin1 string

// ---- KafkaParser: what a NestJS handler sees ---------------------------------------------
// [name, key, value, headers [[name, bytes | null]]]
const PARSE = [
  // kafka-parser.spec.ts
  ['null value', null, null, []],
  ['buffer string', null, B('string'), []],
  ['buffer number', null, B('12345'), []],
  ['buffer bigint', null, B('9007199254740992'), []],
  ['buffer json', null, B('{"prop":"value"}'), []],
  ['buffer json with key', B('1'), B('{"prop":"value"}'), []],
  ['buffer json with key and headers', B('1'), B('{"prop":"value"}'), [['kafka_correlationId', B('correlation-id')]]],
  // JSON keys and header values are parsed too
  ['a JSON object key', B('{"id":7}'), B('v'), []],
  ['a JSON array header', null, B('v'), [['h', B('[1]')]]],
  ['a nested JSON header', null, B('v'), [['h', B('{"a":[1,{"b":null}],"c":"x"}')]]],
  ['a key that is a number stays text', B('42'), B('1.5'), []],
  ['a key starting with a 0x00 byte stays bytes', B('\x00\x01k'), B('v'), []],
  ['a header starting with a 0x00 byte stays bytes', null, B('v'), [['h', B('\x00{"a":1}')]]],
  ['a null header value', null, B('v'), [['h', null]]],
  ['an empty header value', null, B('v'), [['h', B('')]]],
  ['a repeated header name: values joined with ","', null, B('v'), [['h', B('a')], ['h', B('b')], ['h', B('c')]]],
  ['a repeated header of JSON arrays stays text', null, B('v'), [['h', B('[1]')], ['h', B('[2]')]]],
  ['a repeated header with a null value', null, B('v'), [['h', null], ['h', B('x')]]],
  // values: what parses and what stays text
  ['an empty value', null, B(''), []],
  ['text that only starts like JSON', null, B('{not json'), []],
  ['leading whitespace defeats the parse', null, B(' {"a":1}'), []],
  ['an unterminated array', null, B('[1,2'), []],
  ['an empty array', null, B('[]'), []],
  ['an empty object', null, B('{}'), []],
  ['a value starting with a 0x00 byte stays bytes', null, B('\x00\x00\x00\x00\x01{"a":1}'), []],
  ['JSON numbers as JavaScript reads them', null, B('{"i":12345678901234567890,"f":1.0,"z":-0,"e":1E3,"s":1e-7,"b":1e21}'), []],
  ['JSON escapes', null, B('{"u":"\\u00e9\\ud83d\\ude00","c":"\\u0001\\t\\"\\\\","sl":"a\\/b"}'), []],
  ['UTF-8 text', null, B('{"t":"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"}'), []],
  ['a byte-order mark is kept', null, B('\xef\xbb\xbf{"a":1}'), []],
  // ill-formed UTF-8: one U+FFFD per maximal ill-formed subsequence, then the JSON parse
  ['an invalid byte in text', null, B('a\xffb'), []],
  ['an invalid byte inside JSON', null, B('{"a":"\xff"}'), []],
  ['a truncated sequence', null, B('x\xe2\x82'), []],
  ['a truncated 4-byte sequence inside JSON', null, B('["\xf0\x9f\x98",1]'), []],
  ['an encoded surrogate', null, B('\xed\xa0\x80z'), []],
  ['an overlong slash', null, B('\xc0\xaf'), []],
  ['past U+10FFFF', null, B('\xf4\x90\x80\x80'), []],
  ['lone continuation bytes', null, B('\x80\xbf\x80'), []],
  ['an invalid key and header', B('k\xfe'), B('v'), [['h', B('[\"\xc3\"]')]]],
];

function parseVectors() {
  const parser = new KafkaParser();
  const deserializer = new KafkaRequestDeserializer();
  return PARSE.map(([name, key, value, headers]) => {
    const raw = consumed(key, value, headers);
    const parsed = parser.parse(Object.assign(raw, { topic: 'sum', partition: 0 }));
    const packet = deserializer.deserialize(parsed, { channel: 'sum' });
    if (packet.pattern !== 'sum') throw new Error('pattern');
    return luaList([
      'name = ' + luaStr(name),
      'key = ' + luaBytes(key),
      'value = ' + luaBytes(value),
      'headers = ' + luaList(headers.map(([n, v]) => luaList([luaStr(n), luaBytes(v)]))),
      // the handler's payload: the value, or (null value) the whole message
      'data = ' + luaStr(value === null ? 'message' : canon(packet.data, true)),
      'nest_key = ' + luaStr(canon(parsed.key, true)),
      'nest_value = ' + luaStr(canon(parsed.value, true)),
      'nest_headers = ' + luaStr(canonHeaders(parsed.headers)),
    ]);
  });
}

// ---- KafkaRequestSerializer: replies and requests ---------------------------------------
class Complex {
  constructor() { this.name = 'complex'; }
  toString() { return this.name; }
}
class ComplexParent {
  constructor() { this.name = 'complexParent'; }
  toString() { return this.name; }
}
class ComplexChild extends ComplexParent {}
class ComplexWithOutToString {
  constructor() { this.name = 'complex'; }
}
const LUA_TOSTRING = 'setmetatable({name = "complex"}, {__tostring = function(t) return t.name end})';
const LUA_CLASS = '(function() local P = {__tostring = function(t) return t.name end} ' +
  'return setmetatable({name = "complexParent"}, P) end)()';

// [name, JavaScript value, Lua expression]
const SERIALIZE = [
  // kafka-request.serializer.spec.ts
  ['undefined', undefined, 'nil'],
  ['null', null, 'kroute.null'],
  ['string', 'string', '"string"'],
  ['number', 12345, '12345'],
  ['buffer', Buffer.from('buffer'), '"buffer"'],
  ['array', [1, 2, 3, 4, 5], '{1, 2, 3, 4, 5}'],
  ['object', { prop: 'value' }, '{prop = "value"}'],
  ['complex object with .toString()', new Complex(), LUA_TOSTRING],
  ['complex object with inherited .toString()', new ComplexChild(), LUA_CLASS],
  ['complex object without .toString()', new ComplexWithOutToString(), '{name = "complex"}'],
  ['kafka message without key', { value: 'string' }, '{value = "string"}'],
  ['kafka message with key', { key: '1', value: 'string' }, '{key = "1", value = "string"}'],
  ['kafka message with headers', { key: '1', value: 'string', headers: { kafka_correlationId: '1234' } },
    '{key = "1", value = "string", headers = {kafka_correlationId = "1234"}}'],
  // envelopes kroute users write
  ['an object key, object value and a header', { key: { id: 7 }, value: { a: 1 }, headers: { h: 'v' } },
    '{key = {id = 7}, value = {a = 1}, headers = {h = "v"}}'],
  ['a number key and boolean value', { key: 7, value: true }, '{key = 7, value = true}'],
  ['a null key', { key: null, value: [1] }, '{key = kroute.null, value = {1}}'],
  ['a key without a value', { key: 'k' }, '{key = "k"}'],
  ['a null value', { value: null }, '{value = kroute.null}'],
  ['a partition', { value: 1, partition: 2 }, '{value = 1, partition = 2}'],
  ['header values: a number, a list, a null', { value: 'v', headers: { n: 1.5, l: ['a', 'b'], z: null } },
    '{value = "v", headers = {n = 1.5, l = {"a", "b"}, z = kroute.null}}'],
  ['an envelope inside the value is not unwrapped', { value: { key: 'inner', value: 1 } },
    '{value = {key = "inner", value = 1}}'],
  // plain values
  ['true', true, 'true'],
  ['a fraction', 0.75, '0.75'],
  ['1e-6', 1e-6, '1e-6'],
  ['1e-7', 1e-7, '1e-7'],
  ['1e20', 1e20, '1e20'],
  ['1e21', 1e21, '1e21'],
  ['2^63 as a float', 2 ** 63, '2^63'],
  ['0.1 + 0.2', 0.1 + 0.2, '0.1 + 0.2'],
  ['-0.0', -0, '-0.0'],
  ['numbers inside JSON', { a: [1e-7, 123456789.125, -1.5e300, 5e-324] }, '{a = {1e-7, 123456789.125, -1.5e300, 5e-324}}'],
  ['UTF-8 and control characters', { s: '\u00e9\u20ac\ud83d\ude00\u0001\u001f\u007f\n"\\/' },
    '{s = "\\u{e9}\\u{20ac}\\u{1f600}\\1\\31\\127\\n\\"\\\\/"}'],
  // ill-formed UTF-8 in a handler's string: the text Node makes of those bytes
  ['ill-formed UTF-8 in a JSON string', { a: B('a\xffb\xe2\x82').toString('utf8') }, '{a = "a\\xffb\\xe2\\x82"}'],
  ['ill-formed UTF-8 in an object key', { [B('k\xc0').toString('utf8')]: 1 }, '{["k\\xc0"] = 1}'],
];

// The reply ServerKafka sends when a @MessagePattern handler returns `value`.
async function serverReply(value, correlationId) {
  const server = new ServerKafka({});
  const sent = [];
  server.producer = { send: async (m) => { sent.push(m); } };
  server.addHandler('sum', async () => value, false);
  const headers = { kafka_correlationId: Buffer.from(correlationId), kafka_replyTopic: Buffer.from('sum.reply'),
    kafka_replyPartition: Buffer.from('3') };
  await server.handleMessage({ topic: 'sum', partition: 0, heartbeat: async () => {},
    message: { key: null, value: Buffer.from('[1]'), headers, offset: '0', timestamp: '0' } });
  for (let i = 0; i < 50 && !sent.length; i++) await new Promise((r) => setImmediate(r));
  if (sent.length !== 1 || sent[0].messages.length !== 1) throw new Error('no reply');
  if (sent[0].topic !== 'sum.reply') throw new Error('reply topic');
  return wire(sent[0].messages[0]);
}

// The request ClientKafka.send(pattern, value) produces.
async function clientRequest(value) {
  const client = new ClientKafka({});
  const sent = [];
  client._producer = { send: async (m) => { sent.push(m); } };
  client.getReplyTopicPartition = () => '0';
  client.publish({ pattern: 'sum', data: value }, () => {});
  for (let i = 0; i < 50 && !sent.length; i++) await new Promise((r) => setImmediate(r));
  if (sent.length !== 1) throw new Error('no request');
  const w = wire(sent[0].messages[0]);
  w.headers = w.headers.filter(([n]) => !NESTJS_HEADERS.includes(n));
  return w;
}

const sortHeaders = (hs) => hs.map((h, i) => [h, i]).sort((a, b) =>
  (a[0][0] < b[0][0] ? -1 : a[0][0] > b[0][0] ? 1 : a[1] - b[1])).map(([h]) => h);
const luaWire = (w) => luaList([
  'key = ' + luaBytes(w.key),
  'value = ' + luaBytes(w.value),
  'partition = ' + (w.partition === undefined ? 'nil' : String(w.partition)),
  'headers = ' + luaList(sortHeaders(w.headers).map(([n, v]) => luaList([luaStr(n), luaBytes(v)]))),
]);

// KafkaRequestSerializer rewrites an envelope in place: each use gets its own copy.
function clone(v) {
  if (Buffer.isBuffer(v)) return Buffer.from(v);
  if (Array.isArray(v)) return v.map(clone);
  if (v === null || typeof v !== 'object') return v;
  const c = Object.create(Object.getPrototypeOf(v));
  for (const k of Object.keys(v)) c[k] = clone(v[k]);
  return c;
}

async function serializeVectors() {
  const out = [];
  for (const [name, js, lua] of SERIALIZE) {
    const reply = await serverReply(clone(js), 'corr-1');
    const request = await clientRequest(clone(js));
    out.push(luaList(['name = ' + luaStr(name), 'lua = ' + luaStr(lua),
      'reply = ' + luaWire(reply), 'request = ' + luaWire(request)]));
  }
  return out;
}

// ---- ServerKafka: which records it answers, and how ---------------------------------------
// [name, headers [[name, bytes]], has a handler]
const SERVE = [
  ['a request', [['kafka_correlationId', B('c1')], ['kafka_replyTopic', B('sum.reply')], ['kafka_replyPartition', B('1')]], true],
  ['an empty correlation id is an event', [['kafka_correlationId', B('')], ['kafka_replyTopic', B('sum.reply')]], true],
  ['no correlation id is an event', [['kafka_replyTopic', B('sum.reply')]], true],
  ['an empty reply topic is an event', [['kafka_correlationId', B('c1')], ['kafka_replyTopic', B('')]], true],
  ['a correlation id "0" is a request', [['kafka_correlationId', B('0')], ['kafka_replyTopic', B('sum.reply')]], true],
  ['an unmatched pattern', [['kafka_correlationId', B('c2')], ['kafka_replyTopic', B('sum.reply')], ['kafka_replyPartition', B('0')]], false],
];

async function serveVectors() {
  const out = [];
  for (const [name, headers, handled] of SERVE) {
    const server = new ServerKafka({});
    const sent = [];
    let calls = 0;
    server.producer = { send: async (m) => { sent.push(m); } };
    server.logger = { error() {}, log() {}, warn() {} };
    if (handled) server.addHandler('sum', async () => { calls++; return 6; }, false);
    const raw = consumed(null, Buffer.from('[1,2,3]'), headers);
    await server.handleMessage({ topic: 'sum', partition: 0, heartbeat: async () => {}, message: raw });
    for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r));
    const reply = sent.length ? wire(sent[0].messages[0]) : null;
    out.push(luaList(['name = ' + luaStr(name),
      'headers = ' + luaList(headers.map(([n, v]) => luaList([luaStr(n), luaBytes(v)]))),
      'handled = ' + String(handled), 'calls = ' + calls,
      'reply = ' + (reply ? luaWire(reply) : 'nil')]));
  }
  return out;
}

// ---- KafkaResponseDeserializer + ClientProxy: what a caller of ClientKafka.send() gets --------------------------
// [name, records [[value bytes | null, headers [[name, bytes]]]]]
const RESPOND = [
  ['a final value', [[B('6'), [['kafka_nest-is-disposed', B('\x00')]]]]],
  ['a final JSON value', [[B('{"id":7,"tags":["a"]}'), [['kafka_nest-is-disposed', B('\x00')]]]]],
  ['a final null value', [[null, [['kafka_nest-is-disposed', B('\x00')]]]]],
  ['an error text', [[null, [['kafka_nest-err', B('boom')], ['kafka_nest-is-disposed', B('\x00')]]]]],
  ['an RpcException object', [[null, [['kafka_nest-err', B('{"status":"error","message":"no such user"}')], ['kafka_nest-is-disposed', B('\x00')]]]]],
  ['the no-handler error, without is-disposed', [[null, [['kafka_nest-err', B('There is no matching message handler defined in the remote service.')]]]]],
  ['a streamed value, then a final value', [[B('1'), []], [B('2'), [['kafka_nest-is-disposed', B('\x00')]]]]],
  ['a streamed value, then a final null', [[B('[1]'), []], [null, [['kafka_nest-is-disposed', B('\x00')]]]]],
  ['ill-formed UTF-8 in a final value', [[B('{"a":"\xff"}'), [['kafka_nest-is-disposed', B('\x00')]]]]],
];

async function respondVectors() {
  const out = [];
  for (const [name, records] of RESPOND) {
    const client = new ClientKafka({});
    const events = [];
    const observer = { next: (v) => events.push(['next', v]), error: (e) => events.push(['error', e]),
      complete: () => events.push(['complete']) };
    client.routingMap.set('id-1', client.createObserver(observer));
    const onMessage = client.createResponseCallback();
    for (const [value, headers] of records) {
      const raw = consumed(null, value, [['kafka_correlationId', B('id-1')], ...headers]);
      await onMessage({ topic: 'sum.reply', partition: 0, message: raw });
    }
    const nexts = events.filter((e) => e[0] === 'next').map((e) => canon(e[1], true));
    const err = events.find((e) => e[0] === 'error');
    out.push(luaList(['name = ' + luaStr(name),
      'records = ' + luaList(records.map(([v, hs]) => luaList(['value = ' + luaBytes(v),
        'headers = ' + luaList(hs.map(([n, hv]) => luaList([luaStr(n), luaBytes(hv)])))]))),
      'nexts = ' + luaList(nexts.map(luaStr)),
      'error = ' + (err ? luaStr(canon(err[1], true)) : 'nil'),
      'completed = ' + String(events.some((e) => e[0] === 'complete'))]));
  }
  return out;
}

// ---- Number.prototype.toString ------------------------------------------------------------
function numberVectors() {
  const values = [0, -0, 1, -1, 0.5, 0.75, 6, 1e-6, 1e-7, 1.5e-7, 1e20, 1e21, 1.5e21, 2 ** 53, 2 ** 53 + 2,
    2 ** 63, 2 ** 64, 0.1, 0.2, 0.1 + 0.2, 1 / 3, 2 / 3, 123.456, 5e-324, 1e-323, 2.2250738585072014e-308,
    2.225073858507201e-308, 1.7976931348623157e308, 9007199254740993, 123456789012345680000,
    4.35, 0.000001234, 0.0000001234, 1e100, 1.2e-100, 100, 1e15, 1e16, 1e17, 12345678901234567,
    999999999999999900000, 9.999999999999999e20, 1.0000000000000002, 0.30000000000000004, Math.PI,
    Math.E, -Math.PI * 1e300, 299792458, 6.02214076e23, 1.602176634e-19];
  for (let e = -1074; e <= 1023; e += 7) values.push(2 ** e, -(2 ** e) * 3, 2 ** e * 1.0000000000000002);
  for (let e = -324; e <= 308; e += 3) values.push(Number('1e' + e), Number('9.5e' + e), Number('1.23456789e' + e));
  for (let i = 0; i < 200; i++) values.push(Number((Math.random() * 1000).toFixed(1 + (i % 8))));
  const buf = Buffer.alloc(8);
  let random = 0;
  while (random < 1500) {
    crypto.randomFillSync(buf);
    const d = buf.readDoubleLE(0);
    if (!Number.isFinite(d)) continue;
    values.push(d);
    random++;
  }
  return values.map((d) => {
    buf.writeDoubleLE(d, 0);
    return luaList([luaStr(buf), luaStr(String(d))]);
  });
}

async function main() {
  const lines = [];
  const put = (s) => lines.push(s);
  put('-- GENERATED by spec/unit/nest_vectors.js from @nestjs/microservices ' + VERSION +
      ' (NestJS\'s own KafkaParser,');
  put('-- KafkaRequestSerializer, KafkaRequestDeserializer, KafkaResponseDeserializer, ServerKafka, ClientKafka)');
  put('-- and kafkajs\'s byte encoding; do not edit. Regenerate: sh examples/nestjs/install.sh &&');
  put('--   node spec/unit/nest_vectors.js > spec/unit/nest_vectors.lua');
  put('-- Read by spec/unit/nest_parity_spec.lua, which checks kroute against every value here.');
  put('return {');
  put('  nestjs = ' + luaStr(VERSION) + ',');
  const section = (name, items) => {
    put('  ' + name + ' = {');
    for (const it of items) put('    ' + it + ',');
    put('  },');
  };
  section('parse', parseVectors());
  section('serialize', await serializeVectors());
  section('serve', await serveVectors());
  section('respond', await respondVectors());
  section('numbers', numberVectors());
  put('}');
  process.stdout.write(lines.join('\n') + '\n');
}

main().catch((e) => { process.stderr.write((e && e.stack) || String(e)); process.stderr.write('\n'); process.exit(1); });
