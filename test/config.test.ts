// Tests for the local config source (config/): parsing, validation and file watching.

import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Model } from '../core/model';
import { fixtureDir } from './fixture-dir';
import {
  ConfigError,
  ConfigFileSource,
  canonicalIp,
  loadConfigFile,
  parseConfigText,
  parseIp,
  type ConfigIssue,
  type LoadedConfig,
} from '../config';

// ---- helpers ------------------------------------------------------------------------------------

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'sockmesh-config-test-'));
after(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));
let tmpSeq = 0;

function tmpDir(): string {
  const d = path.join(tmpRoot, `d${tmpSeq++}`);
  fs.mkdirSync(d);
  return d;
}

function writeTmp(text: string, name = 'mesh.yaml'): string {
  const f = path.join(tmpDir(), name);
  fs.writeFileSync(f, text);
  return f;
}

/** Locates test/fixtures/config whether run from the source tree or a compiled outDir. */
const fixturesDir = (): string => fixtureDir('config');
const FIX = fixturesDir();

/** Loads YAML text from a temp file and returns the ConfigError it must throw. */
function errorsOf(text: string): { file: string; err: ConfigError } {
  const file = writeTmp(text);
  try {
    loadConfigFile(file);
  } catch (e) {
    assert.ok(e instanceof ConfigError, `expected ConfigError, got ${String(e)}`);
    return { file, err: e };
  }
  assert.fail('expected a ConfigError');
}

interface Expect {
  path: string;
  line?: number;
  col?: number;
  reason: RegExp;
}

function findIssue(err: ConfigError, x: Expect): ConfigIssue {
  const hit = err.errors.find((i) => i.path === x.path && x.reason.test(i.reason));
  assert.ok(hit, `no issue at ${x.path} matching ${x.reason}; got:\n${err.message}`);
  if (x.line !== undefined) assert.equal(hit.line, x.line, `line of ${x.path}: ${err.message}`);
  if (x.col !== undefined) assert.equal(hit.col, x.col, `col of ${x.path}: ${err.message}`);
  return hit;
}

/** Asserts the text is rejected with (at least) the expected issues, and returns the error. */
function expectInvalid(text: string, ...expected: Expect[]): ConfigError {
  const { file, err } = errorsOf(text);
  assert.equal(err.code, 'SM_CONFIG_INVALID');
  for (const e of err.errors) assert.equal(e.file, file);
  for (const x of expected) findIssue(err, x);
  return err;
}

const SVC = `services:
  - name: echo
    vips: [198.19.0.10]
    ports:
      - { name: tcp, port: 80, targetPort: 8080 }
      - { name: dns, port: 53, protocol: UDP }
`;

// ---- valid input --------------------------------------------------------------------------------

const FULL_EXAMPLE = `# sockmesh local config
node: node1
services:
  - name: echo
    namespace: default
    vips: [198.19.0.10, "fd53:6f63:6b01::10"]
    ports:
      - { name: tcp, port: 80, protocol: TCP, targetPort: 8080 }
      - { name: dns, port: 53, protocol: UDP }
endpoints:
  - service: default/echo
    address: 198.18.1.11
    port: 8080
    servicePort: tcp
    weight: 3
    healthy: true
    node: node1
  - service: default/echo
    address: 198.18.1.12
workloads:
  - { name: pod-a, namespace: default, serviceAccount: client, ips: [198.18.1.10], node: node1 }
  - { name: pod-b, ips: [198.18.1.20] }
`;

