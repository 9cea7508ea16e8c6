// The proxy's HTTP/2 (h2c) front under hostile frames: hundreds of connections that send the
// preface and then malformed frames (wrong lengths, bad stream ids, frames on idle or closed
// streams, broken header blocks, bodies longer than their content-length, random bytes), from a
// seeded generator so that a failure can be replayed. Meanwhile a well-behaved client keeps making
// requests on one session. The proxy runs in this process: a stream or session error without a
// listener would crash the test itself. Every request of the good client must be judged (the
// policy's 403), none may fail, and a new session afterwards still works.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import { createL7Proxy } from '../proxy/server';
import type { Decision, Evaluator, RequestAttributes } from '../proxy/types';

const denyAll: Evaluator = {
  evaluate: (_r: RequestAttributes): Decision => ({ allow: false, policy: 'p', reason: 'stand-in', dryRun: [], unsupported: [], logged: [] }),
};

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
// HPACK, static table only: :method GET, :path /, :scheme http, :authority "a".
const HEADERS_OK = Buffer.from([0x82, 0x84, 0x86, 0x41, 0x01, 0x61]);
// :method POST, :path /, :scheme http, :authority "a", content-length: 3 (static index 28).
const HEADERS_POST_CL3 = Buffer.from([0x83, 0x84, 0x86, 0x41, 0x01, 0x61, 0x5c, 0x01, 0x33]);

function frame(type: number, flags: number, stream: number, payload: Buffer, declaredLength = payload.length): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(declaredLength & 0xffffff, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(stream >>> 0, 5);
  return Buffer.concat([h, payload]);
}

/** xorshift32: the same seed gives the same connection. */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 0x100000000;
  };
}

/** One hostile connection's bytes after the preface. */
function hostile(seed: number): Buffer {
  const r = rng(seed);
  const int = (n: number) => Math.floor(r() * n);
  const bytes = (n: number) => Buffer.from(Array.from({ length: n }, () => int(256)));
  const stream = () => [0, 1, 2, 3, 5, 0x7fffffff, 0xffffffff, 1 + 2 * int(50)][int(8)];
  const out: Buffer[] = [frame(4, 0, 0, Buffer.alloc(0))]; // an empty SETTINGS, as clients start
  const n = 1 + int(8);
  for (let i = 0; i < n; i++) {
    switch (int(12)) {
      case 0: // a frame whose declared length is not what follows
        out.push(frame(int(10), int(256), stream(), bytes(int(32)), int(0x10000)));
        break;
      case 1: // a frame larger than the default max frame size
        out.push(frame(0, 0, 1, bytes(16384 + 1 + int(1000))));
        break;
      case 2: // HEADERS with a header block of random bytes
        out.push(frame(1, 0x4 | (int(2) ? 0x1 : 0), stream(), bytes(1 + int(40))));
        break;
      case 3: // CONTINUATION without HEADERS before it, or HEADERS without END_HEADERS then something else
        if (int(2)) out.push(frame(9, 0x4, stream(), HEADERS_OK));
        else out.push(frame(1, 0, 1, HEADERS_OK), frame(0, 1, 1, bytes(4)));
        break;
      case 4: // a body longer or shorter than its content-length (3)
        out.push(frame(1, 0x4, 1 + 2 * int(20), HEADERS_POST_CL3), frame(0, 1, 1 + 2 * int(20), bytes([0, 1, 10][int(3)])));
        break;
      case 5: // SETTINGS: wrong length, ACK with payload, invalid values (enable_push 2, window too large, frame size too small)
        out.push(
          [
            frame(4, 0, 0, bytes(5)),
            frame(4, 1, 0, bytes(6)),
            frame(4, 0, 0, Buffer.from([0, 2, 0, 0, 0, 2])),
            frame(4, 0, 0, Buffer.from([0, 4, 0x80, 0, 0, 0])),
            frame(4, 0, 0, Buffer.from([0, 5, 0, 0, 0, 1])),
            frame(4, 0, 3, Buffer.alloc(0)),
          ][int(6)],
        );
        break;
      case 6: // WINDOW_UPDATE of 0, of the maximum twice (overflow), on an idle stream
        out.push(frame(8, 0, [0, 1, 7][int(3)], Buffer.from([0, 0, 0, 0])), frame(8, 0, 0, Buffer.from([0x7f, 0xff, 0xff, 0xff])), frame(8, 0, 0, Buffer.from([0x7f, 0xff, 0xff, 0xff])));
        break;
      case 7: // RST_STREAM / PRIORITY with wrong sizes or on stream 0, a stream depending on itself
        out.push([frame(3, 0, 0, bytes(4)), frame(3, 0, 1, bytes(3)), frame(2, 0, 1, Buffer.from([0, 0, 0, 1, 16])), frame(2, 0, 1, bytes(4))][int(4)]);
        break;
      case 8: // PING of the wrong size, GOAWAY with a bad stream id, PUSH_PROMISE from a client
        out.push([frame(6, 0, 0, bytes(7)), frame(6, 0, 1, bytes(8)), frame(7, 0, 1, bytes(8)), frame(5, 0x4, 1, bytes(8))][int(4)]);
        break;
      case 9: // DATA on stream 0 or an idle stream, padding longer than the frame
        out.push([frame(0, 0, 0, bytes(4)), frame(0, 0, 9, bytes(4)), frame(0, 0x8, 1, Buffer.from([200, 1, 2]))][int(3)]);
        break;
      case 10: // many streams opened and reset at once
        for (let s = 1; s < 200; s += 2) out.push(frame(1, 0x5, s, HEADERS_OK), frame(3, 0, s, Buffer.from([0, 0, 0, 8])));
        break;
      default: // random bytes
        out.push(bytes(1 + int(100)));
    }
  }
  return Buffer.concat(out);
}

