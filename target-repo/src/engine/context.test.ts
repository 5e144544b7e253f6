import { describe, expect, it } from 'vitest';
import { clearColor, SKY_COLOR, toHex } from './clear';
import { CONTEXT_ATTRIBUTES, createContext, WEBGL2_MISSING_MESSAGE, type ContextSource } from './context';

describe('createContext', () => {
  it('reports the WebGL2 message when the canvas has no webgl2 context', () => {
    const canvas: ContextSource = { getContext: () => null };
    const result = createContext(canvas);
    expect(result.ok).toBe(false);
    if (!result.ok) {
      expect(result.message).toBe(WEBGL2_MISSING_MESSAGE);
      expect(result.message).toMatch(/WebGL2/);
    }
  });

  it('reports the message when getContext throws', () => {
    const canvas: ContextSource = {
      getContext: () => {
        throw new Error('context creation blocked');
      },
    };
    expect(createContext(canvas)).toEqual({ ok: false, message: WEBGL2_MISSING_MESSAGE });
  });

  it('returns the context and asks for webgl2 with the opaque, depth-buffered attributes', () => {
    const fakeGl = {} as WebGL2RenderingContext;
    const calls: Array<[string, WebGLContextAttributes | undefined]> = [];
    const canvas: ContextSource = {
      getContext: (id, options) => {
        calls.push([id, options]);
        return fakeGl;
      },
    };
    const result = createContext(canvas);
    expect(result).toEqual({ ok: true, gl: fakeGl });
    expect(calls).toEqual([['webgl2', CONTEXT_ATTRIBUTES]]);
    expect(CONTEXT_ATTRIBUTES.depth).toBe(true);
    expect(CONTEXT_ATTRIBUTES.alpha).toBe(false);
  });
});

describe('clear colour', () => {
  it('is the opaque day sky', () => {
    expect(clearColor()).toBe(SKY_COLOR);
    expect(SKY_COLOR[3]).toBe(1);
    expect(toHex(SKY_COLOR)).toBe('#87ceeb');
  });

  it('converts to hex with clamping and rounding', () => {
    expect(toHex([0, 0, 0, 1])).toBe('#000000');
    expect(toHex([1, 1, 1, 0])).toBe('#ffffff');
    expect(toHex([2, -1, 0.5, 1])).toBe('#ff0080');
  });
});
