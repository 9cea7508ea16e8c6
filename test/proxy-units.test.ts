// The proxy server's pure parts, alone: protocol sniffing, policy keys, request targets and path
// normalisation, header filtering, origin lookup retries, gRPC status mapping, error classification.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as net from 'node:net';
import {
  H2_PREFACE,
  PolicyTable,
  peerIp,
  classifyPreface,
  classifyUpstreamError,
  encodeGrpcMessage,
  forwardHeaders,
  grpcStatusForHttp,
  headersForMatching,
  isGrpcContentType,
  normalizePath,
  parsePolicyKey,
  parseRequestTarget,
  resolveOrigin,
  sniffProtocol,
} from '../proxy/server';
import type { Decision, Evaluator } from '../proxy/types';

test('classifyPreface: the h2 preface byte for byte, anything else is HTTP/1.1 as soon as it differs', () => {
  assert.equal(classifyPreface(H2_PREFACE), 'h2');
  assert.equal(classifyPreface(Buffer.concat([H2_PREFACE, Buffer.from([0, 0, 0, 4])])), 'h2');
  assert.equal(classifyPreface(Buffer.from('')), 'undecided');
  assert.equal(classifyPreface(Buffer.from('PRI * HTTP/2.0\r\n')), 'undecided');
  assert.equal(classifyPreface(Buffer.from('P')), 'undecided');
  assert.equal(classifyPreface(Buffer.from('POST / HTTP/1.1')), 'http1');
  assert.equal(classifyPreface(Buffer.from('G')), 'http1');
  assert.equal(classifyPreface(Buffer.from('PRI * HTTP/1.1\r\n')), 'http1');
});

test('sniffProtocol puts every byte it read back, in order, across several segments', async () => {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const client = net.connect(port, '127.0.0.1');
  client.setNoDelay(true);
  const s = await accepted;
  const verdict = sniffProtocol(s, 5000);
  const preface = H2_PREFACE.toString('latin1');
  client.write(preface.slice(0, 5));
  await new Promise((r) => setTimeout(r, 30));
  client.write(preface.slice(5) + 'rest');
  assert.equal(await verdict, 'h2');
  const got = await new Promise<string>((resolve) => {
    let t = '';
    s.on('data', (d: Buffer) => {
      t += d.toString('latin1');
      if (t.length >= preface.length + 4) resolve(t);
    });
    s.resume();
  });
  assert.equal(got, preface + 'rest');
  client.destroy();
  s.destroy();
  await new Promise((r) => server.close(r));
});

test('policy keys: ip:port, [v6]:port, bare v6 with port, :port; exact beats port-only; bad keys refuse the whole table', () => {
  assert.deepEqual(parsePolicyKey('10.0.0.1:80'), { ip: '10.0.0.1', port: 80 });
  assert.deepEqual(parsePolicyKey('[FD00:0::1]:8080'), { ip: 'fd00::1', port: 8080 });
  assert.deepEqual(parsePolicyKey('fd00::1:8080'), { ip: 'fd00::1', port: 8080 });
  assert.deepEqual(parsePolicyKey(':9090'), { port: 9090 });
  assert.deepEqual(parsePolicyKey('::ffff:10.0.0.1:80'), { ip: '10.0.0.1', port: 80 });
  for (const bad of ['10.0.0.1', '10.0.0.1:0', '10.0.0.1:65536', 'host:80', ':x', '']) {
    assert.throws(() => parsePolicyKey(bad), { code: 'SM_PROXY_POLICY_KEY' }, bad);
  }
  const ev = (name: string): Evaluator => ({ evaluate: (): Decision => ({ allow: true, reason: name, dryRun: [], unsupported: [], logged: [] }) });
  const t = new PolicyTable(
    new Map([
      ['10.0.0.1:80', ev('exact')],
      [':80', ev('port')],
      ['[fd00::1]:80', ev('v6')],
    ]),
  );
  assert.equal(t.lookup('10.0.0.1', 80)?.key, '10.0.0.1:80');
  assert.equal(t.lookup('10.0.0.2', 80)?.key, ':80');
  assert.equal(t.lookup('fd00::1', 80)?.key, '[fd00::1]:80');
  assert.equal(t.lookup('10.0.0.1', 81), undefined);
  assert.throws(() => new PolicyTable(new Map([['1.2.3.4:1', ev('a')], ['nope', ev('b')]])), { code: 'SM_PROXY_POLICY_KEY' });
});

