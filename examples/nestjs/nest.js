'use strict';
// Shared helper for the NestJS example apps.
//
// The dependencies are not installed next to these files: install.sh puts them in
// <repo>/.build/nestjs/node_modules (.build/ is git-ignored). This module loads them from
// there, so the apps run with a plain `node file.js` and no NODE_PATH.
//
// It also provides what plain JavaScript needs to use Nest without a TypeScript build:
// helpers that apply decorators by hand, a logger that keeps stdout clean (Nest and
// kafkajs logs go to stderr; stdout carries only the machine-readable lines the apps
// print), a tiny argv parser and the Kafka options every app shares.

const fs = require('fs');
const path = require('path');
const { createRequire } = require('module');

const ROOT = path.resolve(__dirname, '..', '..');
const PREFIX = path.join(ROOT, '.build', 'nestjs');

if (!fs.existsSync(path.join(PREFIX, 'node_modules', '@nestjs', 'microservices', 'package.json'))) {
  process.stderr.write(
    `NestJS is not installed in ${PREFIX}: run examples/nestjs/install.sh first\n`);
  process.exit(2);
}

// kafkajs 2 warns at every producer creation that its default partitioner changed.
// The default (murmur2, Java-compatible) is what NestJS users get; silence the notice.
process.env.KAFKAJS_NO_PARTITIONER_WARNING = process.env.KAFKAJS_NO_PARTITIONER_WARNING || '1';

const load = createRequire(path.join(PREFIX, 'package.json'));
load('reflect-metadata'); // global Reflect.defineMetadata, needed by every decorator

const common = load('@nestjs/common');
const core = load('@nestjs/core');
const microservices = load('@nestjs/microservices');
const kafkajs = load('kafkajs');
const rxjs = load('rxjs');

// ---- decorators, applied by hand ------------------------------------------------------

// method(Cls, 'name', MessagePattern('sum'), ...) == `@MessagePattern('sum') name() {}`
function method(Cls, name, ...decorators) {
  const descriptor = Object.getOwnPropertyDescriptor(Cls.prototype, name);
  if (!descriptor) throw new Error(`${Cls.name}.${name} is not defined`);
  for (const decorate of decorators.reverse()) {
    const result = decorate(Cls.prototype, name, descriptor);
    if (result) Object.defineProperty(Cls.prototype, name, result);
  }
  return Cls;
}

// params(Cls, 'name', Payload(), Ctx()) == `name(@Payload() data, @Ctx() context) {}`
// Needed to get the KafkaContext: without parameter decorators Nest 11 calls a handler
// with the payload ONLY (its default metadata is {payload: index 0}); the context
// argument is then undefined.
function params(Cls, name, ...decorators) {
  decorators.forEach((decorate, index) => decorate(Cls.prototype, name, index));
  return Cls;
}

// klass(Cls, Controller(), ...) == `@Controller() class Cls {}`
function klass(Cls, ...decorators) {
  let result = Cls;
  for (const decorate of decorators.reverse()) result = decorate(result) || result;
  return result;
}

// ---- logging --------------------------------------------------------------------------

// Nest's ConsoleLogger writes info lines to stdout; route everything to stderr.
class StderrLogger extends common.ConsoleLogger {
  printMessages(messages, context, logLevel, _stream, errorStack) {
    return super.printMessages(messages, context, logLevel, 'stderr', errorStack);
  }
}

function logger(verbose) {
  return new StderrLogger({
    colors: Boolean(process.stderr.isTTY) && !process.env.NO_COLOR,
    logLevels: verbose
      ? ['fatal', 'error', 'warn', 'log', 'debug', 'verbose']
      : ['fatal', 'error', 'warn', 'log'],
  });
}

// ---- command line ---------------------------------------------------------------------

// parseArgs(process.argv.slice(2), { brokers: null, n: 50 }) -> { brokers, n, ... }
// accepts --name value and --name=value; booleans: --flag (no value) when the
// default is a boolean. Unknown options and missing values are usage errors (exit 2).
function parseArgs(argv, defaults, usage) {
  const out = Object.assign({}, defaults);
  const fail = (msg) => {
    process.stderr.write(`${msg}\n${usage || ''}\n`);
    process.exit(2);
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '-h' || arg === '--help') {
      process.stdout.write(`${usage || ''}\n`);
      process.exit(0);
    }
    const m = /^--([a-z][a-z0-9-]*)(?:=(.*))?$/.exec(arg);
    if (!m) fail(`unexpected argument: ${arg}`);
    const name = m[1].replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    if (!(name in defaults)) fail(`unknown option: --${m[1]}`);
    let value = m[2];
    if (typeof defaults[name] === 'boolean') {
      out[name] = value === undefined ? true : !/^(0|false|no)$/i.test(value);
      continue;
    }
    if (value === undefined) {
      if (i + 1 >= argv.length) fail(`--${m[1]} needs a value`);
      value = argv[++i];
    }
    if (typeof defaults[name] === 'number') {
      const num = Number(value);
      if (!Number.isFinite(num)) fail(`--${m[1]}: not a number: ${value}`);
      out[name] = num;
    } else {
      out[name] = value;
    }
  }
  if ('brokers' in defaults && !out.brokers) fail('--brokers is required');
  return out;
}

