import { describe, expect, it } from 'vitest';
import { AREAS, areaOf, GROUND_SHARE, layoutBlocks, sourceModules } from './world-view';

describe('the world view', () => {
  it('puts a module in the column of its first folder, or other', () => {
    expect(areaOf('./world/chunk.ts')).toBe('world');
    expect(areaOf('./world/storage/indexeddb-store.ts')).toBe('world');
    expect(areaOf('./sim-shared.ts')).toBe('other');
    expect(areaOf('./elsewhere/x.ts')).toBe('other');
  });

  it('gives every module one block on the ground, the same for the same paths', () => {
    const paths = ['./world/a.ts', './world/b.ts', './ui/hud.ts', './engine/clear.ts'];
    const blocks = layoutBlocks(paths, 1100, 600);
    expect(blocks.map((b) => b.path).sort()).toEqual([...paths].sort());
    expect(Math.min(...blocks.map((b) => b.y))).toBe(Math.floor(600 * GROUND_SHARE));
    expect(layoutBlocks([...paths].reverse(), 1100, 600)).toEqual(blocks);
  });

  it('grows as modules are added, without moving the blocks of other areas', () => {
    const early = layoutBlocks(['./world/a.ts', './ui/hud.ts'], 1100, 600);
    const late = layoutBlocks(['./world/a.ts', './ui/hud.ts', './world/b.ts', './audio/mixer.ts'], 1100, 600);
    expect(late.length).toBe(early.length + 2);
    const hud = (blocks: typeof early) => blocks.find((b) => b.path === './ui/hud.ts');
    expect(hud(late)).toEqual(hud(early));
    expect(new Set(late.map((b) => `${b.x},${b.y}`)).size).toBe(late.length);
  });

  it('has a colour for each area', () => {
    expect(new Set(AREAS.map(([, c]) => c.join())).size).toBe(AREAS.length);
  });

  it('finds the stub engine in the build', () => {
    expect(sourceModules()).toContain('./engine/clear.ts');
    expect(sourceModules()).not.toContain('./engine/context.test.ts');
  });
});
