// The proxy's handover channel (abi/proxy-handover.ts) on its own: sockets really cross processes,
// and a successor that meets something other than a running proxy at the path gets a clear
// error or a fresh start, never a crash or a leaked descriptor.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import * as bpf from '../native';
import { takeOver } from '../abi/proxy-handover';

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'sm-handover-'));
const openFds = () => fs.readdirSync('/proc/self/fd').length;

test('takeOver: no socket file, or nobody listening on it, is a fresh start', () => {
  const dir = tmp();
  try {
    assert.equal(takeOver(path.join(dir, 'none.sock')), null);
    // A socket file left by a proxy that was killed.
    const stale = path.join(dir, 'stale.sock');
    const child = spawn(process.execPath, ['-e', `require('net').createServer().listen(process.argv[1], () => process.kill(process.pid, 'SIGKILL'))`, stale]);
    return new Promise<void>((resolve) =>
      child.once('exit', () => {
        assert.ok(fs.existsSync(stale));
        assert.equal(takeOver(stale), null);
        resolve();
      }),
    );
  } finally {
    setTimeout(() => fs.rmSync(dir, { recursive: true, force: true }), 500).unref();
  }
});

test('takeOver: garbage, silence or a short count of sockets is an error that names it, and nothing leaks', async () => {
  const dir = tmp();
  const cases: Array<[string, (s: net.Socket) => void, RegExp]> = [
    ['not json', (s) => s.write('hello there\n'), /header is not JSON/],
    ['scalar', (s) => s.write('5\n'), /not a listeners header/],
    ['bad port', (s) => s.write('{"type":"listeners","listeners":[{"host":"1.2.3.4","port":0}],"cgroupId":"1","configBytes":0}\n'), /without host and port/],
    ['huge config', (s) => s.write('{"type":"listeners","listeners":[],"cgroupId":"1","configBytes":1e12}\n'), /bad configBytes/],
    ['no sockets', (s) => s.write('{"type":"listeners","listeners":[{"host":"1.2.3.4","port":80}],"cgroupId":"1","configBytes":0}\n'), /1 listeners announced, 0 sockets received/],
    ['bad config', (s) => s.write('{"type":"listeners","listeners":[],"cgroupId":"1","configBytes":2}\n{}'), /not a config message/],
    ['closed', (s) => s.end('{"type":"lis'), /closed the handover connection/],
    ['silence', () => undefined, /sent nothing for 300 ms/],
  ];
  try {
    for (const [name, behave, want] of cases) {
      const p = path.join(dir, `${cases.findIndex((c) => c[0] === name)}.sock`);
      // In another process: takeOver blocks this one while it reads.
      const code = `const behave = ${behave.toString()}; require('net').createServer((s) => { s.on('error', () => {}); behave(s); }).listen(process.argv[1], () => console.log('up'))`;
      const child = spawn(process.execPath, ['-e', code, p], { stdio: ['ignore', 'pipe', 'inherit'] });
      await new Promise<void>((r) => child.stdout!.once('data', () => r()));
      const before = openFds();
      try {
        assert.throws(() => takeOver(p, 300), want, name);
        assert.equal(openFds(), before, `${name}: descriptors leaked`);
      } finally {
        child.kill('SIGKILL');
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('sendFds/recvFds: a listening TCP socket handed to another process accepts there after ours is closed', async () => {
  const dir = tmp();
  const p = path.join(dir, 'h.sock');
  const listener = net.createServer();
  await new Promise<void>((r) => listener.listen(0, '127.0.0.1', r));
  const port = (listener.address() as net.AddressInfo).port;
  const lfd = (listener as unknown as { _handle: { fd: number } })._handle.fd;
  const code = `
    const bpf = require(${JSON.stringify(path.resolve(__dirname, '../native'))});
    const net = require('net');
    const fd = bpf.unixConnect(process.argv[1], 5000);
    const got = bpf.recvFds(fd, 4096);
    const s = net.createServer((c) => c.end('from the successor ' + got.data.toString()));
    s.listen({ fd: got.fds[0] }, () => bpf.sendFds(fd, Buffer.from('ok\\n')));
  `;
  let handedOver!: () => void;
  const done = new Promise<void>((r) => (handedOver = r));
  const server = net.createServer((s) => {
    bpf.sendFds((s as unknown as { _handle: { fd: number } })._handle.fd, Buffer.from('hi'), [lfd]);
    s.once('data', () => {
      // Ours closed (the socket lives on in the successor): only the successor accepts now.
      listener.close();
      s.destroy();
      handedOver();
    });
  });
  await new Promise<void>((r) => server.listen(p, r));
  const child = spawn(process.execPath, ['-e', code, p], { stdio: ['ignore', 'inherit', 'inherit'] });
  try {
    await done;
    const replies = await Promise.all(
      [0, 1, 2].map(
        () =>
          new Promise<string>((resolve, reject) => {
            let b = '';
            net.connect(port, '127.0.0.1').on('data', (d) => (b += d)).on('end', () => resolve(b)).on('error', reject);
          }),
      ),
    );
    assert.deepEqual(replies, ['from the successor hi', 'from the successor hi', 'from the successor hi']);
  } finally {
    child.kill('SIGKILL');
    server.close();
    listener.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
