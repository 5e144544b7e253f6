/** Shown to the player when the browser cannot give a WebGL2 context. */
export const WEBGL2_MISSING_MESSAGE =
  'VoxelCraft needs WebGL2, which this browser or device does not provide. ' +
  'Try a current Chrome, Firefox, Edge or Safari, and make sure hardware acceleration is enabled.';

/** The part of a canvas this module needs: lets tests pass a fake without a DOM. */
export interface ContextSource {
  getContext(contextId: 'webgl2', options?: WebGLContextAttributes): WebGL2RenderingContext | null;
}

/** The outcome of asking for a context: the context, or the message to show instead. */
export type ContextResult =
  | { readonly ok: true; readonly gl: WebGL2RenderingContext }
  | { readonly ok: false; readonly message: string };

/** Context attributes: no MSAA or alpha (the world is opaque), depth for the voxel pass. */
export const CONTEXT_ATTRIBUTES: WebGLContextAttributes = {
  alpha: false,
  antialias: false,
  depth: true,
  stencil: false,
  powerPreference: 'high-performance',
  preserveDrawingBuffer: false,
};

/** Asks the canvas for a WebGL2 context; never throws, reports a missing context as a message. */
export function createContext(canvas: ContextSource): ContextResult {
  let gl: WebGL2RenderingContext | null = null;
  try {
    gl = canvas.getContext('webgl2', CONTEXT_ATTRIBUTES);
  } catch {
    gl = null;
  }
  return gl ? { ok: true, gl } : { ok: false, message: WEBGL2_MISSING_MESSAGE };
}
