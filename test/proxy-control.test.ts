// The agent's end of the proxy control channel never trusts what the proxy sends: every line is
// checked field by field, and a line that is not a hello or a reply is reported and ignored, with
// the channel going on (a crash here would take the whole agent down).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { findCgroup2Mount } from '../abi/pins';
import { checkHello, ownCgroupId, parseProxyLine, ProxyControlClient, type ProxyHello, type ProxyReply } from '../abi/proxy-control';

const GARBAGE = [
  '',
  'null',
  '5',
  '"hello"',
  'true',
  '[]',
  '[1,2]',
  '{',
  '{}',
  '{"type":"hello"}',
  '{"type":"hello","cgroupId":12}',
  '{"type":"hello","cgroupId":"abc"}',
  '{"type":"hello","cgroupId":"-1"}',
  '{"type":"hello","cgroupId":"0"}',
  '{"type":"hello","cgroupId":"18446744073709551616"}',
  '{"type":"hello","cgroupId":"1e3"}',
  '{"type":"config","version":1}',
  '{"type":{"x":1}}',
  '{"ok":true}',
  '{"ok":true,"version":"1"}',
  '{"ok":true,"version":1.5}',
  '{"ok":true,"version":-1}',
  '{"ok":"yes","version":1}',
  '{"version":1}',
  '{"__proto__":{"ok":true},"version":1}',
];

test('parseProxyLine: hellos and replies with the right fields, a reason for everything else', () => {
  for (const g of GARBAGE) assert.equal(typeof parseProxyLine(g), 'string', g);
  assert.deepEqual(parseProxyLine('{"type":"hello","cgroupId":"18446744073709551615"}'), { type: 'hello', cgroupId: '18446744073709551615' });
  assert.deepEqual(parseProxyLine('{"ok":true,"version":3,"extra":1}'), { ok: true, version: 3 });
  assert.deepEqual(parseProxyLine('{"ok":false,"version":4,"error":"bad rbac"}'), { ok: false, version: 4, error: 'bad rbac' });
  assert.deepEqual(parseProxyLine('{"ok":false,"version":4,"error":7}'), { ok: false, version: 4, error: 'no reason given' });
});

