// RocketMQ 5's Node.js gRPC client (rocketmq-client-nodejs) against our gRPC proxy: normal,
// FIFO, delayed and transactional sends, then a SimpleConsumer that receives and acknowledges
// every message once, and a PushConsumer whose listener sees every message once.
//
// Usage: node client.js ENDPOINT, or node client.js tls ENDPOINT (a proxy that enforces TLS:
// SSL on, the proxy's certificate trusted through GRPC_DEFAULT_SSL_ROOTS_FILE_PATH), or node
// client.js acl ENDPOINT AK SK (a proxy that checks ACL: calls signed with the account). Prints
// PASS or FAIL per scenario and exits 1 on any failure.
'use strict';

const {
  ConsumeResult, Producer, PushConsumer, SimpleConsumer, UnauthorizedException,
} = require('rocketmq-client-nodejs');

const overTls = process.argv[2] === 'tls';
const withAcl = process.argv[2] === 'acl';
const endpoints = overTls || withAcl ? process.argv[3] : process.argv[2];
// In the ACL mode, every client of the run signs with the account.
const sessionCredentials = withAcl
  ? { accessKey: process.argv[4], accessSecret: process.argv[5] }
  : undefined;
// Every client of the run: SSL only in the TLS mode (the client's default is off).
const sslEnabled = overTls;
let passed = 0;
let failed = 0;

