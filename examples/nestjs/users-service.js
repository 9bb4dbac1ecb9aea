#!/usr/bin/env node
'use strict';
// A NestJS 11 microservice (Kafka transport, server side) with one request-reply
// pattern, `user.get`, as a service kroute routes can call or stand in for.
//
//   node users-service.js --brokers HOST:PORT [--group nest-users] [--verbose]
//
// user.get: data {id} (or the id itself; a bare number arrives as the string "7")
//   -> {"id":7,"name":"User 7","tier":"gold"}   (odd id: gold, even: silver)
//   id <= 0 or not a number -> RpcException('no such user'), which the calling
//   ClientKafka receives as the error {"status":"error","message":"no such user"}.
// stdout: `READY` once listening. Nest and kafkajs logs go to stderr.

const nest = require('./nest');
const { Controller, Module } = nest.common;
const { MessagePattern, RpcException } = nest.microservices;

const USAGE = 'usage: node users-service.js --brokers HOST:PORT [--group nest-users] [--verbose]';

class UsersController {
  getUser(data) {
    const raw = data !== null && typeof data === 'object' ? data.id : data;
    const id = Number(raw);
    if (raw === null || raw === undefined || raw === '' || !Number.isFinite(id) || id <= 0) {
      throw new RpcException('no such user');
    }
    return { id, name: `User ${id}`, tier: id % 2 ? 'gold' : 'silver' };
  }
}

nest.method(UsersController, 'getUser', MessagePattern('user.get'));
nest.klass(UsersController, Controller());

class UsersModule {}
nest.klass(UsersModule, Module({ controllers: [UsersController] }));

nest.main('users-service', async () => {
  const args = nest.parseArgs(process.argv.slice(2),
    { brokers: '', group: 'nest-users', verbose: false }, USAGE);
  await nest.runMicroservice('users-service', UsersModule,
    nest.serverOptions({ brokers: args.brokers, group: args.group, verbose: args.verbose }));
});
