#!/usr/bin/env node
'use strict';
// A NestJS 11 microservice (Kafka transport, server side) answering the patterns kroute's
// NestJS-compatible routes answer: sum, max, echo, fail, slow, plus the event `print`.
// It is the NestJS baseline for benchmarks and behaviour comparisons.
//
//   node math-service.js --brokers HOST:PORT [--group nest-math] [--verbose]
//
// stdout: `READY` once listening, then one JSON line per observed event:
//   {"event":"print","data":...}        for every `print` event
//   {"event":"slow.start","data":...}   when a `slow` request starts (kill hook for tests)
// Nest and kafkajs logs go to stderr.

const nest = require('./nest');
const { Controller, Module } = nest.common;
const { MessagePattern, EventPattern, RpcException, Payload, Ctx } = nest.microservices;

const USAGE = 'usage: node math-service.js --brokers HOST:PORT [--group nest-math] [--from-beginning] [--verbose]';

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function numbers(data) {
  if (!Array.isArray(data)) throw new RpcException('expected an array of numbers');
  return data.map(Number);
}

class MathController {
  // A handler without parameter decorators gets the payload only; `print` declares
  // @Payload() and @Ctx() (applied by hand below) to get the KafkaContext too.
  sum(data) {
    return numbers(data).reduce((a, b) => a + b, 0);
  }

  max(data) {
    return Math.max(...numbers(data));
  }

  // the data is the record value (for a client's {key, value, headers} form, the value)
  echo(data) {
    return data;
  }

  fail() {
    throw new RpcException('boom');
  }

  async slow(data) {
    nest.out({ event: 'slow.start', data });
    await sleep(3000);
    return { done: true };
  }

  print(data, context) {
    nest.out({ event: 'print', data });
    nest.log('math-service', `print from ${context.getTopic()}[${context.getPartition()}]: ${JSON.stringify(data)}`);
  }
}

nest.method(MathController, 'sum', MessagePattern('sum'));
nest.method(MathController, 'max', MessagePattern('max'));
nest.method(MathController, 'echo', MessagePattern('echo'));
nest.method(MathController, 'fail', MessagePattern('fail'));
nest.method(MathController, 'slow', MessagePattern('slow'));
nest.method(MathController, 'print', EventPattern('print'));
nest.params(MathController, 'print', Payload(), Ctx());
nest.klass(MathController, Controller());

class MathModule {}
nest.klass(MathModule, Module({ controllers: [MathController] }));

nest.main('math-service', async () => {
  const args = nest.parseArgs(process.argv.slice(2),
    { brokers: '', group: 'nest-math', verbose: false, fromBeginning: false }, USAGE);
  await nest.runMicroservice('math-service', MathModule,
    nest.serverOptions({ brokers: args.brokers, group: args.group, verbose: args.verbose,
                         fromBeginning: args.fromBeginning }));
});
