// `sockmesh agent --proxy-listen`: one address per family on one port (sm_config holds one proxy
// address of each family and one port); anything else is refused before anything is touched.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

const SOCKMESH = path.resolve(__dirname, '../../bin/sockmesh');

test('--proxy-listen: at most one IPv4 and one IPv6 address, one port, literal addresses; --peer-proxy and --probe-source literal too', () => {
  const run = (...args: string[]) =>
    spawnSync(SOCKMESH, ['agent', '--config', '/nonexistent/mesh.yaml', '--cgroup', '/nonexistent', '--admin', 'none', ...args], { encoding: 'utf8' });
  for (const [args, why] of [
    [['--proxy-listen', '198.18.0.1:15001', '--proxy-listen', '198.18.0.2:15001'], /at most one IPv4 and one IPv6 address/],
    [['--proxy-listen', '[fd00::1]:15001', '--proxy-listen', '[fd00::2]:15001'], /at most one IPv4 and one IPv6 address/],
    [['--proxy-listen', '198.18.0.1:15001', '--proxy-listen', '[fd00::1]:15002'], /both addresses must use the same port/],
    [['--proxy-listen', 'proxy.local:15001'], /expected IP:PORT or \[IPv6\]:PORT/],
    [['--proxy-listen', '198.18.0.1:0'], /expected IP:PORT/],
    [['--peer-proxy', 'node2'], /--peer-proxy node2: expected an IP address/],
    [['--probe-source', 'host'], /--probe-source host: expected an IP address/],
  ] as const) {
    const r = run(...args);
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, why, args.join(' '));
  }
});