test('peerIp: IPv4-mapped to IPv4, IPv6 lower-case and compressed', () => {
  assert.equal(peerIp('::ffff:127.0.0.1'), '127.0.0.1');
  assert.equal(peerIp('::FFFF:7f00:1'), '127.0.0.1');
  assert.equal(peerIp('FD00:0:0::0001'), 'fd00::1');
  assert.equal(peerIp('10.1.2.3'), '10.1.2.3');
});

test('normalizePath: dot segments, percent-encoded unreserved characters, encoded slashes kept', () => {
  const cases: [string, string][] = [
    ['/a/b/../c', '/a/c'],
    ['/a/./b', '/a/b'],
    ['/a/b/..', '/a/'],
    ['/a/.', '/a/'],
    ['/..', '/'],
    ['/../../x', '/x'],
    ['/%2e%2E/admin', '/admin'],
    ['/%61dmin', '/admin'],
    ['/a%2fb', '/a%2Fb'],
    ['/a%2F..%2Fb', '/a%2F..%2Fb'],
    ['/caf%c3%a9', '/caf%C3%A9'],
    ['//a//b', '//a//b'],
    ['/a\\..\\b', '/a\\..\\b'],
  ];
  for (const [input, want] of cases) assert.equal(normalizePath(input, false), want, input);
  assert.equal(normalizePath('//a//b/', true), '/a/b/');
  assert.equal(normalizePath('/a%zz', false), undefined);
  assert.equal(normalizePath('/a%2', false), undefined);
});

test('parseRequestTarget: origin-form, absolute-form (authority replaces Host), asterisk-form, refusals', () => {
  const o = { normalize: true, mergeSlashes: false, allowAbsolute: true };
  assert.deepEqual(parseRequestTarget('GET', '/a/../b?x=/../y', o), { ok: true, path: '/b?x=/../y' });
  assert.deepEqual(parseRequestTarget('GET', 'http://evil.example:8080/p?q', o), { ok: true, path: '/p?q', authority: 'evil.example:8080' });
  assert.deepEqual(parseRequestTarget('GET', 'HTTP://h', o), { ok: true, path: '/', authority: 'h' });
  assert.deepEqual(parseRequestTarget('GET', 'http://h?q=1', o), { ok: true, path: '/?q=1', authority: 'h' });
  assert.deepEqual(parseRequestTarget('GET', 'http://[fd00::1]:80/', o), { ok: true, path: '/', authority: '[fd00::1]:80' });
  assert.deepEqual(parseRequestTarget('OPTIONS', '*', o), { ok: true, path: '*' });
  for (const [m, t] of [
    ['GET', '*'],
    ['GET', 'https://h/'],
    ['GET', 'http://user@h/'],
    ['GET', 'http:///x'],
    ['GET', '/a#frag'],
    ['GET', 'relative/path'],
  ]) {
    assert.equal(parseRequestTarget(m, t, o).ok, false, t);
  }
  assert.equal(parseRequestTarget('GET', 'http://h/', { ...o, allowAbsolute: false }).ok, false);
});

test('forwardHeaders drops hop-by-hop fields and those named by Connection (but not Host); te: trailers only when asked', () => {
  const raw = [
    'Host', 'a',
    'Connection', 'keep-alive, X-Secret, host',
    'Keep-Alive', 'timeout=5',
    'X-Secret', 'drop me',
    'TE', 'trailers',
    'Transfer-Encoding', 'chunked',
    'Upgrade', 'h2c',
    'HTTP2-Settings', 'AAA',
    'Proxy-Connection', 'keep-alive',
    'X-Keep', '1',
    'x-keep', '2',
    ':path', '/',
  ];
  assert.deepEqual(forwardHeaders(raw), ['Host', 'a', 'X-Keep', '1', 'x-keep', '2']);
  assert.deepEqual(forwardHeaders(raw, { keepTeTrailers: true, drop: new Set(['host']) }), ['TE', 'trailers', 'X-Keep', '1', 'x-keep', '2']);
  assert.deepEqual(forwardHeaders(['TE', 'gzip'], { keepTeTrailers: true }), []);
  assert.deepEqual(forwardHeaders(['Connection', 'Upgrade', 'Upgrade', 'websocket', 'X', 'y'], { keepUpgrade: true }), ['Connection', 'Upgrade', 'Upgrade', 'websocket', 'X', 'y']);
});

test('headersForMatching: lower-case names, repeats joined with ",", cookies with "; "', () => {
  const m = headersForMatching(['X-A', '1', 'x-a', '2', 'Cookie', 'a=1', 'cookie', 'b=2', 'X-Empty', '']);
  assert.equal(m['x-a'], '1,2');
  assert.equal(m.cookie, 'a=1; b=2');
  assert.equal(m['x-empty'], '');
  assert.equal(Object.getPrototypeOf(m), null, 'no inherited keys like "constructor"');
});

