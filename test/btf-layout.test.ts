// The TypeScript codecs must describe exactly the structs the compiled programs use. This reads the
// BTF of each built object (bpftool's JSON dump) and compares struct sizes and every member's
// offset and size with abi/codecs.ts; the counter enum is compared with the one
// definition in bpf/include/sockmesh_types.h.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ALL_CODECS, COUNTER_ENUMERATORS, COUNTER_NAMES } from '../abi/codecs';
import { defaultObjDir } from '../mesh-agent/datapath/datapath';
import { OBJECTS } from '../abi/pins';

interface BtfType {
  id: number;
  kind: string;
  name: string;
  size?: number;
  type_id?: number;
  nr_elems?: number;
  members?: Array<{ name: string; type_id: number; bits_offset: number }>;
}

function loadBtf(obj: string): Map<number, BtfType> {
  const out = execFileSync('bpftool', ['-j', 'btf', 'dump', 'file', obj], { encoding: 'utf8' });
  const types = (JSON.parse(out) as { types: BtfType[] }).types;
  return new Map(types.map((t) => [t.id, t]));
}

function sizeOf(btf: Map<number, BtfType>, id: number): number {
  const t = btf.get(id);
  assert.ok(t, `BTF type ${id} missing`);
  switch (t.kind) {
    case 'INT':
    case 'STRUCT':
    case 'UNION':
    case 'ENUM':
      return t.size!;
    case 'TYPEDEF':
    case 'CONST':
    case 'VOLATILE':
      return sizeOf(btf, t.type_id!);
    case 'ARRAY': {
      const arr = t as unknown as { type_id: number; nr_elems: number };
      return sizeOf(btf, arr.type_id) * arr.nr_elems;
    }
    default:
      throw new Error(`unexpected BTF kind ${t.kind}`);
  }
}

for (const objName of OBJECTS) {
  test(`codecs match the BTF of ${objName}`, () => {
    const obj = path.join(defaultObjDir(), objName);
    assert.ok(fs.existsSync(obj), `${obj} not built`);
    const btf = loadBtf(obj);
    const structs = new Map([...btf.values()].filter((t) => t.kind === 'STRUCT').map((t) => [t.name, t]));
    let checked = 0;
    for (const codec of ALL_CODECS) {
      const s = structs.get(codec.cName);
      if (!s) continue; // not every object uses every struct
      checked++;
      assert.equal(s.size, codec.size, `struct ${codec.cName}: BTF size ${s.size}, codec ${codec.size}`);
      const members = s.members ?? [];
      assert.deepEqual(
        members.map((m) => m.name),
        codec.fields.map((f) => f.name),
        `struct ${codec.cName}: member names/order`,
      );
      for (const m of members) {
        const f = codec.fields.find((x) => x.name === m.name)!;
        assert.equal(m.bits_offset % 8, 0, `${codec.cName}.${m.name} is a bitfield`);
        assert.equal(m.bits_offset / 8, f.offset, `${codec.cName}.${m.name}: BTF offset ${m.bits_offset / 8}, codec ${f.offset}`);
        assert.equal(sizeOf(btf, m.type_id), f.size, `${codec.cName}.${m.name}: size`);
      }
    }
    // Each object uses the map structs it includes; a rename on the C side must not pass silently.
    assert.ok(checked >= 8, `only ${checked} codec structs found in ${objName}'s BTF`);
  });
}

test('counter names follow enum sm_counter in order', () => {
  const header = fs.readFileSync(path.resolve(__dirname, '../../bpf/include/sockmesh_types.h'), 'utf8');
  const body = /enum sm_counter \{([\s\S]*?)\};/.exec(header)?.[1];
  assert.ok(body, 'enum sm_counter not found');
  const enumerators = [...body.matchAll(/^\s*(SM_CNT_[A-Z0-9_]+)/gm)].map((m) => m[1]).filter((n) => n !== 'SM_CNT_MAX');
  assert.deepEqual(
    COUNTER_NAMES.map((n) => COUNTER_ENUMERATORS[n]),
    enumerators,
  );
});