function runHostile(port: number, seed: number): Promise<void> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    const done = () => {
      clearTimeout(timer);
      s.destroy();
      resolve();
    };
    const timer = setTimeout(done, 300);
    s.on('error', done);
    s.on('close', done);
    s.on('data', () => undefined);
    s.on('connect', () => s.write(Buffer.concat([PREFACE, hostile(seed)]), () => undefined));
  });
}

test('HTTP/2 front: 400 connections of malformed frames; a well-behaved session beside them is judged throughout', async () => {
  const proxy = createL7Proxy({
    lookupOrigin: () => ({ destinationIp: '127.0.0.1', destinationPort: 9 }),
    policies: new Map([[':9', denyAll]]),
    accessLog: () => undefined,
    timeouts: { headersMs: 300, keepAliveMs: 1000, requestBodyIdleMs: 300, shutdownGraceMs: 200 },
  });
  const { port } = await proxy.listen();
  const good = http2.connect(`http://127.0.0.1:${port}`);
  const goodErrors: string[] = [];
  good.on('error', (e) => goodErrors.push(e.message));
  const ask = (s: http2.ClientHttp2Session, p: string) =>
    new Promise<string>((resolve) => {
      const r = s.request({ ':path': p });
      r.on('response', (h) => resolve(String(h[':status'])));
      r.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
      r.on('close', () => resolve(`closed ${r.rstCode}`));
      r.resume();
      r.end();
    });
  let stop = false;
  const statuses = new Map<string, number>();
  const loop = (async () => {
    for (let i = 0; !stop; i++) {
      const st = await ask(good, `/judged/${i}`);
      statuses.set(st, (statuses.get(st) ?? 0) + 1);
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  try {
    const seeds = Array.from({ length: 400 }, (_, i) => 0x5eed + i);
    for (let i = 0; i < seeds.length; i += 25) await Promise.all(seeds.slice(i, i + 25).map((s) => runHostile(port, s)));
    stop = true;
    await loop;
    assert.deepEqual([...statuses.keys()], ['403'], `the good session got ${JSON.stringify([...statuses])}`);
    assert.ok(statuses.get('403')! > 10, `only ${statuses.get('403')} requests`);
    assert.deepEqual(goodErrors, []);
    const fresh = http2.connect(`http://127.0.0.1:${port}`);
    fresh.on('error', () => undefined);
    try {
      assert.equal(await ask(fresh, '/after'), '403');
    } finally {
      fresh.close();
    }
  } finally {
    stop = true;
    good.close();
    await proxy.close();
  }
});