const FULL_EXPECTED: LoadedConfig = {
  nodeName: 'node1',
  model: {
    services: [
      {
        namespace: 'default',
        name: 'echo',
        vips: ['198.19.0.10', 'fd53:6f63:6b01::10'],
        ports: [
          { name: 'tcp', port: 80, protocol: 'TCP', targetPort: 8080 },
          { name: 'dns', port: 53, protocol: 'UDP', targetPort: 53 },
        ],
      },
    ],
    endpoints: [
      { service: 'default/echo', address: '198.18.1.11', servicePort: 'tcp', port: 8080, weight: 3, healthy: true, node: 'node1' },
      { service: 'default/echo', address: '198.18.1.12', weight: 1, healthy: true },
    ],
    workloads: [
      { namespace: 'default', name: 'pod-a', serviceAccount: 'client', ips: ['198.18.1.10'], node: 'node1' },
      { namespace: 'default', name: 'pod-b', serviceAccount: 'default', ips: ['198.18.1.20'] },
    ],
  },
};

const FIXTURE_EXPECTED: Model = {
  services: [
    {
      namespace: 'default',
      name: 'echo',
      vips: ['198.19.0.10', 'fd53:6f63:6b01::10'],
      ports: [
        { name: 'tcp', port: 80, protocol: 'TCP', targetPort: 8080 },
        { name: 'dns', port: 53, protocol: 'UDP', targetPort: 53 },
      ],
    },
    { namespace: 'shop', name: 'web', vips: ['fd53:6f63:6b01::20'], ports: [{ port: 443, protocol: 'TCP', targetPort: 443 }] },
  ],
  endpoints: [
    { service: 'default/echo', address: '198.18.1.11', servicePort: 'tcp', port: 8080, weight: 3, healthy: true, node: 'node1' },
    { service: 'default/echo', address: '198.18.2.11', servicePort: 53, weight: 1, healthy: false },
    { service: 'shop/web', address: 'fd53:6f63:6b01:1::b', weight: 1, healthy: true },
  ],
  workloads: [
    { namespace: 'default', name: 'pod-a', serviceAccount: 'client', ips: ['198.18.1.10'], node: 'node1' },
    { namespace: 'shop', name: 'web-0', serviceAccount: 'default', ips: ['fd53:6f63:6b01:1::b'] },
  ],
};

describe('config: valid files', () => {
  test('the documented example loads to the exact normalised model', () => {
    const cfg = loadConfigFile(writeTmp(FULL_EXAMPLE));
    assert.deepStrictEqual(cfg, FULL_EXPECTED);
  });

  test('checked-in YAML and JSON fixtures load to the same normalised model', () => {
    const y = loadConfigFile(path.join(FIX, 'valid.yaml'));
    const j = loadConfigFile(path.join(FIX, 'valid.json'));
    assert.deepStrictEqual(y, { nodeName: 'node1', model: FIXTURE_EXPECTED });
    assert.deepStrictEqual(j, y);
    // Deterministic: same bytes of JSON for equal input.
    assert.equal(JSON.stringify(j), JSON.stringify(y));
  });

  test('empty, comment-only and null-section files are an empty model', () => {
    for (const text of ['', '# nothing here\n', '---\n', 'services:\nendpoints:\nworkloads:\n', 'services: []\n']) {
      assert.deepStrictEqual(parseConfigText(text, 'x.yaml'), { model: { services: [], endpoints: [], workloads: [] } }, JSON.stringify(text));
    }
  });

  test('protocol is case-insensitive and normalised; targetPort defaults to port', () => {
    const cfg = parseConfigText('services:\n  - { name: a, vips: [10.0.0.1], ports: [{ port: 53, protocol: uDp }] }\n');
    assert.deepStrictEqual(cfg.model.services[0].ports, [{ port: 53, protocol: 'UDP', targetPort: 53 }]);
    assert.equal(cfg.nodeName, undefined);
    assert.ok(!('nodeName' in cfg));
  });

  test('YAML anchors/aliases are followed', () => {
    const cfg = parseConfigText(
      'services:\n  - name: a\n    vips: [10.0.0.1]\n    ports: &p [{ port: 80 }]\n  - name: b\n    vips: [10.0.0.2]\n    ports: *p\n',
    );
    assert.deepStrictEqual(cfg.model.services[1].ports, [{ port: 80, protocol: 'TCP', targetPort: 80 }]);
  });

  test('an endpoint may serve both families of a dual-stack service; same address on different backend ports is fine', () => {
    const cfg = parseConfigText(`services:
  - { name: a, vips: [10.0.0.1, "fd00::1"], ports: [{ port: 80 }] }
endpoints:
  - { service: default/a, address: 10.1.0.1, port: 8080 }
  - { service: default/a, address: 10.1.0.1, port: 8081 }
  - { service: default/a, address: "fd00:1::1" }
`);
    assert.equal(cfg.model.endpoints.length, 3);
  });
});

