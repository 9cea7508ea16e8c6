// Which protocol an accepted connection speaks, from its first bytes: HTTP/2 with prior knowledge
// starts with the fixed client preface (RFC 9113 §3.4); anything else is handed to the HTTP/1.1
// parser, which rejects what is not HTTP.
import type * as net from 'node:net';

export const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

export type Sniffed = 'h2' | 'http1';

/** 'undecided' while every byte seen so far is a prefix of the preface. */
export function classifyPreface(head: Uint8Array): Sniffed | 'undecided' {
  const n = Math.min(head.length, H2_PREFACE.length);
  for (let i = 0; i < n; i++) if (head[i] !== H2_PREFACE[i]) return 'http1';
  return head.length >= H2_PREFACE.length ? 'h2' : 'undecided';
}

/**
 * Reads until the protocol is known, then pauses the socket and puts every byte read back
 * (`unshift`), so the server it is handed to sees the connection from its first byte. Resolves
 * `undefined` if the peer closes, errors or stays undecided for `timeoutMs` (the caller closes it).
 *
 * The HTTP/1.1 server must be handed the socket with `emit('connection')` followed by `resume()`
 * (it reads the handle directly and would otherwise never see the unshifted bytes); the HTTP/2
 * server drains `socket.read()` by itself on the next tick and must not be resumed.
 */
export function sniffProtocol(socket: net.Socket, timeoutMs: number): Promise<Sniffed | undefined> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let length = 0;
    let settled = false;
    const finish = (result: Sniffed | undefined) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.removeListener('data', onData);
      socket.removeListener('end', onGone);
      socket.removeListener('close', onGone);
      socket.removeListener('error', onGone);
      if (result) {
        socket.pause();
        socket.unshift(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, length));
      }
      resolve(result);
    };
    const onData = (d: Buffer) => {
      chunks.push(d);
      length += d.length;
      const verdict = classifyPreface(chunks.length === 1 ? d : Buffer.concat(chunks, length));
      if (verdict !== 'undecided') finish(verdict);
    };
    const onGone = () => finish(undefined);
    const timer = setTimeout(onGone, timeoutMs);
    socket.on('data', onData);
    socket.once('end', onGone);
    socket.once('close', onGone);
    socket.once('error', onGone);
  });
}