async function check(name, fn) {
  try {
    await fn();
    passed++;
    console.log(`PASS ${name}`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}\t${String(e && e.stack || e).split('\n').join(' ')}`);
  }
}

function require_(ok, what) {
  if (!ok) {
    throw new Error(what);
  }
}

// Receives until every body in `expected` came, acknowledging each; returns the counts.
async function receiveAll(group, topic, expected, tag) {
  const consumer = new SimpleConsumer({
    consumerGroup: group,
    endpoints,
    sslEnabled,
    sessionCredentials,
    subscriptions: new Map().set(topic, tag || '*'),
    awaitDuration: 5000,
  });
  await consumer.startup();
  const seen = new Map();
  try {
    const until = Date.now() + 60000;
    while ([...expected].some(b => !seen.has(b)) && Date.now() < until) {
      for (const m of await consumer.receive(16, 30000)) {
        const body = m.body.toString();
        seen.set(body, (seen.get(body) || 0) + 1);
        await consumer.ack(m);
      }
    }
  } finally {
    await consumer.shutdown();
  }
  return seen;
}

// Over TLS: a send, received and acknowledged.
async function mainTls() {
  await check('over TLS, a send received and acknowledged', async () => {
    const producer = new Producer({ endpoints, sslEnabled, topic: 'NodeTls' });
    await producer.startup();
    const body = `over tls ${Date.now()}`;
    try {
      await producer.send({ topic: 'NodeTls', tag: 'tls', body: Buffer.from(body) });
    } finally {
      await producer.shutdown();
    }
    const seen = await receiveAll('NodeTlsGroup', 'NodeTls', new Set([body]), 'tls');
    require_(seen.get(body) === 1, `received ${JSON.stringify([...seen])}`);
  });
  console.log(`node-grpc: ${passed} passed, ${failed} failed`);
  process.exit(failed === 0 ? 0 : 1);
}

// Against a proxy that checks ACL: signed, a send received and acknowledged; signed with a
// wrong secret key, a producer refused as unauthorized.
async function mainAcl() {
  await check('with ACL, a signed send received and acknowledged', async () => {
    const body = `signed ${Date.now()}`;
    const producer = new Producer({ endpoints, sessionCredentials, topic: 'NodeAcl' });
    await producer.startup();
    try {
      await producer.send({ topic: 'NodeAcl', tag: 'acl', body: Buffer.from(body) });
    } finally {
      await producer.shutdown();
    }
    const seen = await receiveAll('NodeAclGroup', 'NodeAcl', new Set([body]), 'acl');
    require_(seen.get(body) === 1, `received ${JSON.stringify([...seen])}`);
  });
  await check('with ACL, a wrong secret key is refused as unauthorized', async () => {
    const wrong = { ...sessionCredentials, accessSecret: `${sessionCredentials.accessSecret}-wrong` };
    let refusal;
    try {
      const producer = new Producer({ endpoints, sessionCredentials: wrong, topic: 'NodeAcl' });
      await producer.startup();
      try {
        await producer.send({ topic: 'NodeAcl', body: Buffer.from('unsigned') });
      } finally {
        await producer.shutdown();
      }
    } catch (e) {
      refusal = e;
    }
    const chain = [];
    for (let e = refusal; e && chain.length < 10; e = e.cause) {
      chain.push(e);
    }
    require_(chain.some(e => e instanceof UnauthorizedException),
      `not refused as unauthorized: ${chain.map(String).join(' <- ')}`);
  });
  console.log(`node-grpc: ${passed} passed, ${failed} failed`);
  process.exit(failed === 0 ? 0 : 1);
}

async function main() {
  if (overTls) {
    return mainTls();
  }
  if (withAcl) {
    return mainAcl();
  }
  // One topic declared up front: with several, the client's startup may miss the settings
  // answer it waits for (it arrives while later routes are still being fetched) and hang.
  // The other topics' routes are fetched on first send.
  const producer = new Producer({ endpoints, topic: 'NodeNormal' });
  await producer.startup();
  await check('producer: normal send', async () => {
    const r = await producer.send({ topic: 'NodeNormal', tag: 'TagA', keys: ['k1'], body: Buffer.from('normal from node') });
    require_(r.messageId, 'no message id');
  });
  await check('producer: FIFO send with a message group', async () => {
    for (let i = 0; i < 5; i++) {
      await producer.send({ topic: 'NodeFifo', messageGroup: 'order-9', body: Buffer.from(`fifo ${i}`) });
    }
  });
  await check('producer: delayed send', async () => {
    await producer.send({ topic: 'NodeDelay', deliveryTimestamp: new Date(Date.now() + 1000), body: Buffer.from('later') });
  });
  await check('simple consumer: receives and acks every message once', async () => {
    const expected = new Set();
    for (let i = 0; i < 10; i++) {
      expected.add(`simple ${i}`);
      await producer.send({ topic: 'NodeSimple', tag: 'TagS', body: Buffer.from(`simple ${i}`) });
    }
    const seen = await receiveAll('NodeSimpleGroup', 'NodeSimple', expected, 'TagS');
    require_([...expected].every(b => seen.get(b) === 1), `received ${JSON.stringify([...seen])}`);
    require_(seen.size === expected.size, `received ${JSON.stringify([...seen])}`);
  });
  await check('push consumer: its listener gets every message once', async () => {
    const expected = new Set();
    for (let i = 0; i < 10; i++) {
      expected.add(`push ${i}`);
      await producer.send({ topic: 'NodePush', tag: 'TagP', body: Buffer.from(`push ${i}`) });
    }
    const seen = new Map();
    let allSeen;
    const done = new Promise(resolve => { allSeen = resolve; });
    const consumer = new PushConsumer({
      consumerGroup: 'NodePushGroup',
      endpoints,
      subscriptions: new Map().set('NodePush', 'TagP'),
      messageListener: {
        consume(m) {
          const body = m.body.toString();
          seen.set(body, (seen.get(body) || 0) + 1);
          if ([...expected].every(b => seen.has(b))) {
            allSeen();
          }
          return ConsumeResult.SUCCESS;
        },
      },
    });
    await consumer.startup();
    let timer;
    try {
      await Promise.race([done, new Promise(resolve => { timer = setTimeout(resolve, 60000); })]);
    } finally {
      clearTimeout(timer);
      await consumer.shutdown();
    }
    require_([...expected].every(b => seen.get(b) === 1), `received ${JSON.stringify([...seen])}`);
    require_(seen.size === expected.size, `received ${JSON.stringify([...seen])}`);
  });
  await producer.shutdown();
  await check('producer: transactions, committed delivered and rolled back not', async () => {
    // COMMIT is 1 in the contract's TransactionResolution.
    const tx = new Producer({ endpoints, topic: 'NodeTx', checker: { check: async () => 1 } });
    await tx.startup();
    try {
      for (const outcome of ['commit', 'rollback']) {
        const t = tx.beginTransaction();
        await tx.send({ topic: 'NodeTx', body: Buffer.from(`tx ${outcome}`) }, t);
        if (outcome === 'commit') {
          await t.commit();
        } else {
          await t.rollback();
        }
      }
    } finally {
      await tx.shutdown();
    }
    const seen = await receiveAll('NodeTxGroup', 'NodeTx', new Set(['tx commit']));
    require_(seen.size === 1 && seen.get('tx commit') === 1, `received ${JSON.stringify([...seen])}`);
  });
  console.log(`node-grpc: ${passed} passed, ${failed} failed`);
  process.exit(failed === 0 ? 0 : 1);
}

main().catch(e => {
  console.log(`FAIL client: ${String(e && e.stack || e).split('\n').join(' ')}`);
  process.exit(1);
});