// ---- IP helper ----------------------------------------------------------------------------------

describe('config: IP addresses', () => {
  test('canonicalises IPv6 and accepts plain unicast addresses', () => {
    assert.equal(canonicalIp('FD53:6F63:6B01:0:0:0:0:10'), 'fd53:6f63:6b01::10');
    assert.equal(canonicalIp('2001:db8:0:0:1:0:0:1'), '2001:db8::1:0:0:1');
    assert.equal(canonicalIp('10.0.0.1'), '10.0.0.1');
    assert.deepStrictEqual(parseIp('fd00::1'), { ok: true, address: 'fd00::1', family: 6 });
  });

  test('an IPv4-mapped IPv6 address is its IPv4 address', () => {
    assert.deepStrictEqual(parseIp('::ffff:10.0.0.1'), { ok: true, address: '10.0.0.1', family: 4 });
    assert.deepStrictEqual(parseIp('::FFFF:a00:1'), { ok: true, address: '10.0.0.1', family: 4 });
    assert.equal(canonicalIp('::ffff:10.0.0.1'), '10.0.0.1');
  });

  test('rejects invalid, unspecified, multicast, broadcast, CIDR and zoned addresses', () => {
    const cases: Array<[string, RegExp]> = [
      ['10.0.0', /not a valid/],
      ['010.0.0.1', /not a valid/],
      ['hello', /not a valid/],
      ['0.0.0.0', /unspecified/],
      ['::', /unspecified/],
      ['224.0.0.1', /multicast/],
      // The same in every pod: as an identity or a sockhash key they would mix pods up.
      ['127.0.0.1', /loopback/],
      ['::1', /loopback/],
      ['169.254.1.1', /link-local/],
      ['fe80::1', /link-local/],
      ['ff02::1', /multicast/],
      ['255.255.255.255', /broadcast/],
      // IPv4-mapped IPv6 is the IPv4 address (core/ip.ts), and judged as one.
      ['::ffff:127.0.0.1', /127\.0\.0\.1 is a loopback/],
      ['::ffff:0.0.0.0', /unspecified/],
      ['10.0.0.0/8', /CIDR/],
      ['fe80::1%eth0', /zone/],
    ];
    for (const [a, re] of cases) {
      const r = parseIp(a);
      assert.equal(r.ok, false, a);
      if (!r.ok) assert.match(r.reason, re, a);
    }
  });
});

// ---- invalid input ------------------------------------------------------------------------------