test('ProxyControlClient: garbage from the proxy is reported and ignored; the next good line still counts', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sm-ctl-'));
  const sockPath = path.join(dir, 'proxy.sock');
  // A hostile "proxy": garbage (random bytes included) before a valid hello and reply.
  const random = Array.from({ length: 50 }, (_, i) => Buffer.from(Array.from({ length: 1 + (i * 7) % 40 }, (_, j) => (i * 31 + j * 17) % 256)).toString('latin1').replace(/\n/g, ' '));
  const server = net.createServer((s) => {
    s.write([...GARBAGE, ...random].join('\n') + '\n');
    s.write('{"type":"hello","cgroupId":"4242"}\n');
    s.on('data', (d) => {
      const v = JSON.parse(d.toString().split('\n')[0]).version;
      s.write(`{"ok":true,"version":${v}}\n`);
    });
  });
  await new Promise<void>((r) => server.listen(sockPath, r));
  const client = new ProxyControlClient(sockPath, 50);
  const invalid: string[] = [];
  client.on('invalid', (why) => invalid.push(why));
  client.on('error', () => undefined);
  try {
    const hello = new Promise<ProxyHello>((r) => client.once('hello', r));
    const reply = new Promise<ProxyReply>((r) => client.once('reply', r));
    const v = client.send({ l7: [], identities: [] });
    assert.deepEqual(await hello, { type: 'hello', cgroupId: '4242' });
    assert.deepEqual(await reply, { ok: true, version: v });
    assert.ok(invalid.length >= GARBAGE.length, `${invalid.length} lines reported`);
  } finally {
    client.close();
    server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("a hello is believed only for the cgroup of the process that listens on the socket (SO_PEERCRED)", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sm-ctl-'));
  const sockPath = path.join(dir, 'proxy.sock');
  const mount = findCgroup2Mount();
  const own = ownCgroupId(mount).toString();
  // Another process listens and says hello twice: once with its real cgroup, once with a forged one.
  const code = `require('net').createServer((s) => s.write('{"type":"hello","cgroupId":"${own}"}\\n{"type":"hello","cgroupId":"4242"}\\n')).listen(process.argv[1], () => console.log('up'))`;
  const child = spawn(process.execPath, ['-e', code, sockPath], { stdio: ['ignore', 'pipe', 'inherit'] });
  const client = new ProxyControlClient(sockPath, 50);
  client.on('error', () => undefined);
  try {
    await new Promise<void>((r) => child.stdout!.once('data', () => r()));
    const hellos: Array<[ProxyHello, number]> = [];
    await new Promise<void>((r) => client.on('hello', (h, pid) => hellos.push([h, pid]) === 2 && r()));
    // The pid is the listener's, not ours.
    assert.deepEqual(hellos.map(([, pid]) => pid), [child.pid, child.pid]);
    // The child runs in our cgroup (spawned from here), so the first hello holds and the forged one does not.
    assert.equal(checkHello(hellos[0][0], hellos[0][1], mount), null);
    assert.match(checkHello(hellos[1][0], hellos[1][1], mount)!, /names cgroup 4242, but the process behind the socket \(pid \d+\) runs in cgroup \d+/);
    assert.match(checkHello(hellos[0][0], 0, mount)!, /not visible from here/);
  } finally {
    client.close();
    child.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('serveControl: the socket exists with mode 0600 from the moment it is bound', async () => {
  const { serveControl } = await import('../abi/proxy-control');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sm-ctl-'));
  const sockPath = path.join(dir, 'proxy.sock');
  const before = process.umask();
  const server = serveControl(sockPath, () => null);
  try {
    // Synchronously after serveControl: no callback has run yet.
    assert.equal(fs.statSync(sockPath).mode & 0o777, 0o600);
    assert.equal(process.umask(), before, 'the umask is given back');
  } finally {
    server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('ProxyControlClient: a handover moves the session to the successor without a "down"; the old session ends as "retired"', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sm-ctl-'));
  const sockPath = path.join(dir, 'proxy.sock');
  const configs: string[] = [];
  const serve = (name: string, onSession: (s: net.Socket) => void) => {
    const server = net.createServer((s) => {
      s.write(`{"type":"hello","cgroupId":"${name === 'old' ? 11 : 22}"}\n`);
      s.on('data', (d) => {
        for (const l of d.toString().split('\n').filter(Boolean)) {
          configs.push(`${name}:${JSON.parse(l).version}`);
          s.write(`{"ok":true,"version":${JSON.parse(l).version}}\n`);
        }
      });
      onSession(s);
    });
    return new Promise<net.Server>((r) => server.listen(sockPath, () => r(server)));
  };
  let oldSession: net.Socket | undefined;
  const oldServer = await serve('old', (s) => (oldSession = s));
  let newServer: net.Server | undefined;
  const client = new ProxyControlClient(sockPath, 50);
  client.on('error', () => undefined);
  const events: string[] = [];
  client.on('down', () => events.push('down'));
  client.on('retired', (n) => events.push(`retired:${n}`));
  client.on('hello', (h, _pid, { replacing }) => events.push(`hello:${h.cgroupId}:${replacing}`));
  try {
    client.send({ l7: [], identities: [] });
    await new Promise<void>((r) => client.once('reply', () => r()));
    // The successor takes the path over (closing the old server unlinks it first, as libuv does;
    // its session stays open).
    oldServer.close();
    assert.equal(fs.existsSync(sockPath), false);
    newServer = await serve('new', () => undefined);
    oldSession!.write('{"type":"handover"}\n');
    await new Promise<void>((r) => client.on('reply', () => configs.includes('new:1') && r()));
    assert.equal(client.drainingCount, 1);
    // The latest config went to the successor; later ones go there only.
    client.send({ l7: [], identities: [[1, 'spiffe://x']] });
    await new Promise<void>((r) => client.on('reply', (m) => m.version === 2 && r()));
    oldSession!.end();
    await new Promise<void>((r) => client.once('retired', () => r()));
    assert.deepEqual(events, ['hello:11:false', 'hello:22:true', 'retired:0']);
    assert.deepEqual(configs, ['old:1', 'new:1', 'new:2']);
    assert.equal(client.drainingCount, 0);
  } finally {
    client.close();
    oldServer.close();
    newServer?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
