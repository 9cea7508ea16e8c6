// The per-node L7 proxy: accepts the connections the kernel steered to it, sniffs HTTP/1.1 vs
// h2c, asks the datapath where each connection was going and who opened it, applies the
// destination's policy to every request and forwards what is allowed to that destination.
import * as net from 'node:net';
import type { Registry } from 'prom-client';
import type { Evaluator } from '../types';
import { ConnState, ProxyCore } from './core';
import { ProxyError } from '../../core/errors';
import { H2Frontend } from './h2';
import { Http1Frontend } from './http1';
import { resolveConfig, type L7ProxyOptions } from './options';
import { resolveOrigin } from './origin';
import { sniffProtocol } from './sniff';

export interface ListenAddress {
  /**
   * A listening TCP socket that is already bound (and may already be listening: handed over by
   * the proxy this one replaces, abi/proxy-handover.ts); host, port and ipv6Only are then ignored.
   */
  fd?: number;
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 0 (any free port). */
  port?: number;
  ipv6Only?: boolean;
}

export interface L7Proxy {
  /** Starts accepting on one more address (may be called for IPv4 and IPv6). */
  listen(addr?: ListenAddress | number): Promise<{ host: string; port: number }>;
  /**
   * Stops accepting; HTTP/2 sessions get GOAWAY, idle HTTP/1.1 connections are closed, busy ones
   * after their response; after shutdownGraceMs whatever is left is destroyed. Upstream pools and
   * sessions are closed.
   */
  close(): Promise<void>;
  /**
   * Replaces the policy table: keys "ip:port", "[ipv6]:port" or ":port" (any IP). Applies to every
   * request that starts after the call, including on open connections; requests already decided
   * are not affected. Throws (ProxyError SM_PROXY_POLICY_KEY) on a bad key, keeping the old table.
   */
  setPolicies(map: ReadonlyMap<string, Evaluator>): void;
  /** The sockets accepting now, with their fds (to hand over to a successor). */
  listeners(): Array<{ host: string; port: number; fd: number }>;
  /** The proxy's own prom-client registry. */
  readonly registry: Registry;
  /** Prometheus text exposition of `registry`. */
  metrics(): Promise<string>;
  /** Downstream connections open now. */
  connectionCount(): number;
}

export function createL7Proxy(opts: L7ProxyOptions): L7Proxy {
  const cfg = resolveConfig(opts);
  const core = new ProxyCore(cfg, opts.policies);
  const h1 = new Http1Frontend(core);
  const h2 = new H2Frontend(core);
  const servers = new Set<net.Server>();
  let closed = false;

  const onConnection = (socket: net.Socket) => {
    if (closed) {
      socket.destroy();
      return;
    }
    // Every stage handles its own failures; this only keeps a late reset from being thrown.
    socket.on('error', () => {});
    const origin = resolveOrigin(cfg.lookupOrigin, socket, cfg.originLookupAttempts, cfg.originLookupRetryMs, cfg.originLookupTimeoutMs);
    const conn = new ConnState(socket, origin);
    core.conns.set(socket, conn);
    core.metrics.connectionsActive.inc();
    socket.once('close', () => {
      core.conns.delete(socket);
      core.metrics.connectionsActive.dec();
    });
    void origin.then((o) => {
      if (o.ok) return;
      const fields = { client: conn.client, reason: o.reason, err: o.error };
      if (o.reason === 'error') cfg.logger.error('connection origin lookup failed; refusing its requests', fields);
      else cfg.logger.warn('connection has no datapath origin; refusing its requests', fields);
    });
    void sniffProtocol(socket, cfg.timeouts.headersMs).then((protocol) => {
      if (!protocol || socket.destroyed || closed) {
        socket.destroy();
        return;
      }
      conn.protocol = protocol;
      if (protocol === 'h2') h2.accept(socket, conn);
      else h1.accept(socket);
    });
  };

  return {
    async listen(addr: ListenAddress | number = {}) {
      if (closed) throw new ProxyError('SM_PROXY_CLOSED', 'listen() after close()');
      const a = typeof addr === 'number' ? { port: addr } : addr;
      const server = net.createServer({ noDelay: true }, onConnection);
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        const where = a.fd !== undefined ? { fd: a.fd } : { host: a.host ?? '127.0.0.1', port: a.port ?? 0, ipv6Only: a.ipv6Only };
        server.listen(where, () => {
          server.off('error', reject);
          resolve();
        });
      });
      server.on('error', (err) => cfg.logger.error('listener error', { err }));
      servers.add(server);
      const info = server.address() as net.AddressInfo;
      cfg.logger.info('proxy listening', { host: info.address, port: info.port });
      return { host: info.address, port: info.port };
    },

    async close() {
      if (closed) return;
      closed = true;
      core.closing = true;
      const stopped = [...servers].map((s) => new Promise<void>((r) => s.close(() => r())));
      h2.closeSessions();
      for (const conn of core.conns.values()) {
        if (conn.protocol === 'h2') continue;
        if (!conn.h1.busy) conn.socket.destroy();
      }
      const deadline = Date.now() + cfg.timeouts.shutdownGraceMs;
      while (core.conns.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      for (const conn of core.conns.values()) conn.socket.destroy();
      h1.close();
      await core.upstreams.close();
      await Promise.all(stopped);
    },

    setPolicies(map) {
      core.setPolicies(map);
    },

    listeners() {
      return [...servers].map((s) => {
        const info = s.address() as net.AddressInfo;
        return { host: info.address, port: info.port, fd: (s as unknown as { _handle: { fd: number } })._handle.fd };
      });
    },

    registry: core.metrics.registry,

    metrics() {
      return core.metrics.registry.metrics();
    },

    connectionCount() {
      return core.conns.size;
    },
  };
}