describe('config: validation errors', () => {
  test('YAML syntax errors carry a position', () => {
    const err = expectInvalid('services:\n  - name: echo\n    vips: [1.2.3.4\n    ports: []\n', { path: '(yaml)', reason: /Flow sequence/ });
    assert.ok(err.errors[0].line !== undefined && err.errors[0].line >= 3);
    const dup = expectInvalid('node: a\nnode: b\n', { path: '(yaml)', line: 2, col: 1, reason: /unique.*"node"/ });
    assert.match(dup.message, /^.*mesh\.yaml:2:1: \(yaml\): Map keys must be unique/);
    expectInvalid('services:\n\t- x\n', { path: '(yaml)', line: 2, reason: /[Tt]ab/ });
  });

  test('syntax-error fixture', () => {
    const f = path.join(FIX, 'syntax-error.yaml');
    assert.throws(
      () => loadConfigFile(f),
      (e: unknown) => e instanceof ConfigError && e.errors.length >= 1 && e.errors[0].path === '(yaml)' && e.errors[0].file === f && e.errors[0].line !== undefined,
    );
  });

  test('unknown keys (typos) at top level and per item, with suggestions', () => {
    expectInvalid(
      `servics: []
${SVC.replace('vips:', 'vip:').replace('targetPort', 'targetport')}endpoints:
  - { service: default/echo, adress: 198.18.1.1 }
workloads:
  - { name: a, ips: [10.9.0.1], serviceaccount: x }
`,
      { path: 'servics', line: 1, col: 1, reason: /unknown key "servics".*did you mean "services"/ },
      { path: 'services[0].vip', line: 4, col: 5, reason: /unknown key "vip".*did you mean "vips"/ },
      { path: 'services[0].vips', line: 3, reason: /required/ },
      { path: 'services[0].ports[0].targetport', reason: /did you mean "targetPort"/ },
      { path: 'endpoints[0].adress', line: 9, reason: /did you mean "address"/ },
      { path: 'endpoints[0].address', line: 9, reason: /required/ },
      { path: 'workloads[0].serviceaccount', line: 11, reason: /did you mean "serviceAccount"/ },
    );
  });

  test('wrong types', () => {
    expectInvalid(
      `node: 5
services:
  - name: echo
    vips: 198.19.0.10
    ports:
      - { port: "80" }
      - { port: 81.5 }
      - { port: 82, targetPort: http }
      - 83
  - name: x
    vips: [42]
    ports: { port: 80 }
endpoints:
  - { service: default/echo, address: 10.0.0.1, healthy: yes, weight: 1.5, servicePort: [1] }
workloads: {}
`,
      { path: 'node', line: 1, col: 7, reason: /expected a string, got a number/ },
      { path: 'services[0].vips', line: 4, col: 11, reason: /expected a list, got a string/ },
      { path: 'services[0].ports[0].port', line: 6, col: 17, reason: /expected an integer, got a string \("80"\)/ },
      { path: 'services[0].ports[1].port', line: 7, reason: /expected an integer, got 81\.5/ },
      { path: 'services[0].ports[2].targetPort', line: 8, reason: /named target ports are not supported/ },
      { path: 'services[0].ports[3]', line: 9, reason: /expected a mapping/ },
      { path: 'services[1].vips[0]', line: 11, reason: /expected a string, got a number/ },
      { path: 'services[1].ports', line: 12, reason: /expected a list, got a mapping/ },
      { path: 'endpoints[0].healthy', line: 14, reason: /expected true or false, got a string \("yes"\)/ },
      { path: 'endpoints[0].weight', line: 14, reason: /expected an integer, got 1\.5/ },
      { path: 'endpoints[0].servicePort', line: 14, reason: /port number or port name/ },
      { path: 'workloads', line: 15, reason: /expected a list/ },
    );
    expectInvalid('- a\n- b\n', { path: '(root)', line: 1, col: 1, reason: /expected a mapping/ });
  });

  test('names must be DNS-1123 labels', () => {
    expectInvalid(
      `services:
  - { name: Echo, namespace: my_ns, vips: [10.0.0.1], ports: [{ name: TCP-port, port: 80 }] }
  - { vips: [10.0.0.2], ports: [{ port: 80 }] }
workloads:
  - { name: -bad, namespace: default, ips: [10.1.0.1], serviceAccount: "Not OK" }
`,
      { path: 'services[0].name', line: 2, col: 13, reason: /invalid name "Echo".*DNS-1123 label/ },
      { path: 'services[0].namespace', line: 2, reason: /invalid namespace "my_ns"/ },
      { path: 'services[0].ports[0].name', line: 2, reason: /invalid name "TCP-port"/ },
      { path: 'services[1].name', line: 3, col: 5, reason: /name is required/ },
      { path: 'workloads[0].name', line: 5, reason: /invalid name "-bad"/ },
      { path: 'workloads[0].serviceAccount', line: 5, reason: /invalid serviceAccount "Not OK"/ },
    );
    const long = 'a'.repeat(64);
    expectInvalid(`services:\n  - { name: ${long}, vips: [10.0.0.1], ports: [{ port: 80 }] }\n`, { path: 'services[0].name', line: 2, reason: /at most 63/ });
  });

  test('VIPs, addresses and workload IPs must be valid unicast addresses; IPv6 compared canonically', () => {
    expectInvalid(
      `services:
  - name: a
    vips:
      - 10.0.0.300
      - 0.0.0.0
      - "::"
      - 239.1.1.1
      - "::ffff:10.0.0.300"
      - "fd00::1"
      - "FD00:0:0::1"
      - 10.0.0.1
      - "::ffff:10.0.0.1"
    ports: [{ port: 80 }]
endpoints:
  - { service: default/a, address: "ff02::2" }
workloads:
  - { name: w, ips: [not-an-ip] }
`,
      { path: 'services[0].vips[0]', line: 4, col: 9, reason: /not a valid IPv4 or IPv6 address/ },
      { path: 'services[0].vips[1]', line: 5, reason: /unspecified/ },
      { path: 'services[0].vips[2]', line: 6, reason: /unspecified/ },
      { path: 'services[0].vips[3]', line: 7, reason: /multicast/ },
      { path: 'services[0].vips[4]', line: 8, reason: /not a valid/ },
      { path: 'services[0].vips[6]', line: 10, reason: /duplicate VIP fd00::1 \(also vips\[5\]\)/ },
      // The mapped form is the IPv4 address: the same VIP twice.
      { path: 'services[0].vips[8]', line: 12, reason: /duplicate VIP 10\.0\.0\.1 \(also vips\[7\]\)/ },
      { path: 'endpoints[0].address', line: 15, reason: /multicast/ },
      { path: 'workloads[0].ips[0]', line: 17, reason: /not a valid/ },
    );
  });

  test('ports: range, protocol, duplicates within a service, empty lists', () => {
    expectInvalid(
      `services:
  - name: a
    vips: [10.0.0.1]
    ports:
      - { name: p0, port: 0 }
      - { name: p1, port: 65536, targetPort: 0 }
      - { name: p2, port: 80, protocol: SCTP }
      - { name: web, port: 81 }
      - { name: web2, port: 81, protocol: tcp }
      - { name: web3, port: 81, protocol: UDP }
      - { name: web, port: 82 }
  - { name: b, vips: [], ports: [] }
`,
      { path: 'services[0].ports[0].port', line: 5, col: 27, reason: /0 is out of range \(1\.\.65535\)/ },
      { path: 'services[0].ports[1].port', line: 6, reason: /65536 is out of range/ },
      { path: 'services[0].ports[1].targetPort', line: 6, reason: /0 is out of range/ },
      { path: 'services[0].ports[2].protocol', line: 7, reason: /unsupported protocol "SCTP": must be TCP or UDP/ },
      { path: 'services[0].ports[4].port', line: 9, reason: /duplicate port 81\/TCP \(also ports\[3\]\)/ },
      { path: 'services[0].ports[6].name', line: 11, reason: /duplicate port name "web" \(also ports\[3\]\)/ },
      { path: 'services[1].vips', line: 12, reason: /at least one VIP/ },
      { path: 'services[1].ports', line: 12, reason: /at least one port/ },
    );
  });

  test('duplicate services and (VIP, port, protocol) across services', () => {
    const err = expectInvalid(
      `services:
  - { name: a, vips: [10.0.0.1, "fd00::1"], ports: [{ port: 80 }, { port: 53, protocol: UDP }] }
  - { name: a, namespace: default, vips: [10.0.0.9], ports: [{ port: 80 }] }
  - { name: a, namespace: other, vips: [10.0.0.2], ports: [{ port: 80 }] }
  - { name: b, vips: [10.0.0.3, "FD00:0::1"], ports: [{ port: 53, protocol: TCP }, { port: 53, protocol: UDP }, { port: 80 }] }
`,
      { path: 'services[1].name', line: 3, reason: /duplicate service default\/a: already declared at services\[0\] at line 2/ },
      { path: 'services[3].vips[1]', line: 5, col: 33, reason: /fd00::1 port 53\/UDP, 80\/TCP is already used by service default\/a \(services\[0\]/ },
    );
    // The same (VIP, port) with a different protocol is fine, as is a same-named service in another namespace.
    assert.equal(err.errors.length, 2, err.message);
  });

  test('endpoints: unknown service, unknown servicePort, address family, weight, duplicates', () => {
    expectInvalid(
      `${SVC}  - { name: v6, vips: ["fd00::10"], ports: [{ port: 80 }] }
endpoints:
  - { service: echo, address: 198.18.1.1 }
  - { service: default/ecoh, address: 198.18.1.1 }
  - { service: default/echo, address: 198.18.1.1, servicePort: http }
  - { service: default/echo, address: 198.18.1.1, servicePort: 8080 }
  - { service: default/echo, address: 198.18.1.1, servicePort: "80" }
  - { service: default/v6, address: 198.18.1.1 }
  - { service: default/echo, address: 198.18.1.2, weight: 0 }
  - { service: default/echo, address: 198.18.1.2, weight: 1000001 }
  - { service: default/echo, address: 198.18.1.3, port: 70000 }
`,
      { path: 'endpoints[0].service', line: 9, reason: /namespace\/name \(e\.g\. "default\/echo"\)/ },
      { path: 'endpoints[1].service', line: 10, reason: /unknown service "default\/ecoh".*did you mean "default\/echo"/ },
      { path: 'endpoints[2].servicePort', line: 11, reason: /has no port named "http"; its ports are: tcp 80\/TCP, dns 53\/UDP/ },
      { path: 'endpoints[3].servicePort', line: 12, reason: /has no port 8080/ },
      { path: 'endpoints[4].servicePort', line: 13, reason: /without quotes/ },
      { path: 'endpoints[5].address', line: 14, reason: /is IPv4 but service default\/v6 only has IPv6 VIPs/ },
      { path: 'endpoints[6].weight', line: 15, reason: /weight 0 is not allowed.*use healthy: false to drain/ },
      { path: 'endpoints[7].weight', line: 16, reason: /1000001 is out of range \(1\.\.1000000\)/ },
      { path: 'endpoints[8].port', line: 17, reason: /out of range/ },
    );
    expectInvalid(
      `${SVC}endpoints:
  - { service: default/echo, address: 198.18.1.1, servicePort: tcp }
  - { service: default/echo, address: 198.18.1.1, servicePort: tcp }
  - { service: default/echo, address: 198.18.1.1, servicePort: 80, port: 8080 }
  - { service: default/echo, address: 198.18.1.2 }
  - { service: default/echo, address: 198.18.1.2, servicePort: dns }
`,
      { path: 'endpoints[1]', line: 9, col: 5, reason: /duplicate endpoint.*already declared by endpoints\[0\] at line 8/ },
      // Same backend spelled differently (port number vs name, explicit vs default targetPort).
      { path: 'endpoints[2]', line: 10, reason: /duplicate endpoint.*endpoints\[0\]/ },
      // An all-ports endpoint already covers dns.
      { path: 'endpoints[4]', line: 12, reason: /duplicate endpoint: default\/echo dns 53\/UDP -> 198\.18\.1\.2 port 53.*endpoints\[3\]/ },
    );
  });

  test('workloads: duplicates and IPs claimed twice', () => {
    expectInvalid(
      `workloads:
  - { name: a, ips: [10.1.0.1, "fd00::1"] }
  - { name: a, namespace: default, ips: [10.1.0.9] }
  - { name: b, ips: [10.1.0.2, 10.1.0.2] }
  - { name: c, ips: ["FD00::0:1"] }
  - { name: d, ips: [] }
`,
      { path: 'workloads[1].name', line: 3, reason: /duplicate workload default\/a/ },
      { path: 'workloads[2].ips[1]', line: 4, reason: /duplicate IP 10\.1\.0\.2/ },
      { path: 'workloads[3].ips[0]', line: 5, reason: /IP fd00::1 is already claimed by workload default\/a \(workloads\[0\]\.ips\[1\] at line 2\)/ },
      { path: 'workloads[4].ips', line: 6, reason: /at least one IP/ },
    );
  });

  test('all errors are collected into one ConfigError, sorted by position, formatted FILE:LINE:COL: PATH: REASON', () => {
    const f = path.join(FIX, 'invalid-many.yaml');
    let err: ConfigError | undefined;
    try {
      loadConfigFile(f);
    } catch (e) {
      err = e as ConfigError;
    }
    assert.ok(err instanceof ConfigError);
    assert.equal(err.code, 'SM_CONFIG_INVALID');
    assert.equal(err.name, 'ConfigError');
    const want: Expect[] = [
      { path: 'services[0].vips', line: 3, col: 5, reason: /vips is required/ },
      { path: 'services[0].vip', line: 4, col: 5, reason: /unknown key "vip"/ },
      { path: 'services[1].ports[0].port', line: 10, reason: /70000 is out of range/ },
      { path: 'services[1].ports[0].protocol', line: 10, reason: /SCTP/ },
      { path: 'endpoints[0].weight', line: 14, col: 13, reason: /use healthy: false/ },
      { path: 'workloads[1].ips[0]', line: 17, reason: /already claimed/ },
    ];
    assert.equal(err.errors.length, want.length, err.message);
    want.forEach((w, i) => {
      assert.equal(err.errors[i].path, w.path);
      findIssue(err, w);
    });
    const lines = err.message.split('\n');
    assert.equal(lines.length, want.length);
    lines.forEach((l, i) => {
      const e = err.errors[i];
      assert.equal(l, `${f}:${e.line}:${e.col}: ${e.path}: ${e.reason}`);
    });
  });

  test('an unreadable file is a ConfigError without position', () => {
    const missing = path.join(tmpDir(), 'nope.yaml');
    assert.throws(
      () => loadConfigFile(missing),
      (e: unknown) =>
        e instanceof ConfigError &&
        e.errors.length === 1 &&
        e.errors[0].path === '(file)' &&
        e.errors[0].line === undefined &&
        /ENOENT/.test(e.message) &&
        e.message.startsWith(`${missing}: (file): `),
    );
  });
});

// ---- watcher ------------------------------------------------------------------------------------

const V1 = `services:\n  - { name: echo, vips: [198.19.0.10], ports: [{ port: 80 }] }\n`;
const V2 = `${V1}endpoints:\n  - { service: default/echo, address: 198.18.1.11 }\n`;
const V3 = `${V1}endpoints:\n  - { service: default/echo, address: 198.18.1.12 }\n`;
const BAD = `services:\n  - { name: echo, vips: [198.19.0.10], ports: [{ port: 0 }] }\n`;

function next<K extends 'update' | 'invalid'>(src: ConfigFileSource, ev: K, ms = 3000): Promise<unknown[]> {
  return once(src, ev, { signal: AbortSignal.timeout(ms) });
}

function withSource(file: string, opts: { fsWatch?: boolean } = {}): ConfigFileSource {
  return new ConfigFileSource(file, { debounceMs: 20, pollIntervalMs: 50, ...opts });
}

describe('config: ConfigFileSource', () => {
  test('start() throws ConfigError on an invalid initial file and leaves nothing running', () => {
    const src = withSource(writeTmp(BAD));
    assert.throws(() => src.start(), ConfigError);
    assert.equal(src.current(), undefined);
    src.stop();
  });

  test('emits update on change, invalid (keeping the last good model) on a bad edit, then recovers', async () => {
    const file = writeTmp(V1);
    const src = withSource(file);
    const first = src.start();
    try {
      assert.equal(first.model.endpoints.length, 0);
      assert.deepStrictEqual(src.current(), first);

      let p = next(src, 'update');
      fs.writeFileSync(file, V2);
      const [u1] = (await p) as [LoadedConfig];
      assert.equal(u1.model.endpoints[0].address, '198.18.1.11');
      assert.deepStrictEqual(src.current(), u1);

      const pi = next(src, 'invalid');
      fs.writeFileSync(file, BAD);
      const [err] = (await pi) as [ConfigError];
      assert.ok(err instanceof ConfigError);
      assert.equal(err.errors[0].path, 'services[0].ports[0].port');
      assert.deepStrictEqual(src.current(), u1, 'last good model stays current');

      p = next(src, 'update');
      fs.writeFileSync(file, V3);
      const [u2] = (await p) as [LoadedConfig];
      assert.equal(u2.model.endpoints[0].address, '198.18.1.12');
      assert.deepStrictEqual(src.current(), u2);
    } finally {
      src.stop();
    }
  });

  test('handles atomic rename replacement (editor / config-management style), repeatedly', async () => {
    const file = writeTmp(V1);
    const src = withSource(file);
    src.start();
    try {
      for (const [text, addr] of [
        [V2, '198.18.1.11'],
        [V3, '198.18.1.12'],
      ] as const) {
        const p = next(src, 'update');
        const tmp = path.join(path.dirname(file), `.mesh.yaml.${addr}.tmp`);
        fs.writeFileSync(tmp, text);
        fs.renameSync(tmp, file);
        const [u] = (await p) as [LoadedConfig];
        assert.equal(u.model.endpoints[0].address, addr);
      }
    } finally {
      src.stop();
    }
  });

  test('a change that does not alter the model (comments, formatting) emits no update', async () => {
    const file = writeTmp(V2);
    const src = withSource(file);
    src.start();
    const updates: LoadedConfig[] = [];
    src.on('update', (u) => updates.push(u));
    try {
      fs.writeFileSync(file, `# just a comment\n${V2.replace('198.18.1.11', '"198.18.1.11"')}`);
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(updates.length, 0);
      const p = next(src, 'update');
      fs.writeFileSync(file, V3);
      await p;
      assert.equal(updates.length, 1);
      assert.equal(updates[0].model.endpoints[0].address, '198.18.1.12');
    } finally {
      src.stop();
    }
  });

  test('polling alone detects changes (fsWatch: false); deleting the file is reported as invalid', async () => {
    const file = writeTmp(V1);
    const src = withSource(file, { fsWatch: false });
    src.start();
    try {
      const p = next(src, 'update');
      fs.writeFileSync(file, V2);
      const [u] = (await p) as [LoadedConfig];
      assert.equal(u.model.endpoints.length, 1);

      const pi = next(src, 'invalid');
      fs.rmSync(file);
      const [err] = (await pi) as [ConfigError];
      assert.equal(err.errors[0].path, '(file)');
      assert.deepStrictEqual(src.current(), u);
    } finally {
      src.stop();
    }
  });

  test('stop() silences further events', async () => {
    const file = writeTmp(V1);
    const src = withSource(file);
    src.start();
    src.stop();
    let n = 0;
    src.on('update', () => n++);
    src.on('invalid', () => n++);
    fs.writeFileSync(file, V2);
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(n, 0);
  });
});
