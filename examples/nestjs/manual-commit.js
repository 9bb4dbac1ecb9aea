#!/usr/bin/env node
'use strict';
// The seed's manual-commit consumer as a NestJS 11 microservice: run.autoCommit is
// false, the handler of the `order.enriched` events (which kroute emits) processes an
// event and only then commits its offset + 1 through the KafkaContext's consumer.
//
//   node manual-commit.js --brokers HOST:PORT [--group nest-orders] [--verbose]
//
// stdout: `READY` once listening, then one JSON line per event, printed before its
// commit: {"event":<value as NestJS parsed it>,"partition":2,"offset":"0","key":"u1"|null,
// "headers":{...}} (offset is kafkajs' decimal string; JSON values arrive as objects,
// anything else as a string). Each commit is logged on stderr.

const nest = require('./nest');
const { Controller, Module } = nest.common;
const { EventPattern, Payload, Ctx } = nest.microservices;

const NAME = 'manual-commit';
const USAGE = 'usage: node manual-commit.js --brokers HOST:PORT [--group nest-orders] [--verbose]';

class OrdersController {
  async enriched(data, context) {
    const message = context.getMessage(); // the record as NestJS' KafkaParser decoded it
    const topic = context.getTopic();
    const partition = context.getPartition();
    const { offset } = message;
    const headers = {};
    for (const [k, v] of Object.entries(message.headers || {})) {
      headers[k] = Buffer.isBuffer(v) ? v.toString('utf8') : v;
    }
    nest.out({ event: data, partition, offset, key: message.key === undefined ? null : message.key, headers });
    await context.getConsumer().commitOffsets([
      { topic, partition, offset: String(Number(offset) + 1) },
    ]);
    nest.log(NAME, `committed ${topic}[${partition}] offset ${Number(offset) + 1}`);
  }
}

nest.method(OrdersController, 'enriched', EventPattern('order.enriched'));
// without @Payload()/@Ctx() Nest 11 passes the payload only: declare both by hand
nest.params(OrdersController, 'enriched', Payload(), Ctx());
nest.klass(OrdersController, Controller());

class OrdersModule {}
nest.klass(OrdersModule, Module({ controllers: [OrdersController] }));

nest.main(NAME, async () => {
  const args = nest.parseArgs(process.argv.slice(2),
    { brokers: '', group: 'nest-orders', verbose: false }, USAGE);
  await nest.runMicroservice(NAME, OrdersModule, nest.serverOptions({
    brokers: args.brokers, group: args.group, verbose: args.verbose, run: { autoCommit: false },
  }));
});
