import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AF_INET, AF_INET6, bytesToIp, canonicalIp, familyOf, ipToBytes, mustCanonicalIp } from '../core/ip';

test('addresses round-trip through the kernel byte layout', () => {
  assert.deepEqual([...ipToBytes('198.19.0.10')], [198, 19, 0, 10, ...new Array(12).fill(0)]);
  assert.equal(bytesToIp(ipToBytes('198.19.0.10'), AF_INET), '198.19.0.10');
  for (const [text, canon] of [
    ['fd53:6f63:6b99::10', 'fd53:6f63:6b99::10'],
    ['FD53:6F63:6B99:0:0:0:0:10', 'fd53:6f63:6b99::10'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
    ['::1', '::1'],
    ['1::', '1::'],
  ]) {
    assert.equal(bytesToIp(ipToBytes(text), AF_INET6), canon, text);
  }
  // IPv4-mapped IPv6 takes the IPv4 layout, as the kernel programs normalise it.
  assert.deepEqual([...ipToBytes('::ffff:1.2.3.4')], [1, 2, 3, 4, ...new Array(12).fill(0)]);
  assert.equal(familyOf('::ffff:1.2.3.4'), AF_INET);
  assert.equal(ipToBytes('2001:db8::1').readUInt16BE(0), 0x2001);
  assert.equal(ipToBytes('2001:db8::1').readUInt16BE(14), 1);
});

test('mustCanonicalIp agrees with the config canonical form and refuses junk', () => {
  assert.equal(mustCanonicalIp('FD53::0:10'), 'fd53::10');
  assert.throws(() => mustCanonicalIp('300.1.1.1'));
});

test('zones and brackets: only around IPv6, a zone must name something, and the kernel layout drops it', () => {
  assert.equal(canonicalIp('fe80::1%eth0', { zone: true }), 'fe80::1');
  assert.equal(canonicalIp('fe80::1%eth0'), undefined, 'zones only when asked for');
  assert.equal(canonicalIp('fe80::1%', { zone: true }), undefined);
  assert.equal(canonicalIp('10.0.0.1%eth0', { zone: true }), undefined);
  assert.equal(canonicalIp('[fd00::1]', { brackets: true }), 'fd00::1');
  assert.equal(canonicalIp('[10.0.0.1]', { brackets: true }), undefined);
  assert.equal(familyOf('fe80::1%eth0'), AF_INET6);
  assert.deepEqual(ipToBytes('fe80::1%eth0'), ipToBytes('fe80::1'));
  // 16 bytes holding a mapped address read back as the IPv4 address.
  const mapped = Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 2, 3]);
  assert.equal(bytesToIp(mapped, AF_INET6), '10.1.2.3');
});
