// Pod → cgroup v2 directory, as the kubelet names it, for both cgroup drivers and all QoS
// classes; `auto` against a directory tree laid out like a node's /sys/fs/cgroup.
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { detectCgroupDriver, podCgroupPath, podQosClass, type Pod } from '../mesh-agent/sources/kubernetes';

const UID = '5d1f2c3a-8e4b-4f6a-9c7d-0123456789ab';
const U_ = '5d1f2c3a_8e4b_4f6a_9c7d_0123456789ab';

const pod = (qosClass?: string, extra: Partial<Pod> = {}): Pod => ({ metadata: { name: 'p', namespace: 'n', uid: UID }, status: { phase: 'Running', ...(qosClass ? { qosClass } : {}) }, ...extra });
const withResources = (...cs: Array<{ requests?: Record<string, string>; limits?: Record<string, string> }>): Pod => ({
  metadata: { name: 'p', namespace: 'n', uid: UID },
  spec: { containers: cs.map((r, i) => ({ name: `c${i}`, resources: r })) },
});

describe('podCgroupPath', () => {
  test('systemd driver: QoS slices, uid dashes become underscores, Guaranteed directly under kubepods.slice', () => {
    const o = { cgroupRoot: '/sys/fs/cgroup', driver: 'systemd' as const };
    assert.equal(podCgroupPath(pod('Burstable'), o), `/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${U_}.slice`);
    assert.equal(podCgroupPath(pod('BestEffort'), o), `/sys/fs/cgroup/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${U_}.slice`);
    assert.equal(podCgroupPath(pod('Guaranteed'), o), `/sys/fs/cgroup/kubepods.slice/kubepods-pod${U_}.slice`);
  });

  test('cgroupfs driver: kubepods/<qos>/pod<uid>, Guaranteed as kubepods/pod<uid>', () => {
    const o = { cgroupRoot: '/sys/fs/cgroup', driver: 'cgroupfs' as const };
    assert.equal(podCgroupPath(pod('Burstable'), o), `/sys/fs/cgroup/kubepods/burstable/pod${UID}`);
    assert.equal(podCgroupPath(pod('BestEffort'), o), `/sys/fs/cgroup/kubepods/besteffort/pod${UID}`);
    assert.equal(podCgroupPath(pod('Guaranteed'), o), `/sys/fs/cgroup/kubepods/pod${UID}`);
  });

  test('a static pod (mirror) is named by the kubelet uid in kubernetes.io/config.mirror', () => {
    const p = pod('BestEffort');
    p.metadata!.annotations = { 'kubernetes.io/config.mirror': '9f2c7b0e4d1a3c5e8b6f0a2d4c6e8f01' };
    assert.equal(podCgroupPath(p, { driver: 'cgroupfs' }), '/sys/fs/cgroup/kubepods/besteffort/pod9f2c7b0e4d1a3c5e8b6f0a2d4c6e8f01');
  });

  test('a pod without uid has no path', () => {
    assert.equal(podCgroupPath({ metadata: { name: 'x' } }, { driver: 'auto' }), undefined);
  });

  describe('auto: whichever exists under cgroupRoot', () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'sockmesh-cgroup-test-'));
    after(() => fs.rmSync(root, { recursive: true, force: true }));

    test('systemd layout', () => {
      const r = path.join(root, 'systemd');
      const dir = path.join(r, `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${U_}.slice`);
      fs.mkdirSync(dir, { recursive: true });
      assert.equal(podCgroupPath(pod('Burstable'), { cgroupRoot: r, driver: 'auto' }), dir);
      assert.equal(podCgroupPath(pod('Burstable'), { cgroupRoot: r }), dir, 'auto is the default');
      assert.equal(podCgroupPath(pod('BestEffort'), { cgroupRoot: r }), undefined, 'another QoS class: not there');
      assert.equal(detectCgroupDriver(r), 'systemd');
    });

    test('cgroupfs layout', () => {
      const r = path.join(root, 'cgroupfs');
      const dir = path.join(r, `kubepods/pod${UID}`);
      fs.mkdirSync(dir, { recursive: true });
      assert.equal(podCgroupPath(pod('Guaranteed'), { cgroupRoot: r, driver: 'auto' }), dir);
      assert.equal(podCgroupPath(pod('Burstable'), { cgroupRoot: r, driver: 'auto' }), undefined);
      assert.equal(detectCgroupDriver(r), 'cgroupfs');
    });

    test('neither', () => {
      const r = path.join(root, 'empty');
      fs.mkdirSync(r);
      assert.equal(podCgroupPath(pod('Burstable'), { cgroupRoot: r, driver: 'auto' }), undefined);
      assert.equal(detectCgroupDriver(r), undefined);
    });
  });
});

describe('podQosClass', () => {
  test('status.qosClass is taken as is', () => {
    assert.equal(podQosClass(pod('Guaranteed')), 'Guaranteed');
  });

  test('computed as the kubelet does when status.qosClass is absent', () => {
    assert.equal(podQosClass(withResources({})), 'BestEffort');
    assert.equal(podQosClass(withResources({ requests: { 'ephemeral-storage': '1Gi' } })), 'BestEffort', 'only cpu and memory count');
    assert.equal(podQosClass(withResources({ limits: { cpu: '1', memory: '1Gi' } })), 'Guaranteed', 'requests default to limits');
    assert.equal(podQosClass(withResources({ requests: { cpu: '500m', memory: '1073741824' }, limits: { cpu: '0.5', memory: '1Gi' } })), 'Guaranteed', 'equal quantities in other units');
    assert.equal(podQosClass(withResources({ requests: { cpu: '250m', memory: '1Gi' }, limits: { cpu: '500m', memory: '1Gi' } })), 'Burstable');
    assert.equal(podQosClass(withResources({ requests: { cpu: '100m' } })), 'Burstable');
    assert.equal(podQosClass(withResources({ limits: { cpu: '1', memory: '1Gi' } }, {})), 'Burstable', 'one container without limits');
    assert.equal(podQosClass(withResources({ limits: { cpu: '1' } })), 'Burstable', 'memory not limited');
    assert.equal(podQosClass(withResources({ limits: { cpu: '1', memory: '1e9' }, requests: { memory: '1G' } })), 'Guaranteed');
  });
});
