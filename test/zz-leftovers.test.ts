// Runs last (files run in name order): the suite must leave nothing behind on the machine.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { findCgroup2Mount } from '../abi/pins';
import { kernelSkip } from './kernel';

const PREFIXES = ['smsbx', 'smdemo', 'smbench', 'smnative'];
const ours = (name: string) => PREFIXES.some((p) => name.startsWith(p));

test('[kernel] the suite left no namespaces, cgroups, pins or root-cgroup programs behind', kernelSkip(), () => {
  const netns = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n')
    .map((l) => l.split(' ')[0])
    .filter((n) => n && ours(n));
  assert.deepEqual(netns, [], 'network namespaces left behind');
  const cg2 = findCgroup2Mount();
  assert.deepEqual(fs.readdirSync(cg2).filter(ours), [], 'cgroups left behind');
  const pins = fs.existsSync('/sys/fs/bpf') ? fs.readdirSync('/sys/fs/bpf').filter(ours) : [];
  assert.deepEqual(pins, [], 'bpffs pins left behind');
  const rootProgs = execFileSync('bpftool', ['-j', 'cgroup', 'show', cg2], { encoding: 'utf8' }).trim();
  assert.ok(rootProgs === '' || rootProgs === '[]', `programs attached to the root cgroup: ${rootProgs}`);
});
