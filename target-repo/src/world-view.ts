import type { Rgba } from './engine/clear';

// The world view: every source module of the game shows itself as a block in its area's column,
// standing on the ground, so the page visibly fills in as features land on main. Which modules
// exist is read from the build (import.meta.glob without loading them: nothing of theirs runs).

/** One block of the world view, in canvas pixels with the origin at the bottom left (as gl.scissor takes it). */
export interface Block {
  readonly path: string;
  readonly x: number;
  readonly y: number;
  readonly size: number;
  readonly color: Rgba;
}

/** The areas of the game, in column order, each with its block colour; a module elsewhere is `other`. */
export const AREAS: ReadonlyArray<readonly [area: string, color: Rgba]> = [
  ['engine', [0.55, 0.57, 0.6, 1]],
  ['world', [0.3, 0.69, 0.31, 1]],
  ['blocks', [0.6, 0.4, 0.22, 1]],
  ['lighting', [1, 0.84, 0.25, 1]],
  ['physics', [1, 0.6, 0.2, 1]],
  ['player', [0.25, 0.45, 0.9, 1]],
  ['input', [0.6, 0.35, 0.8, 1]],
  ['ui', [0.95, 0.95, 0.95, 1]],
  ['audio', [0.95, 0.45, 0.7, 1]],
  ['performance', [0.85, 0.2, 0.2, 1]],
  ['other', [0.2, 0.75, 0.75, 1]],
];

/** The ground's colour and the share of the canvas's height it takes at the bottom. */
export const GROUND: Rgba = [0.36, 0.25, 0.16, 1];
export const GROUND_SHARE = 0.12;
const PER_ROW = 3;
const ROWS = 16;

/** The area of a module path such as './world/chunk.ts' (its first folder), or 'other'. */
export function areaOf(path: string): string {
  const parts = path.replace(/^\.\//, '').split('/');
  const area = parts.length > 1 ? parts[0] : 'other';
  return AREAS.some(([name]) => name === area) ? area : 'other';
}

/** The blocks for these module paths on a canvas of width x height: each area's modules in path order. */
export function layoutBlocks(paths: readonly string[], width: number, height: number): Block[] {
  const column = width / AREAS.length;
  const ground = Math.floor(height * GROUND_SHARE);
  const size = Math.max(1, Math.floor(Math.min(column / PER_ROW, (height - ground) / ROWS)));
  const blocks: Block[] = [];
  AREAS.forEach(([area, color], index) => {
    const mine = paths.filter((p) => areaOf(p) === area).sort();
    mine.forEach((path, i) => {
      const x = Math.floor(index * column + (column - PER_ROW * size) / 2 + (i % PER_ROW) * size);
      const y = ground + Math.floor(i / PER_ROW) * size;
      if (y + size <= height) blocks.push({ path, x, y, size, color });
    });
  });
  return blocks;
}

/** The game's source modules in this build (tests and declarations left out), e.g. './world/chunk.ts'. */
export function sourceModules(): string[] {
  const found = import.meta.glob(['./**/*.ts', '!./**/*.test.ts', '!./**/*.d.ts', '!./index.ts', '!./world-view.ts']);
  return Object.keys(found).sort();
}
