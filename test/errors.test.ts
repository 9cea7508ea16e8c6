// The one error hierarchy (core/errors.ts): every part's failures, reached through the part's own
// entry points, are SockmeshErrors of their family with the codes operators already grep for.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import {
  DatapathError,
  isSockmeshError,
  KubernetesSourceError,
  ProxyError,
  SockmeshError,
  UsageError,
  XdsError,
} from '../core/errors';
import { ConfigError, parseConfigText } from '../config';
import { checkAttachCgroup } from '../mesh-agent/datapath/datapath';
import { parseAdminAddress } from '../mesh-agent/admin';
import { parseEnrollment } from '../mesh-agent/sources/kubernetes/enrollment';
import { compileRbacFilters, HTTP_RBAC_FILTER } from '../proxy/rbac/engine';
import { RbacConfigError } from '../proxy/rbac/errors';
import { RbacFileError, loadRbacFilterFile } from '../proxy/rbac/cli';
import { parsePolicyKey } from '../proxy/server/policies';
import { decodeToJson } from '../xds/proto';
import { TYPE } from '../xds/types';
import { BpfError, objGet } from '../native';

/** What `fn` throws (it must throw). */
function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (e) {
    return e;
  }
  assert.fail('expected a throw');
}

function check(e: unknown, family: abstract new (...a: never[]) => SockmeshError<string>, code: string | RegExp, name: string): void {
  assert.ok(e instanceof SockmeshError, `${String(e)} is not a SockmeshError`);
  assert.ok(isSockmeshError(e));
  assert.ok(e instanceof family, `${e.name} is not a ${family.name}`);
  assert.ok(e instanceof Error);
  if (typeof code === 'string') assert.equal(e.code, code);
  else assert.match(e.code, code);
  assert.equal(e.name, name);
  assert.ok(e.message.length > 0);
  assert.ok(e.stack?.includes(name), 'the stack names the class');
}

test('each part throws its own family of SockmeshError, with the codes users already see', () => {
  check(thrown(() => parseConfigText('services: 3\n', 'x.yaml')), ConfigError, 'SM_CONFIG_INVALID', 'ConfigError');
  check(thrown(() => decodeToJson(TYPE.CLUSTER, Uint8Array.from([0x0a, 0xff]))), XdsError, 'SM_XDS_DECODE', 'XdsError');
  check(thrown(() => parsePolicyKey('nonsense')), ProxyError, 'SM_PROXY_POLICY_KEY', 'ProxyError');
  check(thrown(() => parseEnrollment({ namespaceLabel: '=' })), KubernetesSourceError, 'SM_K8S_OPTIONS', 'KubernetesSourceError');
  check(thrown(() => parseAdminAddress('10.0.0.1:9')), UsageError, 'SM_USAGE', 'UsageError');
  check(thrown(() => checkAttachCgroup('/proc')), DatapathError, 'SM_NOT_CGROUP2', 'DatapathError');
  const rbac = thrown(() =>
    compileRbacFilters([{ name: HTTP_RBAC_FILTER, config: { rules: { action: 'ALLOW', policies: { p: { permissions: [{ nonsense: true }], principals: [{ any: true }] } } } } }]),
  );
  check(rbac, RbacConfigError, 'SM_RBAC_INVALID', 'RbacConfigError');
  assert.ok((rbac as RbacConfigError).issues.length >= 1, 'the structured issues stay');
  const file = thrown(() => loadRbacFilterFile('/nonexistent/rbac.yaml'));
  check(file, UsageError, 'SM_USAGE', 'RbacFileError');
  assert.ok(file instanceof RbacFileError);
  // libbpf failures keep the errno name as their code.
  check(thrown(() => objGet('/sys/fs/bpf/sockmesh-no-such-pin')), BpfError, 'ENOENT', 'BpfError');
});

test('families are told apart by instanceof, and a cause is kept', () => {
  const cause = new Error('underneath');
  const e = new DatapathError('SM_MAP_FULL', 'no room', { cause, details: { map: 'sm_services' } });
  assert.equal(e.cause, cause);
  assert.deepEqual(e.details, { map: 'sm_services' });
  assert.ok(!(e instanceof XdsError) && !(e instanceof ProxyError) && !(e instanceof ConfigError));
  const x = new XdsError('SM_XDS_JSON', 'bad', { path: 'a.b' });
  assert.equal(x.path, 'a.b');
  assert.ok(!(x instanceof DatapathError));
  assert.ok(!isSockmeshError(new Error('plain')));
});