function brokerList(brokers) {
  return String(brokers).split(',').map((s) => s.trim()).filter(Boolean);
}

// ---- Kafka options shared by the apps -------------------------------------------------

// Settings the mock broker needs (spec/README.md, "The two brokers"): session timeout >= 4000,
// a short fetch wait (an empty Fetch is held for the whole wait even when data arrives).
const CONSUMER_TUNING = { maxWaitTimeInMs: 10, sessionTimeout: 6000, heartbeatInterval: 500 };

function kafkaClientOptions(brokers, clientId, verbose) {
  return {
    clientId,
    brokers: brokerList(brokers),
    logLevel: verbose ? kafkajs.logLevel.INFO : kafkajs.logLevel.WARN,
  };
}

// Options for a Transport.KAFKA microservice (server side; Nest appends '-server').
function serverOptions({ brokers, group, clientId, verbose, run, fromBeginning }) {
  return {
    transport: microservices.Transport.KAFKA,
    options: {
      client: kafkaClientOptions(brokers, clientId || group, verbose),
      consumer: Object.assign({ groupId: group }, CONSUMER_TUNING),
      producer: { allowAutoTopicCreation: true },
      run: run || {},
      // a new group starts at the end of its topics unless told otherwise
      subscribe: { fromBeginning: !!fromBeginning },
    },
    logger: logger(verbose),
  };
}

// Writes one line on stdout (the apps' machine-readable output).
function out(line) {
  process.stdout.write((typeof line === 'string' ? line : JSON.stringify(line)) + '\n');
}

function log(name, msg) {
  process.stderr.write(`${name}: ${msg}\n`);
}

// Boots a microservice module, prints READY once its consumer has joined its group, and
// closes it on SIGINT/SIGTERM. listen() alone is not enough: when the first join fails with a
// retriable error (a coordinator still loading, a broker not yet up), kafkajs reports a crash,
// lets consumer.run() resolve and rejoins on its own a moment later.
async function runMicroservice(name, Module, options) {
  const t0 = Date.now();
  const group = `${options.options.consumer.groupId}-server`; // Nest appends -server
  const app = await core.NestFactory.createMicroservice(Module, options);
  let ready = false;
  let watching = false;
  let onJoin;
  const joined = new Promise((resolve) => { onJoin = resolve; });
  app.status.subscribe((status) => {
    if (status !== 'connected' || watching) return;
    // the consumer connects first, so it exists by the first 'connected'
    const consumer = app.unwrap()[1];
    if (!consumer) return;
    watching = true;
    consumer.on(consumer.events.GROUP_JOIN, () => onJoin());
    consumer.on(consumer.events.CRASH, ({ payload }) => {
      const why = payload.error && payload.error.message;
      log(name, `kafka consumer crashed (${why})${payload.restart ? '; kafkajs restarts it' : ''}`);
      if (!payload.restart && !ready) process.exit(1);
    });
  });
  await app.listen();
  await joined;
  ready = true;
  log(name, `listening (group ${group}) after ${Date.now() - t0} ms`);
  out('READY');
  let closing = false;
  const stop = async (signal) => {
    if (closing) return;
    closing = true;
    log(name, `${signal}: closing`);
    const force = setTimeout(() => process.exit(0), 10000);
    force.unref();
    try { await app.close(); } catch (e) { log(name, `close: ${e.message}`); }
    process.exit(0);
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  return app;
}

function main(name, fn) {
  fn().catch((err) => {
    log(name, `fatal: ${err && err.stack ? err.stack : err}`);
    process.exit(1);
  });
}

module.exports = {
  ROOT, PREFIX, common, core, microservices, kafkajs, rxjs,
  method, params, klass, logger, StderrLogger, parseArgs, brokerList,
  CONSUMER_TUNING, kafkaClientOptions, serverOptions, runMicroservice, out, log, main,
};