test('isGrpcContentType', () => {
  for (const ct of ['application/grpc', 'application/grpc+proto', 'application/grpc; charset=utf-8', 'application/grpc-web', 'application/grpc-web-text+proto', 'Application/GRPC']) {
    assert.equal(isGrpcContentType(ct), true, ct);
  }
  for (const ct of [undefined, 'application/json', 'application/grpcx', 'text/grpc']) assert.equal(isGrpcContentType(ct), false, String(ct));
});

test('gRPC statuses and messages for local replies', () => {
  assert.equal(grpcStatusForHttp(403), 7);
  assert.equal(grpcStatusForHttp(503), 14);
  assert.equal(grpcStatusForHttp(504), 14);
  assert.equal(grpcStatusForHttp(400), 13);
  assert.equal(grpcStatusForHttp(418), 2);
  assert.equal(encodeGrpcMessage('RBAC: access denied'), 'RBAC: access denied');
  assert.equal(encodeGrpcMessage('100% \n é'), '100%25 %0A %C3%A9');
});

test('classifyUpstreamError: reason, status and message', () => {
  const e = (code: string, extra: object = {}) => Object.assign(new Error(code), { code }, extra);
  assert.deepEqual(classifyUpstreamError(e('ECONNREFUSED')), { reason: 'connect_refused', status: 503, message: 'upstream connect error: ECONNREFUSED', code: 'ECONNREFUSED' });
  assert.equal(classifyUpstreamError(e('UND_ERR_CONNECT_TIMEOUT')).reason, 'connect_timeout');
  assert.equal(classifyUpstreamError(e('UND_ERR_HEADERS_TIMEOUT')).status, 504);
  assert.equal(classifyUpstreamError(e('SM_PROXY_IDLE_TIMEOUT')).status, 504);
  assert.equal(classifyUpstreamError(e('UND_ERR_SOCKET')).reason, 'reset');
  assert.equal(classifyUpstreamError(e('HPE_INVALID_CONSTANT')).status, 502);
  assert.equal(classifyUpstreamError(e('EHOSTUNREACH')).message, 'upstream connect error: EHOSTUNREACH');
  // A stream cancelled because its session could not connect reports the session's error.
  assert.equal(classifyUpstreamError(e('ERR_HTTP2_STREAM_CANCEL', { cause: e('ECONNREFUSED') })).reason, 'connect_refused');
  assert.equal(classifyUpstreamError(new Error('x')).reason, 'other');
});

test('resolveOrigin: retries while the datapath has no record, refuses lookups that fail or point at the proxy itself', async () => {
  const sock = { destroyed: false, localAddress: '::ffff:127.0.0.1', localPort: 15001 } as unknown as net.Socket;
  let calls = 0;
  const late = await resolveOrigin(() => (++calls < 3 ? undefined : { destinationIp: '::ffff:10.0.0.9', destinationPort: 80, principal: 'spiffe://x' }), sock, 3, 1);
  assert.equal(calls, 3);
  assert.deepEqual(late, { ok: true, origin: { destinationIp: '10.0.0.9', destinationPort: 80, principal: 'spiffe://x' }, destination: '10.0.0.9:80' });
  calls = 0;
  assert.deepEqual(await resolveOrigin(() => (calls++, undefined), sock, 3, 1), { ok: false, reason: 'unknown' });
  assert.equal(calls, 3);
  const asyncOk = await resolveOrigin(async () => ({ destinationIp: 'fd00::0:5', destinationPort: 443 }), sock, 1, 1);
  assert.equal(asyncOk.ok && asyncOk.destination, '[fd00::5]:443');
  const thrown = await resolveOrigin(() => {
    throw new Error('map gone');
  }, sock, 3, 1);
  assert.equal(thrown.ok, false);
  assert.equal(!thrown.ok && thrown.reason, 'error');
  assert.deepEqual(await resolveOrigin(() => ({ destinationIp: '127.0.0.1', destinationPort: 15001 }), sock, 1, 1), { ok: false, reason: 'loop' });
  const invalid = await resolveOrigin(() => ({ destinationIp: 'nope', destinationPort: 80 }), sock, 1, 1);
  assert.equal(!invalid.ok && invalid.reason, 'error');
  const hung = await resolveOrigin(() => new Promise(() => {}), sock, 3, 1, 50);
  assert.equal(!hung.ok && hung.reason, 'error');
});
