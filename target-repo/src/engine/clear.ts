/** An RGBA colour with each channel in [0, 1], the form `gl.clearColor` takes. */
export type Rgba = readonly [r: number, g: number, b: number, a: number];

/** The daytime sky colour (#87ceeb): the colour the renderer clears every frame to. */
export const SKY_COLOR: Rgba = [135 / 255, 206 / 255, 235 / 255, 1];

/** Returns the colour to clear to; today always the day sky, later driven by the time of day. */
export function clearColor(): Rgba {
  return SKY_COLOR;
}

/** Converts a [0, 1] RGBA colour to the `#rrggbb` hex string (alpha ignored, channels clamped). */
export function toHex(color: Rgba): string {
  const channel = (v: number): string =>
    Math.round(Math.min(1, Math.max(0, v)) * 255)
      .toString(16)
      .padStart(2, '0');
  return `#${channel(color[0])}${channel(color[1])}${channel(color[2])}`;
}
